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
        let f = get("/dicomweb/studies", Some(&format!("StudyInstanceUID={bad}")));
        assert_eq!(f.clinical.study_uid, None, "{bad}");
    }
    let uid64 = "1.".repeat(31) + "12";
    assert_eq!(uid64.len(), 64);
    let f = get(&format!("/dicomweb/studies/{uid64}"), None);
    assert_eq!(f.clinical.study_uid.as_deref(), Some(uid64.as_str()));
}
