//! DICOMweb study and series UIDs, from paths and from QIDO queries.

use super::*;

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
    }
    // In a query, `1.2,1.3` is a UID list (QIDO-RS): see `qido_uid_lists`.
    for bad in ["1.2.x", ".1.2", "1.2.", "", "<script>", long.as_str()] {
        let f = get("/dicomweb/studies", Some(&format!("StudyInstanceUID={bad}")));
        assert_eq!(f.clinical.study_uid, None, "{bad}");
        assert!(f.clinical.study_uids.is_empty(), "{bad}");
    }
    let uid64 = "1.".repeat(31) + "12";
    assert_eq!(uid64.len(), 64);
    let f = get(&format!("/dicomweb/studies/{uid64}"), None);
    assert_eq!(f.clinical.study_uid.as_deref(), Some(uid64.as_str()));
}

#[test]
fn qido_patient_ids_and_uid_lists() {
    let f = get(
        "/dicomweb/studies",
        Some("PatientID=MRN%2F123&StudyInstanceUID=1.2.3,1.2.4%5C1.2.5&includefield=all"),
    );
    assert_eq!(named(&f), (vec![], vec!["MRN/123"], vec!["1.2.3", "1.2.4", "1.2.5"]));
    let f = get(
        "/dicomweb/series",
        Some("00100020=9990000018&0020000d=1.2.3&0020000E=4.5,4.6"),
    );
    assert_eq!(named(&f), (vec![], vec!["9990000018"], vec!["1.2.3"]));
    assert_eq!(f.clinical.series_uid.as_deref(), Some("4.5"));
    // A bare wildcard names nobody; a partial one is recorded as sent.
    assert_eq!(
        named(&get("/dicomweb/studies", Some("PatientID=*"))),
        (vec![], vec![], vec![])
    );
    assert_eq!(
        named(&get("/dicomweb/studies", Some("PatientID=12*"))),
        (vec![], vec!["12*"], vec![])
    );
}

#[test]
fn every_study_of_path_and_query() {
    let f = get(
        "/dicomweb/studies/1.2.3/series/4.5.6/instances/7.8.9",
        Some("StudyInstanceUID=1.2.7&StudyInstanceUID=1.2.3"),
    );
    assert_eq!(named(&f), (vec![], vec![], vec!["1.2.3", "1.2.7"]));
    assert_eq!(f.clinical.series_uid.as_deref(), Some("4.5.6"));
}

#[test]
fn wado_uri() {
    let f = get(
        "/wado",
        Some("requestType=WADO&studyUID=1.2.840.1&seriesUID=1.2.840.2&objectUID=1.2.840.3&contentType=application%2Fdicom"),
    );
    assert_eq!(named(&f), (vec![], vec![], vec!["1.2.840.1"]));
    assert_eq!(f.clinical.series_uid.as_deref(), Some("1.2.840.2"));
    assert_eq!(f.clinical.fhir_type, None);
}
