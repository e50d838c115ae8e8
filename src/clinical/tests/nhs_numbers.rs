//! NHS numbers: the check digit, and where in a request a number is found.

use super::*;

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
    // Other systems, other lengths and spaces are not NHS numbers (they are patient ids:
    // `search::identifier_forms`). With no system, a valid NHS number is one, and so is a
    // Patient `_id` where Patient ids are NHS numbers (`search::patient_logical_ids`).
    for q in [
        "identifier=https://example.org/mrn|9990000018",
        "identifier=https://fhir.nhs.uk/Id/nhs-number|999%200000018",
        "identifier=https://fhir.nhs.uk/Id/nhs-number|999000001",
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
        // Any parameter's reference to a Patient names that patient.
        "performer=Patient/9990000034",
    ] {
        let f = get("/fhir/Observation", Some(q));
        assert_eq!(f.clinical.nhs_number.as_deref(), Some("9990000034"), "{q}");
    }
    for q in ["subject=Group/9990000034", "patient=Patient/9990000019"] {
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
fn percent_decoding() {
    assert_eq!(percent_decode("a%7Cb").as_deref(), Some("a|b"));
    assert_eq!(percent_decode("a%7cb+c").as_deref(), Some("a|b c"));
    assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
    assert_eq!(percent_decode("%zz%2").as_deref(), Some("%zz%2"));
    assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
    assert_eq!(percent_decode("%FF"), None);
    assert!(matches!(percent_decode("plain"), Some(Cow::Borrowed("plain"))));
}
