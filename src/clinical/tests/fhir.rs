//! FHIR requests: types, ids and interactions, and what looks like FHIR without a route.

use super::*;

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

/// A path, the NHS numbers and patient ids it names, and its interaction.
type PathCase = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    Option<&'static str>,
);

#[test]
fn patient_paths_name_their_patient() {
    let cases: &[PathCase] = &[
        ("/fhir/Patient/9990000018", &["9990000018"], &[], Some("read")),
        ("/fhir/Patient/abc-123", &[], &["abc-123"], Some("read")),
        (
            "/fhir/Patient/9990000018/$everything",
            &["9990000018"],
            &[],
            Some("$everything"),
        ),
        (
            "/fhir/Patient/9990000018/_history/2",
            &["9990000018"],
            &[],
            Some("vread"),
        ),
        (
            "/fhir/Patient/9990000018/_history",
            &["9990000018"],
            &[],
            Some("history-instance"),
        ),
        (
            "/fhir/Patient/9990000018/Observation",
            &["9990000018"],
            &[],
            Some("search-compartment"),
        ),
        (
            "/fhir/Patient/p1/DocumentReference/_search",
            &[],
            &["p1"],
            Some("search-compartment"),
        ),
        // Shapes FHIR does not have still name the patient.
        ("/fhir/Patient/9990000026/Observation/2/x", &["9990000026"], &[], None),
        // No id: nobody.
        ("/fhir/Patient/_search", &[], &[], Some("search-type")),
        (
            "/fhir/Patient/$gpc.getstructuredrecord",
            &[],
            &[],
            Some("$gpc.getstructuredrecord"),
        ),
        ("/fhir/Observation/9990000018", &[], &[], Some("read")),
    ];
    for (path, nhs, ids, interaction) in cases {
        let f = get(path, None);
        assert_eq!(named(&f), (nhs.to_vec(), ids.to_vec(), vec![]), "{path}");
        assert_eq!(f.fhir_interaction.as_deref(), *interaction, "{path}");
    }
    let f = with(Method::POST, "/fhir/Patient/p1/DocumentReference/_search");
    assert_eq!(f.fhir_interaction.as_deref(), Some("search-compartment"));
    assert_eq!(f.fhir_compartment_type.as_deref(), Some("DocumentReference"));
    // Not a search when written to.
    assert_eq!(
        with(Method::POST, "/fhir/Patient/p1/Observation").fhir_interaction,
        None
    );
}
