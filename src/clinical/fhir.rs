//! FHIR paths: the resource type, the logical id, the interaction, and the Patient a path
//! names (`Patient/{id}`, `Patient/{id}/$everything`, `Patient/{id}/_history/…`,
//! `Patient/{id}/Observation`).

use super::{names, Facts, Options};
use http::Method;
use std::borrow::Cow;

/// `Patient`, `DocumentReference`: an ASCII capital, then letters, at least one lowercase
/// (so that `STU3`, `R4` and ODS codes like `B82617` are not taken for types).
pub(super) fn is_fhir_type(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() <= 64
        && b.first().is_some_and(u8::is_ascii_uppercase)
        && b.iter().all(u8::is_ascii_alphabetic)
        && b.iter().any(u8::is_ascii_lowercase)
}

/// A FHIR logical id: `[A-Za-z0-9\-\.]{1,64}`.
pub(super) fn is_fhir_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `$name` (also sent as `%24name`), the name being `[A-Za-z0-9._-]{1,64}`.
pub(super) fn operation(seg: &str) -> Option<Cow<'_, str>> {
    let name = seg.strip_prefix('$').or_else(|| seg.strip_prefix("%24"))?;
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if !ok {
        return None;
    }
    Some(if seg.starts_with('$') {
        Cow::Borrowed(seg)
    } else {
        Cow::Owned(format!("${name}"))
    })
}

/// The type, id and interaction of a FHIR path, and the Patient it names. `dicom`: the path is
/// DICOMweb-shaped (its `metadata` is not FHIR's).
pub(super) fn path(f: &mut Facts, method: &Method, path: &str, dicom: bool, opts: &Options) {
    let mut segs = path.split('/').filter(|s| !s.is_empty());
    let mut last = None;
    let ty = loop {
        match segs.next() {
            Some(s) if is_fhir_type(s) => break s,
            Some(s) => last = Some(s),
            None => {
                // `[base]/metadata` is the capability statement (DICOMweb has its own
                // `metadata` resources under studies, series and instances).
                if last == Some("metadata") && !dicom && is_read(method) {
                    f.fhir_interaction = Some("capabilities".into());
                }
                return;
            }
        }
    };
    f.clinical.fhir_type = Some(ty.to_string());
    let (a, b, c, rest) = (segs.next(), segs.next(), segs.next(), segs.next());
    if let Some(id) = a.filter(|id| is_fhir_id(id)) {
        f.clinical.fhir_id = Some(id.to_string());
    }
    // Whatever follows, and whether or not the id is FHIR's shape, a Patient's id names the
    // patient.
    if let Some(id) = a.filter(|id| ty == "Patient" && names::is_reference_id(id)) {
        names::patient_id(f, id, opts, true);
    }
    if rest.is_some() {
        return;
    }
    let m = method;
    let interaction: Option<Cow<'_, str>> = match (a, b, c) {
        (None, _, _) => type_level(m).map(Cow::Borrowed),
        (Some("_search"), None, _) if is_read(m) || m == Method::POST => Some("search-type".into()),
        (Some("_history"), None, _) if is_read(m) => Some("history-type".into()),
        (Some(op), None, _) if op.starts_with(['$', '%']) => operation(op),
        (Some(id), rest, c) if is_fhir_id(id) => match (rest, c) {
            (None, _) => instance_level(m).map(Cow::Borrowed),
            (Some("_history"), None) if is_read(m) => Some("history-instance".into()),
            (Some("_history"), Some(v)) if is_read(m) && is_fhir_id(v) => Some("vread".into()),
            (Some(op), None) if op.starts_with(['$', '%']) => operation(op),
            // A compartment search: `Patient/{id}/Observation` (and `…/Observation/_search`).
            (Some(target), c) if is_fhir_type(target) && compartment_search(m, c) => {
                f.fhir_compartment_type = Some(target.to_string());
                Some("search-compartment".into())
            }
            _ => None,
        },
        _ => None,
    };
    f.fhir_interaction = interaction.map(Cow::into_owned);
}

fn compartment_search(m: &Method, then: Option<&str>) -> bool {
    match then {
        None => is_read(m),
        Some("_search") => is_read(m) || m == Method::POST,
        Some(_) => false,
    }
}

pub(super) fn is_read(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

/// `[type]` alone; PUT, PATCH and DELETE on it are FHIR's conditional forms.
fn type_level(m: &Method) -> Option<&'static str> {
    Some(match *m {
        Method::GET | Method::HEAD => "search-type",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => return None,
    })
}

fn instance_level(m: &Method) -> Option<&'static str> {
    Some(match *m {
        Method::GET | Method::HEAD => "read",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => return None,
    })
}
