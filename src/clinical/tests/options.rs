//! The route's `patient_ids_are_nhs_numbers`.

use super::*;

fn opaque(path: &str, query: Option<&str>) -> Facts {
    let opts = Options {
        patient_ids_are_nhs_numbers: false,
    };
    super::super::parse(&Method::GET, path, query, &HeaderMap::new(), &opts)
}

#[test]
fn where_patient_ids_are_nhs_numbers_a_ten_digit_id_is_one() {
    let f = get("/fhir/Patient/9990000018", None);
    assert_eq!(named(&f), (vec!["9990000018"], vec![], vec![]));
    // A bad check digit in the path is an invalid NHS number, recorded as a patient id.
    let f = get("/fhir/Patient/9990000019", None);
    assert_eq!(named(&f), (vec![], vec!["9990000019"], vec![]));
    assert_eq!(f.invalid_nhs_number.as_deref(), Some("9990000019"));
}

#[test]
fn where_ids_are_opaque_every_id_is_a_patient_id() {
    for (path, q) in [
        ("/fhir/Patient/9990000018", None),
        ("/fhir/Patient/9990000018/_history/1", None),
        ("/fhir/Observation", Some("patient=Patient/9990000018")),
        ("/fhir/Observation", Some("subject=9990000018")),
        ("/fhir/Patient", Some("_id=9990000018")),
    ] {
        let f = opaque(path, q);
        assert_eq!(named(&f), (vec![], vec!["9990000018"], vec![]), "{path} {q:?}");
        assert_eq!(f.invalid_nhs_number, None);
    }
    // Not refused for a check digit: the id is no NHS number.
    let f = opaque("/fhir/Patient/9990000019", None);
    assert_eq!(named(&f), (vec![], vec!["9990000019"], vec![]));
    assert_eq!(f.invalid_nhs_number, None);
    // An identifier says what it is, whatever the ids are.
    let f = opaque(
        "/fhir/Patient",
        Some("identifier=https://fhir.nhs.uk/Id/nhs-number|9990000026,9990000034"),
    );
    assert_eq!(named(&f), (vec!["9990000026", "9990000034"], vec![], vec![]));
    let f = opaque(
        "/fhir/Patient",
        Some("identifier=https://fhir.nhs.uk/Id/nhs-number|9990000019"),
    );
    assert_eq!(f.invalid_nhs_number.as_deref(), Some("9990000019"));
}
