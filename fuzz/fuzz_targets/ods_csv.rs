//! `directory::parse_ods_csv` on arbitrary text.
//!
//! Properties: no panic; every organisation read has a code of 1–12 ASCII letters and digits,
//! upper case, and a name; an error names a line that exists.
#![no_main]

use caregate::directory::parse_ods_csv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_ods_csv(text) {
        Ok(orgs) => {
            for o in &orgs {
                assert!(!o.code.is_empty() && o.code.len() <= 12, "code {:?}", o.code);
                assert!(
                    o.code.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
                    "code {:?}",
                    o.code
                );
                assert!(!o.name.is_empty(), "organisation {:?} without a name", o.code);
            }
        }
        Err((line, code)) => {
            assert!(line >= 1 && line <= text.lines().count(), "error on line {line}");
            assert!(code.chars().count() <= 40);
        }
    }
});
