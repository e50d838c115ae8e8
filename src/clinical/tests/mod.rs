//! The clinical facts parsed from requests, by subject: FHIR paths and interactions, NHS
//! numbers, DICOMweb UIDs, Spine headers and tokens, and deterministic junk.

use super::*;
use http::HeaderValue;

mod dicomweb;
mod fhir;
mod junk;
mod nhs_numbers;
mod spine;

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
