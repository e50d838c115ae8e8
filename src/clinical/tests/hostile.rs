//! Hostile input: huge queries, deep JSON, bad UTF-8 and percent-encoding, huge tokens. Facts
//! stay bounded, nothing panics, and what cannot be recorded is said so.

use super::*;

const NHS: &str = "https://fhir.nhs.uk/Id/nhs-number";

fn invariants(f: &Facts) {
    let c = &f.clinical;
    assert!(c.nhs_numbers.iter().all(|n| nhs_number_valid(n)));
    assert!(c.nhs_numbers.len() <= MAX_NAMED && c.patient_ids.len() <= MAX_NAMED && c.study_uids.len() <= MAX_NAMED);
    assert!(c
        .patient_ids
        .iter()
        .all(|p| !p.is_empty() && p.len() <= MAX_ID && !p.chars().any(char::is_control)));
    assert!(c.study_uids.iter().all(|u| is_uid(u)));
    if let Some(n) = &f.invalid_nhs_number {
        assert!(ten_digits(n) && !nhs_number_valid(n));
    }
    assert_eq!(c.nhs_number.as_deref(), c.nhs_numbers.first().map(String::as_str));
}

#[test]
fn a_query_naming_too_many_patients_says_so() {
    let q = (0..MAX_NAMED as u32 + 500)
        .map(|i| format!("{NHS}|{}", nth_nhs(i)))
        .collect::<Vec<_>>()
        .join(",");
    let f = get("/fhir/Patient", Some(&format!("identifier={q}")));
    invariants(&f);
    assert_eq!(f.clinical.nhs_numbers.len(), MAX_NAMED);
    assert_eq!(f.clinical.nhs_numbers.last(), Some(&nth_nhs(MAX_NAMED as u32 - 1)));
    assert!(f.unrecorded);
    // Exactly the limit: all recorded, nothing unrecorded; repeats cost nothing.
    let q = (0..MAX_NAMED as u32)
        .chain(0..MAX_NAMED as u32)
        .map(|i| format!("_id={}", nth_nhs(i)))
        .collect::<Vec<_>>()
        .join("&");
    let f = get("/fhir/Patient", Some(&q));
    assert_eq!(f.clinical.nhs_numbers.len(), MAX_NAMED);
    assert!(!f.unrecorded);
}

#[test]
fn a_huge_query_of_one_patient_is_one_patient() {
    let q = format!(
        "patient=Patient/9990000018&{}",
        "patient=Patient/9990000018&x=y&".repeat(50_000)
    );
    let f = get("/fhir/Observation", Some(&q));
    assert_eq!(named(&f), (vec!["9990000018"], vec![], vec![]));
    assert!(!f.unrecorded);
    // A huge query of nothing clinical is nothing.
    let q = "a=b&".repeat(100_000);
    assert_eq!(
        get("/fhir/Observation", Some(&q)),
        with(Method::GET, "/fhir/Observation")
    );
}

#[test]
fn an_overlong_patient_id_is_not_recorded_but_said() {
    let long = "x".repeat(MAX_ID + 1);
    let f = get(
        "/fhir/Patient",
        Some(&format!("identifier=https://example.org/mrn|{long}")),
    );
    assert!(f.clinical.patient_ids.is_empty());
    assert!(f.unrecorded);
    let f = get(
        "/fhir/Observation",
        Some(&format!("patient=Patient/{}", "y".repeat(MAX_ID))),
    );
    assert_eq!(f.clinical.patient_ids.len(), 1);
    assert!(!f.unrecorded);
}

#[test]
fn bad_percent_encoding_and_utf8() {
    for q in [
        "identifier=%FF%7C9990000018",
        "patient=Patient/%C3",
        "patient=Patient%2",
        "%FF=Patient/9990000018",
        "identifier=https://fhir.nhs.uk/Id/nhs-number%7",
        "identifier=%%%7C%7C%7C",
        "PatientID=%0A",
        "StudyInstanceUID=%E2%82%AC",
    ] {
        let f = get("/fhir/Patient", Some(q));
        invariants(&f);
        assert!(f.clinical.nhs_numbers.is_empty(), "{q}: {:?}", f.clinical);
    }
    // A control character does not hide the number after it.
    let f = get("/fhir/Observation", Some("subject=%00Patient/9990000018"));
    assert_eq!(named(&f), (vec!["9990000018"], vec![], vec![]));
    // A good pair beside a bad one still counts.
    let f = get("/fhir/Observation", Some("x=%FF&patient=9990000026"));
    assert_eq!(named(&f), (vec!["9990000026"], vec![], vec![]));
}

#[test]
fn deep_json_is_refused_not_overflowed() {
    for depth in [129, 10_000, 1_000_000] {
        let body = "[".repeat(depth);
        let mut f = Facts::default();
        let r = inspect_body(Some(b"application/json"), body.as_bytes(), &Options::default(), &mut f);
        assert_eq!(r, Err(BodyError::NotJson), "{depth}");
        let body = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        let r = inspect_body(Some(b"application/json"), body.as_bytes(), &Options::default(), &mut f);
        assert_eq!(r, Err(BodyError::NotJson), "{depth}");
    }
    // Within the limit, a patient at the bottom is found.
    let body = format!(
        "{}{{\"reference\": \"Patient/9990000018\"}}{}",
        "{\"a\": [".repeat(60),
        "]}".repeat(60)
    );
    let mut f = Facts::default();
    inspect_body(
        Some(b"application/fhir+json"),
        body.as_bytes(),
        &Options::default(),
        &mut f,
    )
    .unwrap();
    assert_eq!(named(&f), (vec!["9990000018"], vec![], vec![]));
}

#[test]
fn a_body_naming_too_many_patients_says_so() {
    let refs = (0..30_000)
        .map(|i| format!("{{\"reference\":\"Patient/p{i}\"}}"))
        .collect::<Vec<_>>()
        .join(",");
    let body = format!("{{\"resourceType\":\"Bundle\",\"entry\":[{refs}]}}");
    let mut f = Facts::default();
    inspect_body(
        Some(b"application/fhir+json"),
        body.as_bytes(),
        &Options::default(),
        &mut f,
    )
    .unwrap();
    invariants(&f);
    assert_eq!(f.clinical.patient_ids.len(), MAX_NAMED);
    assert_eq!(f.clinical.patient_ids[0], "p0");
    assert!(f.unrecorded);
}

#[test]
fn huge_and_malformed_tokens_give_nothing() {
    let record = format!(
        r#""requested_record":{{"resourceType":"Patient","identifier":[{{"system":"{NHS}","value":"9990000018"}}]}}"#
    );
    let huge = format!(r#"{{{record},"pad":"{}"}}"#, "x".repeat(20_000));
    let deep = format!(r#"{{{record},"pad":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
    let h = |payload: &str| {
        let mut h = HeaderMap::new();
        let t = format!("Bearer e30.{}.", b64(payload));
        h.insert(AUTHORIZATION, HeaderValue::from_str(&t).unwrap());
        h
    };
    for payload in [huge.as_str(), deep.as_str(), "{", "\u{0}"] {
        let f = parse(&Method::GET, "/", None, &h(payload));
        assert!(f.clinical.is_empty(), "{payload:.40}");
    }
    // The same claims, sane: read.
    let f = parse(&Method::GET, "/", None, &h(&format!("{{{record}}}")));
    assert_eq!(named(&f), (vec!["9990000018"], vec![], vec![]));
    // Not base64, not three parts, a megabyte of it.
    for value in ["Bearer %%%.%%%.%%%", "Bearer e30", "Bearer .e30."] {
        let mut hm = HeaderMap::new();
        hm.insert(AUTHORIZATION, HeaderValue::from_static(value));
        assert!(parse(&Method::GET, "/", None, &hm).clinical.is_empty(), "{value}");
    }
    let mut hm = HeaderMap::new();
    hm.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {}", "A".repeat(1 << 20))).unwrap(),
    );
    assert!(parse(&Method::GET, "/", None, &hm).clinical.is_empty());
}

#[test]
fn mangled_bodies_never_panic() {
    let sample = br#"{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"GET","url":"Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000018"}},{"resource":{"resourceType":"Patient","id":"9990000026","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000034"}]},"request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=|9990000042"}},{"resource":{"resourceType":"Parameters","parameter":[{"name":"patientNHSNumber","valueIdentifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000050"}},{"name":"patient","valueString":"Patient/p1"}]}}]}"#;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let junk = b"{}[]\",:|/%\\0123456789PatientNHS\xff\x00 ";
    for _ in 0..3_000 {
        let mut body = sample.to_vec();
        for _ in 0..(next() % 8) {
            let i = (next() as usize) % body.len();
            match next() % 3 {
                0 => body[i] = junk[(next() as usize) % junk.len()],
                1 => {
                    body.remove(i);
                }
                _ => body.insert(i, junk[(next() as usize) % junk.len()]),
            }
        }
        for ct in [&b"application/fhir+json"[..], b"application/x-www-form-urlencoded"] {
            let mut f = parse(&Method::POST, "/fhir", None, &HeaderMap::new());
            let _ = inspect_body(Some(ct), &body, &Options::default(), &mut f);
            invariants(&f);
        }
    }
    // The unmangled sample names every patient in it.
    let mut f = Facts::default();
    inspect_body(Some(b"application/fhir+json"), sample, &Options::default(), &mut f).unwrap();
    assert_eq!(
        named(&f),
        (
            vec!["9990000018", "9990000042", "9990000026", "9990000034", "9990000050"],
            vec!["p1"],
            vec![]
        )
    );
}

#[test]
fn ids_with_control_characters_are_said_not_recorded() {
    for q in ["patient=Patient/a%0Ab", "subject=a%07b", "PatientID=x%00y"] {
        let f = get("/fhir/Observation", Some(q));
        invariants(&f);
        assert!(f.clinical.patient_ids.is_empty(), "{q}");
        assert!(f.unrecorded, "{q}");
    }
    // Ids FHIR would not allow, but a server might serve, are recorded as sent.
    let f = get("/fhir/Patient/abc_def", None);
    assert_eq!(named(&f), (vec![], vec!["abc_def"], vec![]));
    assert_eq!(f.clinical.fhir_id, None);
}
