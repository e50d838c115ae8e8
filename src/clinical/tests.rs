use super::*;
use http::HeaderValue;

// Verified by hand (modulus 11): valid test-range NHS numbers, and two that are not.
const VALID: [&str; 6] = [
    "9990000018",
    "9990000026",
    "9990000034",
    "9990000042",
    "9990000050",
    "9990000034",
];
const BAD_CHECK: &str = "9990000019";
/// Its first nine digits give check value 10: no valid number starts so.
const CHECK_TEN: &str = "9991234560";

fn get(path: &str, query: Option<&str>) -> Facts {
    parse(&Method::GET, path, query, &HeaderMap::new())
}

fn with(method: Method, path: &str) -> Facts {
    parse(&method, path, None, &HeaderMap::new())
}

#[test]
fn nhs_number_check_digit() {
    for n in VALID {
        assert!(nhs_number_valid(n), "{n}");
    }
    for n in [
        BAD_CHECK,
        CHECK_TEN,
        "",
        "999000001",
        "99900000188",
        "999000001a",
        "999 000 0018",
        "٩٩٩٠٠٠٠٠١٨",
    ] {
        assert!(!nhs_number_valid(n), "{n}");
    }
    // Every valid number has exactly one valid check digit.
    for base in ["999000001", "123456789", "000000000", "401023213"] {
        let ok = (0..10).filter(|d| nhs_number_valid(&format!("{base}{d}"))).count();
        assert!(ok <= 1, "{base}");
    }
}

#[test]
fn fhir_read_of_a_patient_by_nhs_number() {
    let f = get("/fhir/Patient/9990000018", None);
    assert_eq!(f.clinical.fhir_type.as_deref(), Some("Patient"));
    assert_eq!(f.clinical.fhir_id.as_deref(), Some("9990000018"));
    assert_eq!(f.clinical.nhs_number.as_deref(), Some("9990000018"));
    assert_eq!(f.fhir_interaction.as_deref(), Some("read"));
    assert_eq!(f.clinical.interaction.as_deref(), Some("read"));
    assert_eq!(f.invalid_nhs_number, None);
}

#[test]
fn bad_check_digit_in_path_is_invalid_not_recorded() {
    let f = get("/fhir/Patient/9990000019", None);
    assert_eq!(f.clinical.nhs_number, None);
    assert_eq!(f.invalid_nhs_number.as_deref(), Some(BAD_CHECK));
    assert_eq!(f.clinical.fhir_id.as_deref(), Some(BAD_CHECK));
    // A non-Patient resource with a 10-digit id is just an id.
    let f = get("/fhir/Observation/9990000019", None);
    assert_eq!(f.invalid_nhs_number, None);
    assert_eq!(f.clinical.nhs_number, None);
    // A logical id that is not 10 digits is no NHS number either way.
    let f = get("/fhir/Patient/abc-123", None);
    assert_eq!((f.clinical.nhs_number, f.invalid_nhs_number), (None, None));
}

#[test]
fn fhir_interactions() {
    let cases: &[(Method, &str, Option<&str>)] = &[
        (Method::GET, "/fhir/Patient/1", Some("read")),
        (Method::HEAD, "/fhir/Patient/1", Some("read")),
        (Method::GET, "/fhir/Patient/1/_history/2", Some("vread")),
        (Method::GET, "/fhir/Patient/1/_history", Some("history-instance")),
        (Method::GET, "/fhir/Patient/_history", Some("history-type")),
        (Method::GET, "/fhir/Observation", Some("search-type")),
        (Method::GET, "/fhir/Observation/", Some("search-type")),
        (Method::POST, "/fhir/Observation/_search", Some("search-type")),
        (Method::GET, "/fhir/Observation/_search", Some("search-type")),
        (Method::POST, "/fhir/Observation", Some("create")),
        (Method::PUT, "/fhir/Observation/o1", Some("update")),
        (Method::PATCH, "/fhir/Observation/o1", Some("patch")),
        (Method::DELETE, "/fhir/Observation/o1", Some("delete")),
        (Method::PUT, "/fhir/Observation", Some("update")),
        (Method::POST, "/fhir/Patient/$match", Some("$match")),
        (Method::GET, "/fhir/Patient/1/$everything", Some("$everything")),
        (Method::GET, "/fhir/Patient/1/%24everything", Some("$everything")),
        (Method::GET, "/fhir/metadata", Some("capabilities")),
        (
            Method::GET,
            "/B82617/STU3/1/gpconnect/fhir/metadata",
            Some("capabilities"),
        ),
        (
            Method::POST,
            "/B82617/STU3/1/gpconnect/fhir/Patient/$gpc.getstructuredrecord",
            Some("$gpc.getstructuredrecord"),
        ),
        // Shapes FHIR does not have: no interaction.
        (Method::POST, "/fhir/Patient/1", None),
        (Method::POST, "/fhir/Patient/1/_history/2", None),
        (Method::GET, "/fhir/Patient/1/Observation/2/x", None),
        (Method::GET, "/fhir/Patient/$", None),
        (Method::GET, "/fhir/Patient/$bad op", None),
        (Method::GET, "/fhir/Patient/1/_history/bad!", None),
        (Method::POST, "/fhir/metadata", None),
        (Method::GET, "/dicomweb/studies/1.2/metadata", None),
        (Method::GET, "/", None),
        (Method::GET, "", None),
    ];
    for (m, path, want) in cases {
        let f = with(m.clone(), path);
        assert_eq!(f.fhir_interaction.as_deref(), *want, "{m} {path}");
    }
}

#[test]
fn fhir_type_skips_version_and_ods_segments() {
    let f = with(
        Method::POST,
        "/B82617/STU3/1/gpconnect/fhir/Patient/$gpc.getstructuredrecord",
    );
    assert_eq!(f.clinical.fhir_type.as_deref(), Some("Patient"));
    assert_eq!(f.clinical.fhir_id, None);
    let f = get("/R4/DocumentReference/abc.1-2", None);
    assert_eq!(f.clinical.fhir_type.as_deref(), Some("DocumentReference"));
    assert_eq!(f.clinical.fhir_id.as_deref(), Some("abc.1-2"));
    for p in ["/fhir/STU3", "/fhir/patient/1", "/fhir/Pa7ient/1", "/B82617"] {
        assert_eq!(get(p, None).clinical.fhir_type, None, "{p}");
    }
}

#[test]
fn identifier_searches() {
    let sys = "https://fhir.nhs.uk/Id/nhs-number";
    let plain = format!("identifier={sys}|9990000026");
    let f = get("/fhir/Patient", Some(&plain));
    assert_eq!(f.clinical.nhs_number.as_deref(), Some("9990000026"));
    assert_eq!(f.fhir_interaction.as_deref(), Some("search-type"));
    for q in [
        "identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9990000026",
        "identifier=https://fhir.nhs.uk/Id/nhs-number%7c9990000026",
        "_format=json&identifier=https%3a%2f%2ffhir.nhs.uk%2fId%2fnhs-number|9990000026&x",
        "patient.identifier=https://fhir.nhs.uk/Id/nhs-number|9990000026",
        "subject%3APatient.identifier=https://fhir.nhs.uk/Id/nhs-number|9990000026",
        "identifier=urn:x|1,https://fhir.nhs.uk/Id/nhs-number|9990000026",
        "identifier=http://fhir.nhs.uk/Id/nhs-number|9990000026",
    ] {
        let f = get("/fhir/Observation", Some(q));
        assert_eq!(f.clinical.nhs_number.as_deref(), Some("9990000026"), "{q}");
        assert_eq!(f.invalid_nhs_number, None, "{q}");
    }
    let f = get("/fhir/Patient", Some(&format!("identifier={sys}|{BAD_CHECK}")));
    assert_eq!(f.clinical.nhs_number, None);
    assert_eq!(f.invalid_nhs_number.as_deref(), Some(BAD_CHECK));
    // Other systems, other lengths and spaces are not NHS numbers.
    for q in [
        "identifier=https://example.org/mrn|9990000018",
        "identifier=9990000018",
        "identifier=https://fhir.nhs.uk/Id/nhs-number|999%200000018",
        "identifier=https://fhir.nhs.uk/Id/nhs-number|999000001",
        "_id=9990000018",
    ] {
        let f = get("/fhir/Patient", Some(q));
        assert_eq!((f.clinical.nhs_number, f.invalid_nhs_number), (None, None), "{q}");
    }
}

#[test]
fn patient_references() {
    for q in [
        "patient=Patient/9990000034",
        "subject=Patient/9990000034",
        "patient=9990000034",
        "patient:Patient=9990000034",
        "subject=https://epr.example.nhs.uk/fhir/Patient/9990000034",
        "patient=Patient%2F9990000034&category=vital-signs",
        "patient=Patient/1,Patient/9990000034",
    ] {
        let f = get("/fhir/Observation", Some(q));
        assert_eq!(f.clinical.nhs_number.as_deref(), Some("9990000034"), "{q}");
    }
    for q in [
        "subject=Group/9990000034",
        "patient=Patient/9990000019",
        "performer=Patient/9990000034",
    ] {
        let f = get("/fhir/Observation", Some(q));
        assert_eq!(f.clinical.nhs_number, None, "{q}");
        // A 10-digit logical id in a reference may be the server's own id.
        assert_eq!(f.invalid_nhs_number, None, "{q}");
    }
}

#[test]
fn path_number_comes_before_query_number() {
    let f = get("/fhir/Patient/9990000018/$everything", Some("patient=9990000026"));
    assert_eq!(f.clinical.nhs_number.as_deref(), Some("9990000018"));
    assert_eq!(f.fhir_interaction.as_deref(), Some("$everything"));
}

#[test]
fn dicomweb_uids() {
    let f = get(
        "/dicomweb/studies/1.2.826.0.1.3680043.8.498.1/series/4.5.6/instances",
        None,
    );
    assert_eq!(f.clinical.study_uid.as_deref(), Some("1.2.826.0.1.3680043.8.498.1"));
    assert_eq!(f.clinical.series_uid.as_deref(), Some("4.5.6"));
    assert_eq!(f.clinical.fhir_type, None);
    assert_eq!(f.fhir_interaction, None);
    let f = get(
        "/dicomweb/studies",
        Some("PatientID=1&StudyInstanceUID=1.2.3&0020000e=7.8.9"),
    );
    assert_eq!(f.clinical.study_uid.as_deref(), Some("1.2.3"));
    assert_eq!(f.clinical.series_uid.as_deref(), Some("7.8.9"));
    let f = get("/dicomweb/series", Some("0020000D=1.2.3&SeriesInstanceUID=4.5"));
    assert_eq!(f.clinical.study_uid.as_deref(), Some("1.2.3"));
    assert_eq!(f.clinical.series_uid.as_deref(), Some("4.5"));
    let long = "1.".repeat(32) + "1"; // 65 characters
    for bad in ["1.2.x", ".1.2", "1.2.", "", "1.2,1.3", "<script>", long.as_str()] {
        let f = get(&format!("/dicomweb/studies/{bad}/series/{bad}"), None);
        assert_eq!((f.clinical.study_uid, f.clinical.series_uid), (None, None), "{bad}");
        let f = get("/dicomweb/studies", Some(&format!("StudyInstanceUID={bad}")));
        assert_eq!(f.clinical.study_uid, None, "{bad}");
    }
    let uid64 = "1.".repeat(31) + "12";
    assert_eq!(uid64.len(), 64);
    let f = get(&format!("/dicomweb/studies/{uid64}"), None);
    assert_eq!(f.clinical.study_uid.as_deref(), Some(uid64.as_str()));
}

#[test]
fn spine_headers() {
    let mut h = HeaderMap::new();
    h.insert(
        "Ssp-TraceID",
        HeaderValue::from_static("09a01679-2564-0fb4-5129-aecc81ea2706"),
    );
    h.insert(
        "Ssp-InteractionID",
        HeaderValue::from_static("urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1"),
    );
    let f = parse(
        &Method::POST,
        "/B82617/STU3/1/gpconnect/fhir/Patient/$gpc.getstructuredrecord",
        None,
        &h,
    );
    assert_eq!(
        f.clinical.trace_id.as_deref(),
        Some("09a01679-2564-0fb4-5129-aecc81ea2706")
    );
    let urn = "urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1";
    assert_eq!(f.spine_interaction.as_deref(), Some(urn));
    assert_eq!(f.clinical.interaction.as_deref(), Some(urn));
    assert_eq!(f.fhir_interaction.as_deref(), Some("$gpc.getstructuredrecord"));

    let mut h = HeaderMap::new();
    h.insert("ssp-traceid", HeaderValue::from_static("has space"));
    h.insert("ssp-interactionid", HeaderValue::from_static(""));
    let f = parse(&Method::GET, "/fhir/Patient/1", None, &h);
    assert_eq!((f.clinical.trace_id, f.spine_interaction), (None, None));
    assert_eq!(f.clinical.interaction.as_deref(), Some("read"));
}

fn b64(json: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn bearer(payload: &str) -> HeaderMap {
    let token = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(payload));
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    h
}

const GPC_CLAIMS: &str = r#"{
  "iss": "https://consumer.example.nhs.uk",
  "reason_for_request": "directcare",
  "requesting_organization": {
    "resourceType": "Organization",
    "identifier": [
      {"system": "https://example.org/other", "value": "NOPE"},
      {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "a81001"}
    ],
    "name": "Example Surgery"
  },
  "requesting_practitioner": {
    "resourceType": "Practitioner",
    "id": "1",
    "identifier": [{"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "111222333444"}]
  }
}"#;

#[test]
fn gp_connect_token() {
    let f = parse(&Method::GET, "/fhir/Patient/1", None, &bearer(GPC_CLAIMS));
    assert_eq!(f.clinical.token_org.as_deref(), Some("A81001"));
    assert_eq!(f.clinical.token_practitioner.as_deref(), Some("1"));

    // Signed tokens are read the same (never verified); padding is tolerated.
    let mut h = HeaderMap::new();
    use base64::Engine;
    let padded = base64::engine::general_purpose::URL_SAFE.encode(GPC_CLAIMS);
    assert!(padded.ends_with('='), "the test needs a padded payload");
    let token = format!("eyJhbGciOiJSUzUxMiJ9.{padded}.c2lnbmF0dXJl");
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("bearer {token}")).expect("header"),
    );
    let f = parse(&Method::GET, "/fhir/Patient/1", None, &h);
    assert_eq!(f.clinical.token_org.as_deref(), Some("A81001"));

    // No practitioner id: the first identifier value.
    let f = parse(
        &Method::GET,
        "/",
        None,
        &bearer(r#"{"requesting_practitioner":{"identifier":[{"value":"G8133438"}]}}"#),
    );
    assert_eq!(f.clinical.token_practitioner.as_deref(), Some("G8133438"));
    assert_eq!(f.clinical.token_org, None);
}

#[test]
fn garbage_tokens_give_nothing() {
    let huge = format!(
        r#"{{"requesting_organization":{{"identifier":[{{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"A81001"}}]}},"pad":"{}"}}"#,
        "x".repeat(20_000)
    );
    for payload in [
        "not json",
        "[]",
        r#"{"requesting_organization": "A81001"}"#,
        r#"{"requesting_organization": {"identifier": {"value": "A81001"}}}"#,
        r#"{"requesting_organization": {"identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": 7}]}}"#,
        r#"{"requesting_practitioner": {"id": "line\nbreak"}}"#,
        huge.as_str(),
    ] {
        let f = parse(&Method::GET, "/", None, &bearer(payload));
        assert_eq!(f.clinical.token_org, None, "{payload:.60}");
        assert_eq!(f.clinical.token_practitioner, None, "{payload:.60}");
    }
    for value in [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer ",
        "Bearer a",
        "Bearer ..",
        "Bearer !!!.***.x",
    ] {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static(value));
        assert!(parse(&Method::GET, "/", None, &h).clinical.is_empty(), "{value}");
    }
}

#[test]
fn nothing_clinical_gives_empty_facts() {
    for (path, q) in [
        ("/", None),
        ("/healthz", None),
        ("/api/v1/things", Some("a=b&c")),
        ("/fhir", Some("_format=json")),
    ] {
        assert_eq!(get(path, q), Facts::default(), "{path}");
    }
}

/// A small xorshift generator: deterministic junk without a property-testing crate.
struct Junk(u64);

impl Junk {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }

    fn string(&mut self, pieces: &[&str]) -> String {
        let n = self.next() % 24;
        (0..n).map(|_| self.pick(pieces)).collect()
    }
}

#[test]
fn junk_never_panics_and_never_records_a_bad_number() {
    let pieces = [
        "/",
        "//",
        "%",
        "%2",
        "%24",
        "%7C",
        "%3A",
        "%2F",
        "%FF",
        "%C3",
        "%a9",
        "+",
        "?",
        "=",
        "&",
        "|",
        ",",
        ".",
        "..",
        "$",
        "_history",
        "_search",
        "metadata",
        "Patient",
        "Observation",
        "STU3",
        "studies",
        "series",
        "instances",
        "1.2.3",
        "9990000018",
        "9990000019",
        "999000001",
        "0",
        "é",
        "€",
        "\u{0}",
        "identifier=",
        "https://fhir.nhs.uk/Id/nhs-number|",
        "patient=",
        "Patient/",
        "StudyInstanceUID=",
        "0020000E=",
        "patient:Patient=",
        "subject.identifier=",
        " ",
        "\t",
        "x",
    ];
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ];
    let tokens = ["Bearer ", "bearer ", "Basic ", ""];
    let mut r = Junk(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let path = r.string(&pieces);
        let query = r.string(&pieces);
        let method = &methods[(r.next() % methods.len() as u64) as usize];
        let mut h = HeaderMap::new();
        let jwtish: String = (0..(r.next() % 4))
            .map(|_| {
                let mut s = b64(&r.string(&pieces));
                s.truncate((r.next() % 300) as usize);
                s + "."
            })
            .collect();
        let token = format!("{}{}", tokens[(r.next() % 4) as usize], jwtish);
        if let Ok(v) = HeaderValue::from_str(&token) {
            h.insert(AUTHORIZATION, v);
        }
        if let Ok(v) = HeaderValue::from_str(&r.string(&pieces)) {
            h.insert("ssp-traceid", v);
        }
        let q = (!r.next().is_multiple_of(3)).then_some(query.as_str());
        let f = parse(method, &path, q, &h);
        if let Some(n) = &f.clinical.nhs_number {
            assert!(nhs_number_valid(n), "{path:?} {q:?}");
        }
        if let Some(n) = &f.invalid_nhs_number {
            assert!(ten_digits(n) && !nhs_number_valid(n), "{path:?} {q:?}");
        }
        for uid in [&f.clinical.study_uid, &f.clinical.series_uid].into_iter().flatten() {
            assert!(is_uid(uid));
        }
    }
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("a%7Cb").as_deref(), Some("a|b"));
    assert_eq!(percent_decode("a%7cb+c").as_deref(), Some("a|b c"));
    assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
    assert_eq!(percent_decode("%zz%2").as_deref(), Some("%zz%2"));
    assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
    assert_eq!(percent_decode("%FF"), None);
    assert!(matches!(percent_decode("plain"), Some(Cow::Borrowed("plain"))));
}

#[test]
fn fhir_shaped_requests_for_refusals_without_a_route() {
    let none = HeaderMap::new();
    assert!(looks_like_fhir("/fhir/Patient/9990000018", &none));
    assert!(looks_like_fhir(
        "/B82617/STU3/1/gpconnect/structured/fhir/Patient",
        &none
    ));
    assert!(looks_like_fhir(
        "/https://provider.example.nhs.uk/FHIR/R4/metadata",
        &none
    ));
    assert!(looks_like_fhir("/api/Patient/$everything", &none));
    assert!(!looks_like_fhir("/nowhere", &none));
    assert!(!looks_like_fhir("/dicomweb/studies/1.2.3", &none));
    let mut accept = HeaderMap::new();
    accept.insert(http::header::ACCEPT, "application/fhir+json".parse().unwrap());
    assert!(looks_like_fhir("/nowhere", &accept));
    let mut stu3 = HeaderMap::new();
    stu3.insert(
        http::header::CONTENT_TYPE,
        "application/json+fhir; charset=utf-8".parse().unwrap(),
    );
    assert!(looks_like_fhir("/nowhere", &stu3));
}
