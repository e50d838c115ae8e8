//! Spine headers (Ssp-TraceID, Ssp-InteractionID) and GP Connect bearer tokens.

use super::*;

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
    assert_eq!(
        f.clinical.token.as_ref().and_then(|t| t.organisation.as_deref()),
        Some("A81001")
    );
    // The SDS user id with its system (the resource id is the consumer's own).
    assert_eq!(
        f.clinical.token.as_ref().and_then(|t| t.practitioner.as_deref()),
        Some("https://fhir.nhs.uk/Id/sds-user-id|111222333444")
    );

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
    assert_eq!(
        f.clinical.token.as_ref().and_then(|t| t.organisation.as_deref()),
        Some("A81001")
    );

    // No practitioner id: the first identifier value.
    let f = parse(
        &Method::GET,
        "/",
        None,
        &bearer(r#"{"requesting_practitioner":{"identifier":[{"value":"G8133438"}]}}"#),
    );
    assert_eq!(
        f.clinical.token.as_ref().and_then(|t| t.practitioner.as_deref()),
        Some("G8133438")
    );
    assert_eq!(f.clinical.token.as_ref().and_then(|t| t.organisation.as_deref()), None);
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
        assert_eq!(
            f.clinical.token.as_ref().and_then(|t| t.organisation.as_deref()),
            None,
            "{payload:.60}"
        );
        assert_eq!(
            f.clinical.token.as_ref().and_then(|t| t.practitioner.as_deref()),
            None,
            "{payload:.60}"
        );
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
fn ssp_headers_are_recorded() {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("Ssp-From", "200000000101"),
        ("Ssp-To", "918999198993"),
        (
            "Ssp-InteractionID",
            "urn:nhs:names:services:gpconnect:fhir:rest:read:patient-1",
        ),
        ("Ssp-TraceID", "09a01679-2564-0fb4-5129-aecc81ea2706"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    let f = parse(&Method::GET, "/fhir/Patient/9990000018", None, &h);
    assert_eq!(
        f.clinical.ssp,
        Some(Box::new(crate::audit::record::Ssp {
            from: Some("200000000101".into()),
            to: Some("918999198993".into()),
            interaction: Some("urn:nhs:names:services:gpconnect:fhir:rest:read:patient-1".into()),
            trace_id: Some("09a01679-2564-0fb4-5129-aecc81ea2706".into()),
        }))
    );
    assert_eq!(
        f.clinical.trace_id.as_deref(),
        Some("09a01679-2564-0fb4-5129-aecc81ea2706")
    );
    // Only what was sent, and sane.
    let mut h = HeaderMap::new();
    h.insert("ssp-from", HeaderValue::from_static("200000000101"));
    h.insert("ssp-to", HeaderValue::from_static("bad value"));
    let f = parse(&Method::GET, "/", None, &h);
    assert_eq!(
        f.clinical.ssp,
        Some(Box::new(crate::audit::record::Ssp {
            from: Some("200000000101".into()),
            ..Default::default()
        }))
    );
    assert_eq!(f.clinical.trace_id, None);
    assert_eq!(parse(&Method::GET, "/", None, &HeaderMap::new()).clinical.ssp, None);
}
