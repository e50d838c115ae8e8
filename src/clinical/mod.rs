//! STUB: clinical facts from FHIR, DICOMweb and Spine-style requests.

use crate::audit::record::Clinical;
use http::{HeaderMap, Method};

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

/// Parses what it can; never fails and never blocks a request it cannot parse.
pub fn parse(_method: &Method, _path: &str, _query: Option<&str>, _headers: &HeaderMap) -> Facts {
    Facts::default()
}
