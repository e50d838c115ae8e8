//! DICOMweb and WADO-URI: study and series UIDs from paths (`/studies/{uid}/series/{uid}/…`)
//! and queries (QIDO-RS `StudyInstanceUID`, `0020000D`, …; WADO-URI `studyUID`, `seriesUID`),
//! and the `PatientID` of a QIDO-RS query.

use super::{names, Facts};

/// A DICOM UID: digits and dots, at most 64, starting and ending with a digit.
pub(super) fn is_uid(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=64).contains(&b.len())
        && b.iter().all(|&c| c.is_ascii_digit() || c == b'.')
        && b[0].is_ascii_digit()
        && b[b.len() - 1].is_ascii_digit()
}

/// Study and series UIDs from `…/studies/{uid}/series/{uid}/…`; true when the path is
/// DICOMweb-shaped (has a `studies`, `series` or `instances` segment).
pub(super) fn path(f: &mut Facts, path: &str) -> bool {
    let mut dicom = false;
    let mut prev = "";
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        match prev {
            "studies" if is_uid(seg) => names::study(f, seg),
            "series" if f.clinical.series_uid.is_none() && is_uid(seg) => f.clinical.series_uid = Some(seg.to_string()),
            _ => {}
        }
        dicom |= matches!(seg, "studies" | "series" | "instances");
        prev = seg;
    }
    dicom
}

/// What a DICOM query parameter names.
pub(super) enum Param {
    Study,
    Series,
    PatientId,
}

/// QIDO-RS attributes by keyword or tag, and WADO-URI's parameters. Keywords are matched
/// without regard to case: a near miss must not hide a study.
pub(super) fn param(key: &str) -> Option<Param> {
    let is = |k: &str| key.eq_ignore_ascii_case(k);
    Some(if is("StudyInstanceUID") || is("0020000D") || is("studyUID") {
        Param::Study
    } else if is("SeriesInstanceUID") || is("0020000E") || is("seriesUID") {
        Param::Series
    } else if is("PatientID") || is("00100020") {
        Param::PatientId
    } else {
        return None;
    })
}

/// Records a decoded value. UIDs may be lists (QIDO-RS UID list matching: `,` or `\`).
pub(super) fn value(f: &mut Facts, p: Param, v: &str) {
    match p {
        Param::Study => {
            for uid in v.split([',', '\\']).filter(|u| is_uid(u)) {
                names::study(f, uid);
            }
        }
        Param::Series => {
            if let Some(uid) = v.split([',', '\\']).find(|u| is_uid(u)) {
                if f.clinical.series_uid.is_none() {
                    f.clinical.series_uid = Some(uid.to_string());
                }
            }
        }
        // A bare wildcard names nobody; anything else (`123*` too) is recorded as sent.
        Param::PatientId => {
            if !v.trim().chars().all(|c| c == '*' || c == '?') {
                names::patient(f, v);
            }
        }
    }
}
