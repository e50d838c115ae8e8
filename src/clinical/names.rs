//! Recording the patients and studies a request names: each once, in the order found, and
//! bounded, so that a hostile request costs little and its record stays finite.
//!
//! Every way a request can name a patient ends here: a Patient's logical id (path, `_id`,
//! reference), an identifier (`system|value`), a DICOM `PatientID`, a study UID.

use super::fhir::is_fhir_type;
use super::nhs::{is_nhs_number_system, nhs_number_valid, ten_digits};
use super::{Facts, Options};
use std::collections::HashSet;

/// At most this many distinct NHS numbers, patient ids and study UIDs each are recorded; past
/// it, [`Facts::unrecorded`] is set.
pub const MAX_NAMED: usize = 1000;
/// The longest patient id recorded (`system|value`); a longer one sets [`Facts::unrecorded`].
pub const MAX_ID: usize = 256;
/// Lists up to this long are searched for duplicates in place; longer ones get a hash index.
const SCAN: usize = 16;

/// The hash index of what has been recorded, once a list outgrows a linear scan. An index,
/// not a fact: it never makes two sets of facts differ.
#[derive(Debug, Clone, Default)]
pub(super) struct Seen(Option<Box<[HashSet<String>; 3]>>);

impl PartialEq for Seen {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Nhs = 0,
    Patient = 1,
    Study = 2,
}

/// Whether `id` is new to its list and there is room for it; sets `unrecorded` when there is not.
fn fresh(f: &mut Facts, kind: Kind, id: &str) -> bool {
    let c = &f.clinical;
    let lists = [&c.nhs_numbers, &c.patient_ids, &c.study_uids];
    let list = lists[kind as usize];
    let known = match &f.seen.0 {
        Some(sets) => sets[kind as usize].contains(id),
        None => list.iter().any(|x| x == id),
    };
    if known {
        return false;
    }
    if list.len() >= MAX_NAMED {
        f.unrecorded = true;
        return false;
    }
    if f.seen.0.is_none() && list.len() >= SCAN {
        f.seen.0 = Some(Box::new(lists.map(|l| l.iter().cloned().collect())));
    }
    if let Some(sets) = &mut f.seen.0 {
        sets[kind as usize].insert(id.to_string());
    }
    true
}

/// A valid NHS number.
pub(super) fn nhs(f: &mut Facts, n: &str) {
    if fresh(f, Kind::Nhs, n) {
        f.clinical.add_nhs_number(n);
    }
}

/// A patient id that is not a valid NHS number: recorded if it is text of at most [`MAX_ID`]
/// bytes without control characters; otherwise [`Facts::unrecorded`] says a patient was named
/// that the record cannot hold.
pub(super) fn patient(f: &mut Facts, id: &str) {
    let id = id.trim();
    if id.is_empty() {
        return;
    }
    if id.len() > MAX_ID || id.chars().any(char::is_control) {
        f.unrecorded = true;
        return;
    }
    if fresh(f, Kind::Patient, id) {
        f.clinical.add_patient_id(id);
    }
}

/// A study instance UID (already checked to be one).
pub(super) fn study(f: &mut Facts, uid: &str) {
    if fresh(f, Kind::Study, uid) {
        f.clinical.add_study_uid(uid);
    }
}

/// A number the request says is an NHS number but whose check digit is wrong: refused where
/// the route checks NHS numbers, and still recorded (as a patient id) where it does not.
fn invalid(f: &mut Facts, n: &str) {
    if f.invalid_nhs_number.is_none() {
        f.invalid_nhs_number = Some(n.to_string());
    }
}

/// A Patient's logical id: from the path (`strict`: a bad check digit there is an invalid
/// NHS number), `_id`, or a reference. Where the route says Patient ids are NHS numbers, a
/// 10-digit id is one; elsewhere every id is a patient id.
pub(super) fn patient_id(f: &mut Facts, id: &str, opts: &Options, strict: bool) {
    if opts.patient_ids_are_nhs_numbers && ten_digits(id) {
        if nhs_number_valid(id) {
            return nhs(f, id);
        }
        if strict {
            invalid(f, id);
        }
    }
    patient(f, id);
}

/// An identifier, `system|value` (`system` is `None` when none was given, `Some("")` when an
/// empty one was). One with an NHS-number system is always a patient's; others only where
/// `patients` says the identifiers are patients' (a Patient search, a `patient.identifier`
/// chain, a Patient resource): elsewhere they identify something else.
pub(super) fn identifier(f: &mut Facts, system: Option<&str>, value: &str, patients: bool) {
    let value = value.trim();
    if value.is_empty() {
        return;
    }
    match system {
        Some(s) if is_nhs_number_system(s) => {
            if nhs_number_valid(value) {
                nhs(f, value);
            } else {
                if ten_digits(value) {
                    invalid(f, value);
                }
                patient(f, &format!("{s}|{value}"));
            }
        }
        _ if !patients => {}
        None | Some("") if nhs_number_valid(value) => nhs(f, value),
        None | Some("") => patient(f, value),
        Some(s) => patient(f, &format!("{s}|{value}")),
    }
}

/// A `system|value` token (or a bare value) as sent in a search or a parameter.
pub(super) fn token(f: &mut Facts, t: &str, patients: bool) {
    match t.split_once('|') {
        Some((s, v)) => identifier(f, Some(s), v, patients),
        None => identifier(f, None, t, patients),
    }
}

/// The Patient id in a reference: `Patient/{id}`, `https://…/Patient/{id}`,
/// `Patient/{id}/_history/{v}`; `None` for other resources, contained (`#x`) and conditional
/// (`Patient?…`) references.
pub(super) fn patient_in_reference(r: &str) -> Option<&str> {
    let mut segs = r.split('/');
    while let Some(s) = segs.next() {
        if s == "Patient" {
            let id = segs.next()?;
            return is_reference_id(id).then_some(id);
        }
    }
    None
}

/// A logical id as a path or reference may carry it: laxer than FHIR's `[A-Za-z0-9.-]{1,64}`
/// (servers differ, and an id we reject may still be served), but not a `_search`,
/// `_history` or `$operation` (`%24operation`).
pub(super) fn is_reference_id(id: &str) -> bool {
    !id.is_empty() && !id.starts_with(['_', '$']) && !id.starts_with("%24")
}

/// A search value that refers to a patient (`patient=`, `subject=`): a Patient reference, an
/// identifier token, or a bare logical id. References to other types (`subject=Group/1`) are
/// not patients.
pub(super) fn reference_value(f: &mut Facts, v: &str, opts: &Options) {
    let v = v.trim();
    if v.is_empty() {
        return;
    }
    if let Some(id) = patient_in_reference(v) {
        return patient_id(f, id, opts, false);
    }
    if v.contains('|') {
        return token(f, v, true);
    }
    match v.rsplit_once('/') {
        // `https://fhir.nhs.uk/Id/9990000018` has been seen in the wild: keep the id.
        Some((prefix, _))
            if prefix
                .rsplit('/')
                .next()
                .is_some_and(|t| is_fhir_type(t) && t != "Id" && t != "Patient") => {}
        Some((_, id)) if is_reference_id(id) => patient_id(f, id, opts, false),
        Some(_) => {}
        None => patient_id(f, v, opts, false),
    }
}
