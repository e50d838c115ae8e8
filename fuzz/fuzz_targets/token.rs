//! The GP Connect access token reader, through `clinical::parse` with
//! `Authorization: Bearer <token>`.
//!
//! Input: a mode byte, then either the token as sent (mode byte even) or the JWT's payload
//! (odd), which is base64url-encoded between an `alg: none` header and an empty signature, so
//! that mutations reach the claims rather than only the base64.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use caregate::clinical::{self, Options, MAX_NAMED};
use http::{HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let token = if mode % 2 == 0 {
        data.to_vec()
    } else {
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(data)
        )
        .into_bytes()
    };
    let mut value = b"Bearer ".to_vec();
    value.extend_from_slice(&token);
    let Ok(value) = HeaderValue::from_bytes(&value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value);
    let opts = Options {
        patient_ids_are_nhs_numbers: mode & 2 == 0,
    };
    let path = if mode & 4 == 0 {
        "/fhir/Patient/$gpc.getstructuredrecord"
    } else {
        "/fhir/metadata"
    };
    let f = clinical::parse(&Method::POST, path, None, &headers, &opts);
    let c = &f.clinical;
    assert!(c.nhs_numbers.len() <= MAX_NAMED && c.patient_ids.len() <= MAX_NAMED);
    for n in &c.nhs_numbers {
        assert!(
            clinical::nhs_number_valid(n),
            "invalid NHS number recorded as one: {n:?}"
        );
    }
    serde_json::to_vec(c).expect("clinical facts serialise");
});
