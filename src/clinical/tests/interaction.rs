//! `Ssp-InteractionID` checked against the request it labels.

use super::*;

const GPC: &str = "urn:nhs:names:services:gpconnect:fhir";
const DOCS: &str = "urn:nhs:names:services:gpconnect:documents:fhir";

fn check(method: Method, path: &str, interaction: &str) -> Result<(), &'static str> {
    let mut h = HeaderMap::new();
    h.insert("ssp-interactionid", HeaderValue::from_str(interaction).unwrap());
    let f = parse(&method, path, None, &h);
    check_spine_interaction(&f, &method)
}

#[test]
fn interactions_that_agree_with_their_request() {
    let base = "/B82617/STU3/1/gpconnect/fhir";
    let cases = [
        (Method::GET, "/Patient/9990000018", format!("{GPC}:rest:read:patient-1")),
        (
            Method::HEAD,
            "/Patient/9990000018",
            format!("{GPC}:rest:read:patient-1"),
        ),
        (Method::GET, "/Patient", format!("{GPC}:rest:search:patient-1")),
        (Method::POST, "/Patient/_search", format!("{GPC}:rest:search:patient-1")),
        (Method::GET, "/Slot", format!("{GPC}:rest:search:slot-1")),
        (Method::POST, "/Appointment", format!("{GPC}:rest:create:appointment-1")),
        (
            Method::PUT,
            "/Appointment/a1",
            format!("{GPC}:rest:update:appointment-1"),
        ),
        (
            Method::PUT,
            "/Appointment/a1",
            format!("{GPC}:rest:cancel:appointment-1"),
        ),
        (
            Method::POST,
            "/Patient/$gpc.getstructuredrecord",
            format!("{GPC}:operation:gpc.getstructuredrecord-1"),
        ),
        // 0.x ids have no version.
        (
            Method::POST,
            "/Patient/$gpc.getcarerecord",
            format!("{GPC}:operation:gpc.getcarerecord"),
        ),
        (Method::GET, "/metadata", format!("{GPC}:rest:read:metadata-1")),
        (
            Method::GET,
            "/Patient/1/Appointment",
            format!("{GPC}:rest:search:patient_appointments-1"),
        ),
        (
            Method::GET,
            "/Patient/1/DocumentReference",
            format!("{DOCS}:rest:search:documentreference-1"),
        ),
        (Method::GET, "/Binary/b1", format!("{DOCS}:rest:read:binary-1")),
        (Method::GET, "/Binary/b1", format!("{DOCS}:rest:migrate:binary-1")),
        (
            Method::GET,
            "/Practitioner/p1",
            format!("{GPC}:rest:read:practitioner-1"),
        ),
    ];
    for (m, path, id) in cases {
        let path = format!("{base}{path}");
        assert_eq!(check(m.clone(), &path, &id), Ok(()), "{m} {path} {id}");
    }
}

#[test]
fn interactions_that_do_not() {
    let cases = [
        (
            Method::POST,
            "/fhir/Patient/9990000018",
            format!("{GPC}:rest:read:patient-1"),
        ),
        (Method::GET, "/fhir/Patient", format!("{GPC}:rest:read:patient-1")),
        (
            Method::GET,
            "/fhir/Organization/o1",
            format!("{GPC}:rest:read:patient-1"),
        ),
        (
            Method::GET,
            "/fhir/Patient/9990000018",
            format!("{GPC}:rest:search:patient-1"),
        ),
        (Method::DELETE, "/fhir/Patient", format!("{GPC}:rest:search:patient-1")),
        (
            Method::GET,
            "/fhir/Appointment",
            format!("{GPC}:rest:create:appointment-1"),
        ),
        (Method::POST, "/fhir/Slot", format!("{GPC}:rest:create:appointment-1")),
        (
            Method::POST,
            "/fhir/Appointment/a1",
            format!("{GPC}:rest:update:appointment-1"),
        ),
        (
            Method::PUT,
            "/fhir/Appointment",
            format!("{GPC}:rest:cancel:appointment-1"),
        ),
        (Method::PUT, "/fhir/Slot/s1", format!("{GPC}:rest:update:appointment-1")),
        (
            Method::POST,
            "/fhir/Patient/$gpc.migratestructuredrecord",
            format!("{GPC}:operation:gpc.getstructuredrecord-1"),
        ),
        (
            Method::POST,
            "/fhir/Patient",
            format!("{GPC}:operation:gpc.getstructuredrecord-1"),
        ),
        (
            Method::DELETE,
            "/fhir/Patient/$gpc.getstructuredrecord",
            format!("{GPC}:operation:gpc.getstructuredrecord-1"),
        ),
        (Method::GET, "/fhir/Patient/1", format!("{GPC}:rest:read:metadata-1")),
        (
            Method::GET,
            "/fhir/Patient/1/Slot",
            format!("{GPC}:rest:search:patient_appointments-1"),
        ),
        (
            Method::GET,
            "/fhir/Binary/b1",
            format!("{DOCS}:rest:search:documentreference-1"),
        ),
        (Method::GET, "/nowhere", format!("{GPC}:rest:read:patient-1")),
    ];
    for (m, path, id) in cases {
        let err = check(m.clone(), path, &id).expect_err(&format!("{m} {path} {id}"));
        assert!(err.starts_with("Ssp-InteractionID "), "{err}");
        for echoed in ["patient", "appointment", "gpc.", "Slot", "fhir:"] {
            assert!(!err.contains(echoed), "no input echoed: {err}");
        }
    }
}

#[test]
fn ids_that_are_not_gp_connect_are_not_checked() {
    for id in [
        "urn:nhs:names:services:pds:QUPA_IN000008UK02",
        "urn:nhs:names:services:nrl:DocumentReference.content.read",
        "urn:nhs:names:services:gpconnect:fhir:rest:frobnicate:patient-1",
        "urn:nhs:names:services:gpconnect:fhir:rest:read",
        "urn:nhs:names:services:gpconnect:a:b:fhir:rest:read:patient-1",
        "urn:nhs:names:services:gpconnect",
        "anything",
    ] {
        assert_eq!(check(Method::DELETE, "/fhir/Patient/1", id), Ok(()), "{id}");
    }
    // No header: nothing to check.
    let f = get("/fhir/Patient/1", None);
    assert_eq!(check_spine_interaction(&f, &Method::POST), Ok(()));
}
