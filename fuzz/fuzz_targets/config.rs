//! `config::Config::from_bytes` on arbitrary bytes: no panic; every error names a key; a config
//! that loads has a directory that builds or names the key it cannot build from.
#![no_main]

use caregate::config::Config;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    match Config::from_bytes(Path::new("/nonexistent/fuzz/caregate.toml"), data) {
        Ok(c) => {
            // A config that loads has been validated: its directory builds (no ODS CSV: that
            // would read a file).
            if c.identity.organisations_csv.is_none() {
                let _ = caregate::directory::Directory::build(&c);
            }
        }
        Err(e) => {
            assert!(!e.key.is_empty(), "an error without a key: {}", e.message);
            assert!(!e.message.is_empty(), "an error without a message at {}", e.key);
        }
    }
});
