//! Query strings (and form bodies of `POST [type]/_search`): the patients a FHIR search names,
//! and the studies and patients a DICOM query names.
//!
//! - `identifier` (an OR list): NHS numbers by system, or with no system when the value is a
//!   valid NHS number; on a Patient search, every other identifier too (`system|value`);
//! - `patient`, `subject` (`:Patient`): references, `system|value` tokens, bare ids;
//! - `patient.identifier`, `subject.identifier`, `subject:Patient.identifier`,
//!   `patient:identifier`, `subject:identifier`: the patient's identifiers;
//! - `_id` on Patient, `patient._id`: logical ids;
//! - any other parameter whose value holds a Patient reference or an NHS-number identifier
//!   (`performer=Patient/1`, `_has:…:patient:identifier=…|…`);
//! - DICOM `StudyInstanceUID`, `SeriesInstanceUID`, `PatientID` and WADO-URI's UIDs.

use super::dicom;
use super::names;
use super::nhs::percent_decode;
use super::{Facts, Options};

/// What a FHIR search parameter can tell us.
enum Param {
    /// Identifiers; `patients`: every one is a patient's, not only NHS numbers.
    Identifier {
        patients: bool,
    },
    /// A reference to the patient.
    Reference,
    /// Patient logical ids.
    LogicalId,
    Dicom(dicom::Param),
    /// Says nothing of a patient (`identifier:missing=true`).
    Nothing,
}

fn param(key: &str, patient_search: bool) -> Option<Param> {
    if let Some(p) = dicom::param(key) {
        return Some(Param::Dicom(p));
    }
    let cut = key.find([':', '.']).unwrap_or(key.len());
    let (base, rest) = key.split_at(cut);
    if rest == ":missing" {
        return Some(Param::Nothing);
    }
    Some(match (base, rest) {
        ("identifier", _) => Param::Identifier {
            patients: patient_search,
        },
        ("_id", _) if patient_search => Param::LogicalId,
        ("patient" | "subject", "" | ":Patient" | ":not") => Param::Reference,
        ("patient" | "subject", ".identifier" | ":identifier" | ":Patient.identifier") => {
            Param::Identifier { patients: true }
        }
        ("patient" | "subject", "._id" | ":Patient._id") => Param::LogicalId,
        _ => return None,
    })
}

/// Whether a value of a parameter we do not know is worth decoding: it mentions a Patient or an
/// NHS-number system. Checked on the raw value, so that nothing is allocated otherwise.
fn worth_a_look(raw: &str) -> bool {
    raw.contains("Patient") || raw.contains("nhs-number") || raw.contains("2.16.840.1.113883.2.1.4.1")
}

/// Reads every parameter of a query string (or form body) into `f`. The resource searched
/// (the compartment's target in `Patient/{id}/Observation`) decides whether `identifier` and
/// `_id` are a patient's.
pub(super) fn params(f: &mut Facts, q: &str, opts: &Options) {
    let patient_search = f.fhir_compartment_type.as_deref().or(f.clinical.fhir_type.as_deref()) == Some("Patient");
    for pair in q.split('&') {
        let (k, raw) = pair.split_once('=').unwrap_or((pair, ""));
        if raw.is_empty() {
            continue;
        }
        // Keys are short and rarely encoded; decode only when they are (`patient%3APatient`).
        let Some(key) = percent_decode(k) else {
            continue;
        };
        let p = param(&key, patient_search);
        if p.is_none() && !worth_a_look(raw) {
            continue;
        }
        let Some(v) = percent_decode(raw) else { continue };
        match p {
            Some(Param::Dicom(d)) => dicom::value(f, d, &v),
            Some(Param::Nothing) => {}
            Some(Param::Identifier { patients }) => {
                for item in v.split(',') {
                    names::token(f, item, patients);
                }
            }
            Some(Param::Reference) => {
                for item in v.split(',') {
                    names::reference_value(f, item, opts);
                }
            }
            Some(Param::LogicalId) => {
                for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                    names::patient_id(f, item, opts, false);
                }
            }
            None => {
                for item in v.split(',') {
                    if let Some(id) = names::patient_in_reference(item) {
                        names::patient_id(f, id, opts, false);
                    } else if item.contains('|') {
                        names::token(f, item, false);
                    }
                }
            }
        }
    }
}
