//! `path::normalise` and `path::split_params` on arbitrary strings.
//!
//! Properties: normalise's output starts with `/`, holds no empty, `.` or `..` segment, and is
//! its own normal form; split_params removes exactly `;` + each cut, leaves no `;` behind and
//! borrows when there is nothing to cut.
#![no_main]

use caregate::path::{normalise, split_params};
use libfuzzer_sys::fuzz_target;

fn check_normal(raw: &str) {
    let Ok(n) = normalise(raw) else {
        return;
    };
    assert!(n.starts_with('/'), "{raw:?} -> {n:?}: not absolute");
    for bad in ["/../", "/./", "//"] {
        assert!(!n.contains(bad), "{raw:?} -> {n:?} holds {bad:?}");
    }
    assert!(
        !n.ends_with("/..") && !n.ends_with("/."),
        "{raw:?} -> {n:?} ends in a dot-segment"
    );
    assert_eq!(normalise(&n), Ok(n.clone()), "normalise is not idempotent on {raw:?}");
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    check_normal(&raw);

    let (path, params) = split_params(&raw);
    assert!(!path.contains(';'), "{raw:?} -> {path:?} still holds ;");
    if !raw.contains(';') {
        assert!(matches!(path, std::borrow::Cow::Borrowed(_)) && params.is_empty());
    }
    let cut: usize = params.iter().map(|p| p.len() + 1).sum();
    assert_eq!(
        path.len() + cut,
        raw.len(),
        "split_params lost or added bytes on {raw:?}"
    );
    assert!(params.len() <= raw.split('/').count());
    check_normal(&path);
});
