//! The GP Connect token: the claims the SSP requires to be logged, and the patient it names.

use super::*;
use crate::audit::record::Token;

fn bearer(payload: &str) -> HeaderMap {
    let token = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(payload));
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    h
}

fn token_of(path: &str, payload: &str) -> (Facts, Token) {
    let f = parse(&Method::GET, path, None, &bearer(payload));
    let t = *f.clinical.token.clone().expect("a token");
    (f, t)
}

/// GP Connect 1.x (STU3).
const STU3: &str = r#"{
  "iss": "https://consumer.example.nhs.uk",
  "sub": "111222333444",
  "aud": "https://provider.example.nhs.uk/B82617/STU3/1/gpconnect/fhir",
  "exp": 1700000300,
  "iat": 1700000000,
  "reason_for_request": "directcare",
  "requested_scope": "patient/*.read",
  "requesting_device": {
    "resourceType": "Device",
    "identifier": [{"system": "https://consumersupplier.com/Id/device-identifier", "value": "CONS-APP-4"}],
    "model": "Consumer app",
    "version": "5.2"
  },
  "requesting_organization": {
    "resourceType": "Organization",
    "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "a81001"}],
    "name": "Example Surgery"
  },
  "requesting_practitioner": {
    "resourceType": "Practitioner",
    "id": "10019",
    "identifier": [
      {"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "111222333444"},
      {"system": "https://fhir.nhs.uk/Id/sds-role-profile-id", "value": "444555666777"},
      {"system": "https://consumersupplier.com/Id/user-guid", "value": "98ed4f78-814d-4266-8d5b-cde742f3093c"}
    ],
    "name": [{"family": "Jones", "given": ["Claire"], "prefix": ["Dr"]}]
  }
}"#;

#[test]
fn gp_connect_stu3_claims() {
    let (f, t) = token_of("/fhir/Patient/9990000018", STU3);
    assert_eq!(
        t,
        Token {
            practitioner: Some("https://fhir.nhs.uk/Id/sds-user-id|111222333444".into()),
            practitioner_name: Some("Dr Claire Jones".into()),
            role: Some("https://fhir.nhs.uk/Id/sds-role-profile-id|444555666777".into()),
            device: Some("https://consumersupplier.com/Id/device-identifier|CONS-APP-4".into()),
            organisation: Some("A81001".into()),
            reason: Some("directcare".into()),
            scope: Some("patient/*.read".into()),
            patient: None,
            iat: Some(1_700_000_000),
            exp: Some(1_700_000_300),
        }
    );
    assert_eq!(named(&f), (vec!["9990000018"], vec![], vec![]));
}

/// GP Connect 0.x (DSTU2): legacy systems, `requested_record`, a single HumanName with lists.
const DSTU2: &str = r#"{
  "reason_for_request": "directcare",
  "requested_scope": "patient/*.read",
  "requested_record": {
    "resourceType": "Patient",
    "identifier": [{"system": "http://fhir.nhs.net/Id/nhs-number", "value": "9990000026"}]
  },
  "requesting_device": {"resourceType": "Device", "model": "Consumer app", "version": "1.0"},
  "requesting_organization": {
    "resourceType": "Organization",
    "identifier": [{"system": "http://fhir.nhs.net/Id/ods-organization-code", "value": "B82617"}]
  },
  "requesting_practitioner": {
    "resourceType": "Practitioner",
    "id": "1",
    "name": {"family": ["Smith"], "given": ["Jane"], "prefix": ["Mrs"]},
    "identifier": [
      {"system": "http://fhir.nhs.net/sds-user-id", "value": "G13579135"},
      {"system": "localSystem", "value": "1"}
    ],
    "practitionerRole": [{"role": {"coding": [{"system": "http://fhir.nhs.net/ValueSet/sds-job-role-name-1", "code": "R8003"}]}}]
  }
}"#;

#[test]
fn gp_connect_dstu2_claims_and_requested_record() {
    let (f, t) = token_of("/fhir/Patient/$gpc.getcarerecord", DSTU2);
    assert_eq!(
        t,
        Token {
            practitioner: Some("http://fhir.nhs.net/sds-user-id|G13579135".into()),
            practitioner_name: Some("Mrs Jane Smith".into()),
            role: Some("http://fhir.nhs.net/ValueSet/sds-job-role-name-1|R8003".into()),
            device: Some("Consumer app".into()),
            organisation: Some("B82617".into()),
            reason: Some("directcare".into()),
            scope: Some("patient/*.read".into()),
            patient: Some("9990000026".into()),
            iat: None,
            exp: None,
        }
    );
    assert_eq!(named(&f), (vec!["9990000026"], vec![], vec![]));
}

#[test]
fn spine_core_string_claims() {
    let payload = r#"{
      "sub": "https://fhir.nhs.uk/Id/sds-role-profile-id|fakeRoleId",
      "reason_for_request": "directcare",
      "scope": "patient/DocumentReference.read",
      "requesting_system": "https://fhir.nhs.uk/Id/accredited-system|200000000117",
      "requesting_organization": "https://fhir.nhs.uk/Id/ods-organization-code|ams01",
      "requesting_user": "https://fhir.nhs.uk/Id/sds-role-profile-id|fakeRoleId",
      "requesting_patient": "https://fhir.nhs.uk/Id/nhs-number|9990000034",
      "iat": 1700000000
    }"#;
    let (f, t) = token_of("/fhir/DocumentReference", payload);
    assert_eq!(
        t,
        Token {
            role: Some("https://fhir.nhs.uk/Id/sds-role-profile-id|fakeRoleId".into()),
            device: Some("https://fhir.nhs.uk/Id/accredited-system|200000000117".into()),
            organisation: Some("AMS01".into()),
            reason: Some("directcare".into()),
            scope: Some("patient/DocumentReference.read".into()),
            patient: Some("9990000034".into()),
            iat: Some(1_700_000_000),
            ..Token::default()
        }
    );
    assert_eq!(named(&f), (vec!["9990000034"], vec![], vec![]));
}

#[test]
fn the_token_patient_comes_after_the_request_patients() {
    let (f, t) = token_of("/fhir/Patient/9990000018", DSTU2);
    assert_eq!(t.patient.as_deref(), Some("9990000026"));
    assert_eq!(named(&f), (vec!["9990000018", "9990000026"], vec![], vec![]));
    // A patient of another system: a patient id, as `system|value`.
    let (f, t) = token_of(
        "/",
        r#"{"requested_record": {"resourceType": "Patient", "identifier": [{"system": "https://example.org/mrn", "value": "M1"}]}}"#,
    );
    assert_eq!(t.patient.as_deref(), Some("https://example.org/mrn|M1"));
    assert_eq!(named(&f), (vec![], vec!["https://example.org/mrn|M1"], vec![]));
    // An organisation record (GP Connect 0.x, organisation-level requests) names no patient.
    let f = parse(
        &Method::GET,
        "/",
        None,
        &bearer(
            r#"{"requested_record": {"resourceType": "Organization", "identifier": [{"system": "http://fhir.nhs.net/Id/ods-organization-code", "value": "9990000018"}]}}"#,
        ),
    );
    assert!(f.clinical.is_empty());
}

#[test]
fn a_token_with_a_bad_check_digit_is_recorded_not_judged() {
    let (f, t) = token_of(
        "/",
        r#"{"requesting_patient": "https://fhir.nhs.uk/Id/nhs-number|9990000019"}"#,
    );
    assert_eq!(
        t.patient.as_deref(),
        Some("https://fhir.nhs.uk/Id/nhs-number|9990000019")
    );
    assert_eq!(
        named(&f),
        (vec![], vec!["https://fhir.nhs.uk/Id/nhs-number|9990000019"], vec![])
    );
    assert_eq!(f.invalid_nhs_number, None);
}

#[test]
fn claims_of_the_wrong_shape_give_nothing() {
    for payload in [
        r#"{"iat": "yesterday", "exp": 1.5, "reason_for_request": 7, "requested_scope": ["a"]}"#,
        r#"{"requesting_organization": "https://example.org/other|A81001"}"#,
        r#"{"requesting_organization": "https://fhir.nhs.uk/Id/ods-organization-code|"}"#,
        r#"{"requesting_practitioner": {"name": [{"family": 7}]}}"#,
        r#"{"requested_record": "   "}"#,
        r#"{"requesting_device": {"identifier": [{"system": "x"}]}}"#,
    ] {
        let f = parse(&Method::GET, "/", None, &bearer(payload));
        assert!(f.clinical.is_empty(), "{payload}: {:?}", f.clinical);
    }
}
