//! `clinical::parse` (method, path, query, headers) and `clinical::inspect_body` (content type
//! and body), then `check_spine_interaction`, on a request written as text:
//!
//! ```text
//! [#]METHOD /path?query          (a leading # reads Patient ids as opaque, not NHS numbers)
//! Name: value                    (headers, up to an empty line)
//!
//! body
//! ```
//!
//! Properties: no panic; the facts stay within their documented bounds (at most `MAX_NAMED`
//! per list, NHS numbers distinct and valid) and serialise as the audit record's `clinical`.
#![no_main]

use caregate::clinical::{self, Facts, Options, MAX_NAMED};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;

fn check(f: &Facts) {
    let c = &f.clinical;
    assert!(c.nhs_numbers.len() <= MAX_NAMED, "{} NHS numbers", c.nhs_numbers.len());
    assert!(c.patient_ids.len() <= MAX_NAMED, "{} patient ids", c.patient_ids.len());
    assert!(c.study_uids.len() <= MAX_NAMED, "{} studies", c.study_uids.len());
    for (i, n) in c.nhs_numbers.iter().enumerate() {
        assert!(
            clinical::nhs_number_valid(n),
            "invalid NHS number recorded as one: {n:?}"
        );
        assert!(!c.nhs_numbers[..i].contains(n), "NHS number {n:?} recorded twice");
    }
    if let Some(n) = &c.nhs_number {
        assert_eq!(
            c.nhs_numbers.first(),
            Some(n),
            "nhs_number is not the first of nhs_numbers"
        );
    }
    serde_json::to_vec(c).expect("clinical facts serialise");
}

fuzz_target!(|data: &[u8]| {
    let (opaque, data) = match data.strip_prefix(b"#") {
        Some(rest) => (true, rest),
        None => (false, data),
    };
    let opts = Options {
        patient_ids_are_nhs_numbers: !opaque,
    };
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let (method, target) = match first.iter().position(|&b| b == b' ') {
        Some(i) => (&first[..i], &first[i + 1..]),
        None => (&b"GET"[..], first),
    };
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let target = String::from_utf8_lossy(target);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (&*target, None),
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(i) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..i]),
            HeaderValue::from_bytes(line[i + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }

    let mut facts = clinical::parse(&method, path, query, &headers, &opts);
    check(&facts);
    let _ = clinical::check_spine_interaction(&facts, &method);
    let _ = clinical::looks_like_fhir(path, &headers);

    let ct = headers.get(http::header::CONTENT_TYPE).map(HeaderValue::as_bytes);
    if clinical::inspectable(ct) {
        let _ = clinical::inspect_body(ct, body, &opts, &mut facts);
        check(&facts);
    } else {
        // A body of a type that is not read names nothing.
        let before = facts.clone();
        assert!(clinical::inspect_body(ct, body, &opts, &mut facts).is_ok());
        assert_eq!(before, facts, "a body that is not inspectable changed the facts");
    }
});
