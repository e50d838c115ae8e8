//! The clinical facts parsed from requests, by subject: FHIR paths and interactions, NHS
//! numbers, FHIR searches, DICOMweb UIDs, Spine headers and interaction IDs, tokens, bodies,
//! route options, hostile input and deterministic junk.

use super::dicom::is_uid;
use super::nhs::{percent_decode, ten_digits};
use super::*;
use http::HeaderValue;
use std::borrow::Cow;

mod body;
mod dicomweb;
mod fhir;
mod hostile;
mod interaction;
mod junk;
mod nhs_numbers;
mod options;
mod search;
mod spine;
mod token;

// Verified by hand (modulus 11): valid test-range NHS numbers, and two that are not.
const VALID: [&str; 6] = [
    "9990000018",
    "9990000026",
    "9990000034",
    "9990000042",
    "9990000050",
    "9990000034",
];
const BAD_CHECK: &str = "9990000019";
/// Its first nine digits give check value 10: no valid number starts so.
const CHECK_TEN: &str = "9991234560";

/// [`super::parse`] with the default options (Patient ids are NHS numbers).
fn parse(method: &Method, path: &str, query: Option<&str>, headers: &HeaderMap) -> Facts {
    super::parse(method, path, query, headers, &Options::default())
}

fn get(path: &str, query: Option<&str>) -> Facts {
    parse(&Method::GET, path, query, &HeaderMap::new())
}

fn with(method: Method, path: &str) -> Facts {
    parse(&method, path, None, &HeaderMap::new())
}

fn b64(json: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// The `n`th valid NHS number of the test range (999…), check digit computed.
fn nth_nhs(n: u32) -> String {
    (0..)
        .map(|i| format!("999{:06}", n * 11 + i))
        .find_map(|nine| (0..10).map(|d| format!("{nine}{d}")).find(|c| nhs_number_valid(c)))
        .expect("a valid number")
}

/// What the facts say of patients and studies: (NHS numbers, patient ids, study UIDs).
fn named(f: &Facts) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
    let c = &f.clinical;
    assert_eq!(c.nhs_number.as_deref(), c.nhs_numbers.first().map(String::as_str));
    assert_eq!(c.study_uid.as_deref(), c.study_uids.first().map(String::as_str));
    fn v(l: &[String]) -> Vec<&str> {
        l.iter().map(String::as_str).collect()
    }
    (v(&c.nhs_numbers), v(&c.patient_ids), v(&c.study_uids))
}
