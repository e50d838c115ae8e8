//! Clinical facts from FHIR, DICOMweb and Spine-style requests, for the audit record and for
//! policy rules that name resources or interactions.
//!
//! Everything here is a pure function of the request head: cheap (nothing is allocated unless
//! something clinical is found), total (junk gives empty facts, never a panic or an error), and
//! silent: patient identifiers must never reach operational logs, so this module logs nothing.

mod jwt;
mod pending;
pub use pending::*;
mod nhs;

pub use nhs::nhs_number_valid;

use crate::audit::record::Clinical;
use http::header::{HeaderName, AUTHORIZATION};
use http::{HeaderMap, Method};
use nhs::{percent_decode, ten_digits};
use std::borrow::Cow;

/// What the request says about patients and clinical interactions: written to the audit
/// record and used by policy rules that name resources or interactions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// The audit record's `clinical` member.
    pub clinical: Clinical,
    /// FHIR interaction (`read`, `vread`, `search-type`, `create`, `$gpc.getstructuredrecord`…).
    pub fhir_interaction: Option<String>,
    /// `Ssp-InteractionID` as sent.
    pub spine_interaction: Option<String>,
    /// An NHS number in a Patient path or identifier search that fails the modulus 11 check.
    pub invalid_nhs_number: Option<String>,
}

const SSP_TRACE_ID: HeaderName = HeaderName::from_static("ssp-traceid");
const SSP_INTERACTION_ID: HeaderName = HeaderName::from_static("ssp-interactionid");

/// The identifier systems of an NHS number (GP Connect and Care Connect use https; some older
/// clients still send http).
const NHS_SYSTEMS: [&str; 2] = ["https://fhir.nhs.uk/Id/nhs-number", "http://fhir.nhs.uk/Id/nhs-number"];

/// Parses what it can; never fails and never blocks a request it cannot parse.
pub fn parse(method: &Method, path: &str, query: Option<&str>, headers: &HeaderMap) -> Facts {
    let mut f = Facts::default();
    let dicom = dicom_path(&mut f.clinical, path);
    fhir_path(&mut f, method, path, dicom);
    if let Some(q) = query {
        query_params(&mut f, q);
    }
    if let Some(v) = headers.get(SSP_TRACE_ID) {
        f.clinical.trace_id = header_text(v.as_bytes());
    }
    if let Some(v) = headers.get(SSP_INTERACTION_ID) {
        f.spine_interaction = header_text(v.as_bytes());
    }
    if let Some(v) = headers.get(AUTHORIZATION) {
        let t = jwt::read(v.as_bytes());
        if t.org.is_some() || t.practitioner.is_some() {
            f.clinical.token = Some(crate::audit::record::Token {
                organisation: t.org,
                practitioner: t.practitioner,
                ..Default::default()
            });
        }
    }
    f.clinical.interaction = f.spine_interaction.clone().or_else(|| f.fhir_interaction.clone());
    f
}

/// Whether a request that reached no FHIR route still looks like FHIR, so that its refusal is
/// an OperationOutcome a FHIR client can read: a path segment naming FHIR (`/fhir/`,
/// `…/structured/fhir/…`), a `$operation` segment, or a FHIR media type in `Accept` or
/// `Content-Type` (`application/fhir+json`, STU3's `application/json+fhir`). Cheap and
/// conservative: anything else keeps the plain JSON of SPEC §4.
pub fn looks_like_fhir(path: &str, headers: &HeaderMap) -> bool {
    let says_fhir = |b: &[u8]| b.windows(4).any(|w| w.eq_ignore_ascii_case(b"fhir"));
    path.split('/')
        .any(|s| says_fhir(s.as_bytes()) || operation(s).is_some())
        || [http::header::ACCEPT, http::header::CONTENT_TYPE]
            .iter()
            .any(|h| headers.get_all(h).iter().any(|v| says_fhir(v.as_bytes())))
}

/// A header value worth recording: visible ASCII, at most 256 bytes.
fn header_text(v: &[u8]) -> Option<String> {
    let ok = !v.is_empty() && v.len() <= 256 && v.iter().all(|b| b.is_ascii_graphic());
    // Checked above: every byte is ASCII.
    ok.then(|| v.iter().map(|&b| b as char).collect())
}

// === FHIR ===

/// `Patient`, `DocumentReference`: an ASCII capital, then letters, at least one lowercase
/// (so that `STU3`, `R4` and ODS codes like `B82617` are not taken for types).
fn is_fhir_type(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() <= 64
        && b.first().is_some_and(u8::is_ascii_uppercase)
        && b.iter().all(u8::is_ascii_alphabetic)
        && b.iter().any(u8::is_ascii_lowercase)
}

/// A FHIR logical id: `[A-Za-z0-9\-\.]{1,64}`.
fn is_fhir_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `$name` (also sent as `%24name`), the name being `[A-Za-z0-9._-]{1,64}`.
fn operation(seg: &str) -> Option<Cow<'_, str>> {
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

fn fhir_path(f: &mut Facts, method: &Method, path: &str, dicom: bool) {
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
    if rest.is_some() {
        return;
    }
    let m = method;
    let interaction: Option<Cow<'_, str>> = match (a, b, c) {
        (None, _, _) => type_level(m).map(Cow::Borrowed),
        (Some("_search"), None, _) if is_read(m) || m == Method::POST => Some("search-type".into()),
        (Some("_history"), None, _) if is_read(m) => Some("history-type".into()),
        (Some(op), None, _) if op.starts_with(['$', '%']) => operation(op),
        (Some(id), rest, c) if is_fhir_id(id) => {
            f.clinical.fhir_id = Some(id.to_string());
            if ty == "Patient" && ten_digits(id) {
                if nhs_number_valid(id) {
                    f.clinical.nhs_number = Some(id.to_string());
                } else {
                    f.invalid_nhs_number = Some(id.to_string());
                }
            }
            match (rest, c) {
                (None, _) => instance_level(m).map(Cow::Borrowed),
                (Some("_history"), None) if is_read(m) => Some("history-instance".into()),
                (Some("_history"), Some(v)) if is_read(m) && is_fhir_id(v) => Some("vread".into()),
                (Some(op), None) => operation(op),
                _ => None,
            }
        }
        _ => None,
    };
    f.fhir_interaction = interaction.map(Cow::into_owned);
}

fn is_read(m: &Method) -> bool {
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

// === DICOMweb ===

/// A DICOM UID: digits and dots, at most 64, starting and ending with a digit.
fn is_uid(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=64).contains(&b.len())
        && b.iter().all(|&c| c.is_ascii_digit() || c == b'.')
        && b[0].is_ascii_digit()
        && b[b.len() - 1].is_ascii_digit()
}

/// Study and series UIDs from `…/studies/{uid}/series/{uid}/…`; true when the path is
/// DICOMweb-shaped (has a `studies`, `series` or `instances` segment).
fn dicom_path(c: &mut Clinical, path: &str) -> bool {
    let mut dicom = false;
    let mut prev = "";
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        match prev {
            "studies" if c.study_uid.is_none() && is_uid(seg) => c.study_uid = Some(seg.to_string()),
            "series" if c.series_uid.is_none() && is_uid(seg) => c.series_uid = Some(seg.to_string()),
            _ => {}
        }
        dicom |= matches!(seg, "studies" | "series" | "instances");
        prev = seg;
    }
    dicom
}

// === query ===

/// What a query parameter can tell us.
enum Param {
    /// An identifier search, possibly chained through the patient (`patient.identifier`).
    Identifier,
    /// A reference to the patient (`patient=Patient/9990000018`).
    PatientRef,
    Study,
    Series,
}

fn param(key: &str) -> Option<Param> {
    Some(match key {
        "identifier"
        | "patient.identifier"
        | "subject.identifier"
        | "patient:Patient.identifier"
        | "subject:Patient.identifier" => Param::Identifier,
        "patient" | "subject" | "patient:Patient" | "subject:Patient" => Param::PatientRef,
        "StudyInstanceUID" => Param::Study,
        "SeriesInstanceUID" => Param::Series,
        k if k.eq_ignore_ascii_case("0020000D") => Param::Study,
        k if k.eq_ignore_ascii_case("0020000E") => Param::Series,
        _ => return None,
    })
}

fn query_params(f: &mut Facts, q: &str) {
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        // Keys are short and rarely encoded; decode only when they are (`patient%3APatient`).
        let Some(key) = percent_decode(k) else {
            continue;
        };
        let Some(p) = param(&key) else { continue };
        let Some(v) = percent_decode(v) else { continue };
        match p {
            Param::Identifier => {
                for item in v.split(',') {
                    let Some((system, value)) = item.split_once('|') else {
                        continue;
                    };
                    if NHS_SYSTEMS.contains(&system) && ten_digits(value) {
                        nhs_number(f, value, true);
                    }
                }
            }
            Param::PatientRef => {
                for item in v.split(',') {
                    let id = match item.rsplit_once('/') {
                        Some((prefix, id)) if prefix.ends_with("Patient") => id,
                        Some(_) => continue,
                        None => item,
                    };
                    if ten_digits(id) {
                        nhs_number(f, id, false);
                    }
                }
            }
            Param::Study if f.clinical.study_uid.is_none() && is_uid(&v) => {
                f.clinical.study_uid = Some(v.into_owned());
            }
            Param::Series if f.clinical.series_uid.is_none() && is_uid(&v) => {
                f.clinical.series_uid = Some(v.into_owned());
            }
            Param::Study | Param::Series => {}
        }
    }
}

/// Records a ten-digit number found in the query. A failed check digit is only an invalid NHS
/// number in an identifier search (`identified_as_nhs`): a 10-digit logical id in a reference
/// may be the server's own id, not an NHS number.
fn nhs_number(f: &mut Facts, n: &str, identified_as_nhs: bool) {
    if nhs_number_valid(n) {
        if f.clinical.nhs_number.is_none() {
            f.clinical.nhs_number = Some(n.to_string());
        }
    } else if identified_as_nhs && f.invalid_nhs_number.is_none() {
        f.invalid_nhs_number = Some(n.to_string());
    }
}

#[cfg(test)]
mod tests;
