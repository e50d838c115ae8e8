//! Request bodies: form searches, operation Parameters, Bundles, single resources.

use super::*;

const FHIR_JSON: Option<&[u8]> = Some(b"application/fhir+json");

/// `parse` of the head, then `inspect_body`.
fn post(path: &str, content_type: Option<&[u8]>, body: &str) -> Result<Facts, BodyError> {
    let mut f = parse(&Method::POST, path, None, &HeaderMap::new());
    inspect_body(content_type, body.as_bytes(), &Options::default(), &mut f)?;
    Ok(f)
}

#[test]
fn which_content_types_are_inspected() {
    for ct in [
        "application/fhir+json",
        "application/fhir+json; charset=utf-8",
        "Application/FHIR+JSON;fhirVersion=4.0",
        "application/json",
        "application/json; charset=UTF-8",
        "application/json+fhir",
        "application/json-patch+json",
        "application/x-www-form-urlencoded",
        " application/x-www-form-urlencoded ; charset=utf-8",
    ] {
        assert!(inspectable(Some(ct.as_bytes())), "{ct}");
    }
    for ct in [
        "",
        "application/fhir+xml",
        "text/plain",
        "application/dicom",
        "multipart/related",
        "+json",
        "json",
    ] {
        assert!(!inspectable(Some(ct.as_bytes())), "{ct}");
    }
    assert!(!inspectable(None));
    assert!(!inspectable(Some(b"\xff\xfe")));
}

#[test]
fn form_search_bodies() {
    let f = post(
        "/fhir/Patient/_search",
        Some(b"application/x-www-form-urlencoded"),
        "identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9990000018&_id=p7&family=Smith",
    )
    .unwrap();
    assert_eq!(named(&f), (vec!["9990000018"], vec!["p7"], vec![]));
    assert_eq!(f.fhir_interaction.as_deref(), Some("search-type"));
    let f = post(
        "/fhir/Observation/_search",
        Some(b"application/x-www-form-urlencoded"),
        "patient=Patient/9990000026&code=1234-5",
    )
    .unwrap();
    assert_eq!(named(&f), (vec!["9990000026"], vec![], vec![]));
    // A stray non-UTF-8 byte does not hide the rest.
    let mut f = parse(&Method::POST, "/fhir/Observation/_search", None, &HeaderMap::new());
    let body = b"x=\xff\xfe&subject=Patient%2F9990000034";
    inspect_body(
        Some(b"application/x-www-form-urlencoded"),
        body,
        &Options::default(),
        &mut f,
    )
    .unwrap();
    assert_eq!(named(&f), (vec!["9990000034"], vec![], vec![]));
}

#[test]
fn gp_connect_structured_record_parameters() {
    let body = r#"{
      "resourceType": "Parameters",
      "parameter": [
        {"name": "patientNHSNumber",
         "valueIdentifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}},
        {"name": "includeAllergies",
         "part": [{"name": "includeResolvedAllergies", "valueBoolean": true}]},
        {"name": "includeMedication"}
      ]
    }"#;
    let f = post(
        "/B82617/STU3/1/gpconnect/fhir/Patient/$gpc.getstructuredrecord",
        FHIR_JSON,
        body,
    )
    .unwrap();
    assert_eq!(named(&f), (vec!["9990000018"], vec![], vec![]));
    assert_eq!(f.fhir_interaction.as_deref(), Some("$gpc.getstructuredrecord"));
    // 0.x: the legacy system.
    let body = r#"{"resourceType": "Parameters", "parameter": [{"name": "patientNHSNumber",
      "valueIdentifier": {"system": "http://fhir.nhs.net/Id/nhs-number", "value": "9990000026"}}]}"#;
    let f = post("/fhir/Patient/$gpc.getcarerecord", Some(b"application/json+fhir"), body).unwrap();
    assert_eq!(named(&f), (vec!["9990000026"], vec![], vec![]));
}

#[test]
fn other_operation_parameters() {
    let body = r#"{
      "resourceType": "Parameters",
      "parameter": [
        {"name": "patient", "valueReference": {"reference": "Patient/p1"}},
        {"name": "subject", "valueReference": {"identifier": {"system": "https://example.org/mrn", "value": "M7"}}},
        {"name": "nhsNumber", "valueString": "9990000018"},
        {"name": "patientId", "valueString": "9990000026"},
        {"name": "identifier", "valueString": "https://example.org/mrn|M8"},
        {"name": "other", "valueIdentifier": {"system": "urn:oid:2.16.840.1.113883.2.1.4.1", "value": "9990000034"}},
        {"name": "code", "valueString": "9990000042"},
        {"name": "group", "part": [
          {"name": "patient", "valueCode": "p2"},
          {"name": "performer", "valueReference": {"reference": "https://x/fhir/Patient/p3"}}
        ]},
        {"name": "resource", "resource": {"resourceType": "Patient", "id": "p4",
          "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000050"}]}}
      ]
    }"#;
    let f = post(
        "/fhir/Patient/$match",
        Some(b"application/fhir+json; charset=utf-8"),
        body,
    )
    .unwrap();
    assert_eq!(
        named(&f),
        (
            vec!["9990000018", "9990000026", "9990000034", "9990000050"],
            vec![
                "p1",
                "https://example.org/mrn|M7",
                "https://example.org/mrn|M8",
                "p2",
                "p3",
                "p4"
            ],
            vec![]
        )
    );
}

#[test]
fn transaction_bundles() {
    let body = r#"{
      "resourceType": "Bundle",
      "type": "transaction",
      "entry": [
        {"request": {"method": "GET", "url": "Patient/9990000018"}},
        {"request": {"method": "GET", "url": "Observation?patient=Patient/abc&code=x"}},
        {"request": {"method": "GET", "url": "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C9990000026"}},
        {"request": {"method": "DELETE", "url": "https://epr.example/fhir/Patient/p9/_history/2"}},
        {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
         "resource": {"resourceType": "Patient",
           "identifier": [
             {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000034"},
             {"system": "https://example.org/mrn", "value": "M1"}
           ]},
         "request": {"method": "POST", "url": "Patient",
           "ifNoneExist": "identifier=https://fhir.nhs.uk/Id/nhs-number|9990000034"}},
        {"resource": {"resourceType": "Observation", "status": "final",
           "subject": {"reference": "Patient/9990000042"},
           "performer": [{"reference": "Practitioner/pr1"}]},
         "request": {"method": "POST", "url": "Observation",
           "ifNoneExist": "patient.identifier=https://example.org/mrn|M2"}},
        {"resource": {"resourceType": "Observation",
           "subject": {"reference": "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000050"}},
         "request": {"method": "PUT", "url": "Observation/o1"}},
        {"request": {"method": "GET", "url": "/dicomweb/studies/1.2.3/series"}}
      ]
    }"#;
    let f = post("/fhir", FHIR_JSON, body).unwrap();
    assert_eq!(
        named(&f),
        (
            vec!["9990000018", "9990000026", "9990000034", "9990000042", "9990000050"],
            vec!["abc", "p9", "https://example.org/mrn|M2", "https://example.org/mrn|M1"],
            vec!["1.2.3"]
        )
    );
    // The request's own shape is the POST to the base, not an entry's.
    assert_eq!(f.clinical.fhir_type, None);
    assert_eq!(f.invalid_nhs_number, None);
    // A batch reads the same; a bad check digit in an entry's path is an invalid NHS number.
    let body = r#"{"resourceType": "Bundle", "type": "batch",
      "entry": [{"request": {"method": "GET", "url": "Patient/9990000019"}}]}"#;
    let f = post("/fhir", FHIR_JSON, body).unwrap();
    assert_eq!(f.invalid_nhs_number.as_deref(), Some("9990000019"));
}

#[test]
fn single_resources() {
    let body = r#"{
      "resourceType": "Patient",
      "id": "new-1",
      "identifier": [
        {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"},
        {"system": "https://example.org/mrn", "value": "M1"},
        {"value": "bare-1"}
      ],
      "telecom": [{"system": "phone", "value": "0113 496 0000"}],
      "link": [{"other": {"reference": "Patient/old-1"}, "type": "replaces"}]
    }"#;
    let f = post("/fhir/Patient", FHIR_JSON, body).unwrap();
    assert_eq!(
        named(&f),
        (
            vec!["9990000018"],
            vec!["new-1", "https://example.org/mrn|M1", "bare-1", "old-1"],
            vec![]
        )
    );
    let body = r##"{
      "resourceType": "Observation",
      "identifier": [{"system": "https://example.org/obs", "value": "O1"}],
      "subject": {"reference": "Patient/9990000026", "display": "Mr Test"},
      "contained": [{"resourceType": "Patient", "id": "c1"}],
      "performer": [{"reference": "#c1"}],
      "valueQuantity": {"value": 7, "system": "http://unitsofmeasure.org", "code": "mmol/L"}
    }"##;
    let f = post("/fhir/Observation", Some(b"application/json"), body).unwrap();
    assert_eq!(named(&f), (vec!["9990000026"], vec!["c1"], vec![]));
    // A logical reference by identifier.
    let body = r#"{"resourceType": "DocumentReference",
      "subject": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000034"}}}"#;
    let f = post("/fhir/DocumentReference", FHIR_JSON, body).unwrap();
    assert_eq!(named(&f), (vec!["9990000034"], vec![], vec![]));
    // A bad check digit with the NHS-number system: invalid, recorded as a patient id.
    let body = r#"{"resourceType": "Patient",
      "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000019"}]}"#;
    let f = post("/fhir/Patient", FHIR_JSON, body).unwrap();
    assert_eq!(
        named(&f),
        (vec![], vec!["https://fhir.nhs.uk/Id/nhs-number|9990000019"], vec![])
    );
    assert_eq!(f.invalid_nhs_number.as_deref(), Some("9990000019"));
}

#[test]
fn body_patients_follow_the_path_patients() {
    let body = r#"{"resourceType": "Patient", "id": "9990000018",
      "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000026"}]}"#;
    let mut f = parse(&Method::PUT, "/fhir/Patient/9990000018", None, &HeaderMap::new());
    inspect_body(FHIR_JSON, body.as_bytes(), &Options::default(), &mut f).unwrap();
    assert_eq!(named(&f), (vec!["9990000018", "9990000026"], vec![], vec![]));
    assert_eq!(f.fhir_interaction.as_deref(), Some("update"));
    // Opaque ids: the body's id is a patient id too.
    let opts = Options {
        patient_ids_are_nhs_numbers: false,
    };
    let mut f = Facts::default();
    inspect_body(FHIR_JSON, body.as_bytes(), &opts, &mut f).unwrap();
    assert_eq!(named(&f), (vec!["9990000026"], vec!["9990000018"], vec![]));
}

#[test]
fn json_that_is_not_json_is_refused_and_other_bodies_name_nothing() {
    for bad in [
        "{",
        "not json",
        "{\"resourceType\": \"Patient\",}",
        "{} {}",
        "\u{feff}\u{feff}{}",
    ] {
        assert_eq!(post("/fhir/Patient", FHIR_JSON, bad), Err(BodyError::NotJson), "{bad}");
    }
    let mut f = Facts::default();
    assert_eq!(
        inspect_body(Some(b"application/json"), b"\xff{}", &Options::default(), &mut f),
        Err(BodyError::NotJson)
    );
    // A byte order mark is tolerated.
    let f = post(
        "/fhir/Observation",
        FHIR_JSON,
        "\u{feff}{\"subject\": {\"reference\": \"Patient/p1\"}}",
    )
    .unwrap();
    assert_eq!(named(&f), (vec![], vec!["p1"], vec![]));
    // Empty, or a JSON value that is no resource: nothing, and no error.
    for ok in ["", "  \n", "[]", "null", "7", "\"Patient/9990000018\"", "{}"] {
        let f = post("/fhir/Observation", FHIR_JSON, ok).unwrap();
        assert_eq!(named(&f), (vec![], vec![], vec![]), "{ok}");
    }
    let xml = "<Patient><id value=\"9990000018\"/></Patient>";
    for ct in [Some(&b"application/fhir+xml"[..]), Some(b"text/plain"), None] {
        assert_eq!(post("/fhir/Observation", ct, xml).map(|f| named(&f).0.len()), Ok(0));
    }
    assert_eq!(
        BodyError::NotJson.to_string(),
        "the request body is declared as JSON but is not valid JSON"
    );
}
