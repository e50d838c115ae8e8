//! Clinical facts from FHIR, DICOMweb and Spine-style requests, for the audit record and for
//! policy rules that name resources or interactions: every patient a request names (issue 18,
//! "no patient access slips past the audit").
//!
//! Everything here is a pure function of the request: cheap (nothing is allocated unless
//! something clinical is found), total (junk gives bounded facts, never a panic), and silent:
//! patient identifiers must never reach operational logs, so this module logs nothing.
//!
//! - [`parse`]: the request head (path, query, `Authorization`, `Ssp-*`);
//! - [`inspect_body`]: a body that may name patients ([`inspectable`] says which);
//! - [`check_spine_interaction`]: whether `Ssp-InteractionID` agrees with the request.

mod body;
mod dicom;
mod fhir;
mod jwt;
mod names;
mod nhs;
mod search;
mod spine;

pub use body::{inspect_body, inspectable, BodyError};
pub use names::{MAX_ID, MAX_NAMED};
pub use nhs::nhs_number_valid;
pub use spine::check_spine_interaction;

use crate::audit::record::Clinical;
use http::header::AUTHORIZATION;
use http::{HeaderMap, Method};

/// What the request says about patients and clinical interactions: written to the audit
/// record and used by policy rules that name resources or interactions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// The audit record's `clinical` member.
    pub clinical: Clinical,
    /// FHIR interaction (`read`, `vread`, `search-type`, `search-compartment`, `create`,
    /// `$gpc.getstructuredrecord`…).
    pub fhir_interaction: Option<String>,
    /// The resource type a compartment search asks for (`Patient/{id}/Observation`:
    /// `Observation`; `clinical.fhir_type` is `Patient`).
    pub fhir_compartment_type: Option<String>,
    /// `Ssp-InteractionID` as sent.
    pub spine_interaction: Option<String>,
    /// A number the request says is an NHS number (a Patient path id where Patient ids are
    /// NHS numbers, an identifier with an NHS-number system) that fails the modulus 11 check.
    /// It is recorded as a patient id, never as an NHS number.
    pub invalid_nhs_number: Option<String>,
    /// The request named more than [`MAX_NAMED`] distinct NHS numbers, patient ids or studies,
    /// or a patient id longer than [`MAX_ID`]: the record holds the first ones only, so the
    /// caller should refuse the request rather than forward what it cannot record.
    pub unrecorded: bool,
    /// The index of what is recorded, for long lists.
    seen: names::Seen,
}

/// What the route says about how to read its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// A 10-digit Patient logical id that passes the check digit is an NHS number (and one that
    /// fails it is an invalid NHS number); false where ids are opaque: every id is a patient id.
    pub patient_ids_are_nhs_numbers: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            patient_ids_are_nhs_numbers: true,
        }
    }
}

impl From<&crate::config::Route> for Options {
    fn from(r: &crate::config::Route) -> Self {
        Options {
            patient_ids_are_nhs_numbers: r.patient_ids_are_nhs_numbers,
        }
    }
}

/// Parses what it can of the request head; never fails and never blocks a request it cannot
/// parse (the caller refuses on [`Facts::invalid_nhs_number`] and [`Facts::unrecorded`]).
pub fn parse(method: &Method, path: &str, query: Option<&str>, headers: &HeaderMap, opts: &Options) -> Facts {
    let mut f = Facts::default();
    let dicom = dicom::path(&mut f, path);
    fhir::path(&mut f, method, path, dicom, opts);
    if let Some(q) = query {
        search::params(&mut f, q, opts);
    }
    spine::headers(&mut f, headers);
    if let Some(v) = headers.get(AUTHORIZATION) {
        jwt::read(v.as_bytes(), &mut f);
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
        .any(|s| says_fhir(s.as_bytes()) || fhir::operation(s).is_some())
        || [http::header::ACCEPT, http::header::CONTENT_TYPE]
            .iter()
            .any(|h| headers.get_all(h).iter().any(|v| says_fhir(v.as_bytes())))
}

#[cfg(test)]
mod tests;
