//! A PKI minted for one test run: a CA, a gateway server certificate, a CRL, and client
//! certificates on demand, with the files a gateway's config names in a temporary folder.

use super::config::GatewayConfig;
use caregate::pki::{Ca, Leaf, LeafSpec};
use std::path::{Path, PathBuf};

/// The CA, a second CA nobody trusts, and in `dir`: `ca.pem`, `ca.crl` (nothing revoked),
/// `server.pem` and `server.key` (for `localhost` and 127.0.0.1).
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub other_ca: Ca,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test CA").unwrap();
        let other_ca = Ca::new("someone else's CA").unwrap();
        let server = ca.issue(&LeafSpec::server(&["localhost", "127.0.0.1"])).unwrap();
        let pki = TestPki { dir, ca, other_ca };
        pki.write("ca.pem", pki.ca.cert_pem());
        pki.write("server.pem", &server.cert_pem);
        pki.write("server.key", &server.key_pem);
        pki.revoke(&[]);
        pki
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file into the PKI's folder; its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// A client cert whose URI SAN names `org` (`urn:nhs:ods:<org>`).
    pub fn client(&self, org: &str) -> Leaf {
        let mut spec = LeafSpec::client(&format!("system of {org}"));
        spec.uris = vec![format!("urn:nhs:ods:{org}")];
        self.issue(&spec)
    }

    /// A client certificate for `org` with this exact serial.
    pub fn client_with_serial(&self, org: &str, serial: u64) -> Leaf {
        let mut spec = LeafSpec::client(&format!("system {serial:x} of {org}"));
        spec.uris = vec![format!("urn:nhs:ods:{org}")];
        spec.serial = Some(serial);
        self.issue(&spec)
    }

    pub fn issue(&self, spec: &LeafSpec) -> Leaf {
        self.ca.issue(spec).unwrap()
    }

    /// Rewrites the CRL (valid from an hour ago for a week) to revoke these serials.
    pub fn revoke(&self, serials: &[u64]) {
        let now = time::OffsetDateTime::now_utc();
        let crl = self
            .ca
            .crl(serials, now - time::Duration::hours(1), now + time::Duration::days(7))
            .unwrap();
        self.write("ca.crl", crl);
    }

    /// The config of a gateway under this PKI, before its organisations and routes: `[listener]`
    /// on 127.0.0.1 port 0 with this PKI's files, `[admin]` on port 0, and an audit trail flushed
    /// per record (its folder is `Gw::start`'s unless `audit` names one).
    pub fn config(&self) -> GatewayConfig {
        GatewayConfig::new()
            .tls(self.path())
            .crl(&self.path().join("ca.crl"))
            .admin()
            .set("audit", r#"durability = "flush""#)
    }
}
