//! FHIR searches: every patient a query names, in the order named.

use super::*;

const NHS: &str = "https://fhir.nhs.uk/Id/nhs-number";

#[test]
fn identifier_or_lists_and_repeats_record_every_number() {
    for q in [
        format!("identifier={NHS}|9990000018,{NHS}|9990000026"),
        format!("identifier={NHS}|9990000018&identifier={NHS}|9990000026"),
        format!("identifier={NHS}%7C9990000018%2C{NHS}%7C9990000026"),
        format!("identifier={NHS}|9990000018,{NHS}|9990000026,{NHS}|9990000018"),
    ] {
        let f = get("/fhir/Patient", Some(&q));
        assert_eq!(named(&f), (vec!["9990000018", "9990000026"], vec![], vec![]), "{q}");
        assert_eq!(f.invalid_nhs_number, None, "{q}");
    }
}

#[test]
fn identifier_systems_of_the_nhs_number() {
    for q in [
        "identifier=https://fhir.nhs.uk/Id/nhs-number|9990000034",
        "identifier=http://fhir.nhs.net/Id/nhs-number|9990000034",
        "identifier=http://fhir.nhs.uk/Id/nhs-number|9990000034",
        "identifier=urn:oid:2.16.840.1.113883.2.1.4.1|9990000034",
        "identifier=|9990000034",
        "identifier=%7C9990000034",
        "identifier=9990000034",
    ] {
        let f = get("/fhir/Patient", Some(q));
        assert_eq!(named(&f), (vec!["9990000034"], vec![], vec![]), "{q}");
    }
    // With an NHS-number system, on any resource: the number is the patient's.
    let f = get(
        "/fhir/DocumentReference",
        Some("identifier=http://fhir.nhs.net/Id/nhs-number|9990000034"),
    );
    assert_eq!(named(&f), (vec!["9990000034"], vec![], vec![]));
}

#[test]
fn identifier_forms() {
    // Other systems on a Patient search: the patient's identifiers, with their system.
    let f = get(
        "/fhir/Patient",
        Some("identifier=https://example.org/mrn|12345,|A-1,B2,9990000018"),
    );
    assert_eq!(
        named(&f),
        (
            vec!["9990000018"],
            vec!["https://example.org/mrn|12345", "A-1", "B2"],
            vec![]
        )
    );
    // A malformed NHS number is still a patient id (and not an invalid one: not ten digits).
    let f = get("/fhir/Patient", Some(&format!("identifier={NHS}|999%200000018")));
    assert_eq!(
        named(&f),
        (vec![], vec!["https://fhir.nhs.uk/Id/nhs-number|999 0000018"], vec![])
    );
    assert_eq!(f.invalid_nhs_number, None);
    // On other resources, an identifier of another system is that resource's, not a patient's.
    let f = get(
        "/fhir/Observation",
        Some("identifier=https://example.org/obs|12345,9990000018"),
    );
    assert_eq!(named(&f), (vec![], vec![], vec![]));
    // `:missing` names nobody.
    assert_eq!(
        named(&get("/fhir/Patient", Some("identifier:missing=true"))),
        (vec![], vec![], vec![])
    );
}

#[test]
fn chained_and_modified_patient_identifiers() {
    for key in [
        "patient.identifier",
        "subject.identifier",
        "subject:Patient.identifier",
        "patient:Patient.identifier",
        "subject:identifier",
        "patient:identifier",
        "subject%3APatient.identifier",
        "patient%3Aidentifier",
    ] {
        let q = format!("{key}={NHS}|9990000018,https://example.org/mrn|77&{key}=9990000026");
        let f = get("/fhir/Observation", Some(&q));
        assert_eq!(
            named(&f),
            (
                vec!["9990000018", "9990000026"],
                vec!["https://example.org/mrn|77"],
                vec![]
            ),
            "{key}"
        );
    }
}

#[test]
fn patient_references_in_searches() {
    let f = get(
        "/fhir/Observation",
        Some("patient=Patient/9990000018,Patient/abc&subject=https://epr.example/fhir/Patient/9990000026/_history/3"),
    );
    assert_eq!(named(&f), (vec!["9990000018", "9990000026"], vec!["abc"], vec![]));
    let f = get(
        "/fhir/Observation",
        Some("subject=https://x/fhir/Patient/abc&subject:Patient=def"),
    );
    assert_eq!(named(&f), (vec![], vec!["abc", "def"], vec![]));
    // An identifier token where a reference goes (NHS APIs accept it): the patient's.
    let f = get("/fhir/AllergyIntolerance", Some(&format!("patient={NHS}|9990000034")));
    assert_eq!(named(&f), (vec!["9990000034"], vec![], vec![]));
    // A URL that ends in a number: kept.
    let f = get(
        "/fhir/AllergyIntolerance",
        Some("patient=https://fhir.nhs.uk/Id/9990000034"),
    );
    assert_eq!(named(&f), (vec!["9990000034"], vec![], vec![]));
    // References to other resources are not patients.
    let f = get("/fhir/Observation", Some("subject=Group/9990000034&subject=Device/d1"));
    assert_eq!(named(&f), (vec![], vec![], vec![]));
}

#[test]
fn patient_logical_ids() {
    let f = get("/fhir/Patient", Some("_id=9990000018,abc-1&_id=9990000026"));
    assert_eq!(named(&f), (vec!["9990000018", "9990000026"], vec!["abc-1"], vec![]));
    let f = get(
        "/fhir/Observation",
        Some("patient._id=p1&subject:Patient._id=9990000034"),
    );
    assert_eq!(named(&f), (vec!["9990000034"], vec!["p1"], vec![]));
    // `_id` of another resource is that resource's.
    assert_eq!(
        named(&get("/fhir/Observation", Some("_id=o1"))),
        (vec![], vec![], vec![])
    );
    // A bad check digit in `_id` or a reference: the server's own id, perhaps; recorded, not refused.
    let f = get("/fhir/Patient", Some("_id=9990000019"));
    assert_eq!(named(&f), (vec![], vec!["9990000019"], vec![]));
    assert_eq!(f.invalid_nhs_number, None);
}

#[test]
fn other_parameters_naming_patients() {
    let f = get(
        "/fhir/Appointment",
        Some(&format!(
            "actor=Patient/9990000018&_has:Observation:patient:identifier={NHS}|9990000026&performer=Patient%2Fp9&date=ge2024"
        )),
    );
    assert_eq!(named(&f), (vec!["9990000018", "9990000026"], vec!["p9"], vec![]));
    // Other systems in unknown parameters identify other things.
    let f = get(
        "/fhir/Slot",
        Some("searchFilter=https://fhir.nhs.uk/Id/ods-organization-code|A1001&status=free"),
    );
    assert_eq!(named(&f), (vec![], vec![], vec![]));
}

#[test]
fn compartment_searches_name_the_compartment_patient() {
    let f = get(
        "/fhir/Patient/9990000018/Observation",
        Some("identifier=https://example.org/obs|1&patient=9990000026"),
    );
    assert_eq!(named(&f), (vec!["9990000018", "9990000026"], vec![], vec![]));
    assert_eq!(f.fhir_interaction.as_deref(), Some("search-compartment"));
    assert_eq!(f.fhir_compartment_type.as_deref(), Some("Observation"));
    assert_eq!(f.clinical.fhir_type.as_deref(), Some("Patient"));
}

#[test]
fn path_then_query_then_token_order() {
    let f = get(
        "/fhir/Patient/9990000018/$everything",
        Some("patient=9990000026&patient=9990000018"),
    );
    assert_eq!(named(&f), (vec!["9990000018", "9990000026"], vec![], vec![]));
    assert_eq!(f.clinical.nhs_number.as_deref(), Some("9990000018"));
}
