//! `identity::identify` on arbitrary DER (seeds: the x509-limbo leaves), with every kind of
//! organisation source and a directory that has one endpoint.
//!
//! Properties: no panic; an identity's organisation code and the header values it builds are
//! well-formed.
#![no_main]

use caregate::config::{Config, OrgSource};
use caregate::directory::Directory;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn directory() -> &'static Directory {
    static DIR: OnceLock<Directory> = OnceLock::new();
    DIR.get_or_init(|| {
        let text = include_str!("../identity.toml");
        let config = Config::from_bytes(std::path::Path::new("/fuzz/identity.toml"), text.as_bytes())
            .expect("fuzz/identity.toml loads");
        Directory::build(&config).expect("directory")
    })
}

fuzz_target!(|der: &[u8]| {
    let sources = [
        OrgSource::SanUri("urn:nhs:ods:".into()),
        OrgSource::Subject("OU".into()),
        OrgSource::Subject("CN".into()),
        OrgSource::Endpoint,
    ];
    if let Ok(id) = caregate::identity::identify(der, &sources, directory()) {
        assert!(id.fingerprint.starts_with("sha256:") && id.fingerprint.len() == 7 + 64);
        assert!(id.subject.is_ascii(), "subject not ASCII: {:?}", id.subject);
        assert!(id.client_cert_header.starts_with(':') && id.client_cert_header.ends_with(':'));
        if let Some(org) = &id.org {
            assert!(!org.is_empty());
        }
    }
});
