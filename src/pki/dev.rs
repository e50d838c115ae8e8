//! `caregate pki dev --out DIR`: the development PKI on disk.
//!
//! The sample client certificates carry their organisation in each of the ways
//! `[identity] org_from` can find it, so the demo shows all three.

use super::{audit_signing_key, Ca, Leaf, LeafSpec, PkiError};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The social care provider's registered endpoint (a DNS SAN looked up in `[[endpoint]]`).
pub const SOCIAL_CARE_FQDN: &str = "care.example.org.uk";

/// What [`dev`] wrote: every path, for tests and the demo's printed commands.
#[derive(Clone, Debug)]
pub struct DevPki {
    pub dir: PathBuf,
    /// The dev CA (`ca.pem`): the listener's `client_ca`, and the CA clients trust.
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// `ca.crl`, revoking `revoked.pem`.
    pub ca_crl: PathBuf,
    /// `server.pem`: SANs localhost, 127.0.0.1, ::1.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The sample clients, by file stem: a81001, a81002, rxc, socialcare, revoked, expired, rogue.
    pub clients: Vec<DevClient>,
    /// `other-ca.pem`: the CA that issued `rogue.pem`, trusted by nobody.
    pub other_ca_cert: PathBuf,
    /// Ed25519 PKCS#8 PEM for `[audit] signing_key`.
    pub audit_signing_key: PathBuf,
    /// Its public key (SPKI PEM) for `caregate audit verify --public-key`.
    pub audit_signing_pub: PathBuf,
}

/// One sample client certificate.
#[derive(Clone, Debug)]
pub struct DevClient {
    /// The file stem: `a81001` for `a81001.pem` / `a81001.key`.
    pub name: String,
    /// The ODS code the gateway should find (None for the ones it must refuse).
    pub org: Option<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub serial: u64,
}

impl DevPki {
    /// The sample client with this file stem.
    pub fn client(&self, name: &str) -> Option<&DevClient> {
        self.clients.iter().find(|c| c.name == name)
    }
}

/// Writes a fresh development PKI into `out` (created if missing; existing files replaced).
/// Private keys are written 0600. `ca.pem` is written last, so a folder holding it is complete.
pub fn dev(out: &Path) -> Result<DevPki, PkiError> {
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let now = OffsetDateTime::now_utc();
    let ca = Ca::new("caregate dev CA")?;

    let mut clients = Vec::new();
    let mut issue = |name: &str, org: Option<&str>, spec: LeafSpec, by: &Ca| {
        let leaf = by.issue(&spec)?;
        let c = write_leaf(out, name, &leaf)?;
        clients.push(DevClient {
            name: name.to_string(),
            org: org.map(str::to_string),
            cert: c.0,
            key: c.1,
            serial: leaf.serial,
        });
        Ok::<u64, PkiError>(leaf.serial)
    };

    // A GP practice named by a URI SAN (san_uri:urn:nhs:ods:).
    let mut spec = LeafSpec::client("gpsystem.a81001.example.nhs.uk");
    spec.organisation = Some("Example Surgery".into());
    spec.uris = vec!["urn:nhs:ods:A81001".into()];
    issue("a81001", Some("A81001"), spec, &ca)?;

    // Another GP practice named by its subject OU (subject:OU).
    let mut spec = LeafSpec::client("gpsystem.a81002.example.nhs.uk");
    spec.organisation = Some("Example Medical Centre".into());
    spec.org_unit = Some("A81002".into());
    issue("a81002", Some("A81002"), spec, &ca)?;

    // An acute trust, by OU.
    let mut spec = LeafSpec::client("epr.esht.example.nhs.uk");
    spec.organisation = Some("East Sussex Healthcare NHS Trust".into());
    spec.org_unit = Some("RXC".into());
    issue("rxc", Some("RXC"), spec, &ca)?;

    // A social care provider: no OU, no URI; its DNS SAN is a registered [[endpoint]].
    let mut spec = LeafSpec::client(SOCIAL_CARE_FQDN);
    spec.organisation = Some("Example Care Homes Ltd".into());
    spec.dns_names = vec![SOCIAL_CARE_FQDN.into()];
    issue("socialcare", Some("8KP42"), spec, &ca)?;

    // Would be A81001, but listed in ca.crl.
    let mut spec = LeafSpec::client("revoked.a81001.example.nhs.uk");
    spec.organisation = Some("Example Surgery".into());
    spec.uris = vec!["urn:nhs:ods:A81001".into()];
    let revoked = issue("revoked", None, spec, &ca)?;

    // Would be A81002, but its validity ended yesterday.
    let mut spec = LeafSpec::client("expired.a81002.example.nhs.uk");
    spec.organisation = Some("Example Medical Centre".into());
    spec.org_unit = Some("A81002".into());
    spec.not_before = Some(now - Duration::days(31));
    spec.not_after = Some(now - Duration::days(1));
    issue("expired", None, spec, &ca)?;

    // Claims RXC, but from a CA the gateway does not trust.
    let other = Ca::new("caregate dev other CA (untrusted)")?;
    let mut spec = LeafSpec::client("rogue.example.org");
    spec.organisation = Some("East Sussex Healthcare NHS Trust".into());
    spec.org_unit = Some("RXC".into());
    issue("rogue", None, spec, &other)?;
    let other_ca_cert = write(out, "other-ca.pem", &other.cert_pem(), false)?;

    let server = ca.issue(&LeafSpec::server(&["localhost", "127.0.0.1", "::1"]))?;
    let (server_cert, server_key) = write_leaf(out, "server", &server)?;

    let crl = ca.crl(&[revoked], now - Duration::hours(1), now + Duration::days(365))?;
    let ca_crl = write(out, "ca.crl", &crl, false)?;

    let (audit_key, audit_pub) = audit_signing_key()?;
    let audit_signing_key = write(out, "audit-signing.key", &audit_key, true)?;
    let audit_signing_pub = write(out, "audit-signing.pub", &audit_pub, false)?;

    let ca_key = write(out, "ca.key", &ca.key_pem(), true)?;
    let ca_cert = write(out, "ca.pem", &ca.cert_pem(), false)?;
    Ok(DevPki {
        dir: out.to_path_buf(),
        ca_cert,
        ca_key,
        ca_crl,
        server_cert,
        server_key,
        clients,
        other_ca_cert,
        audit_signing_key,
        audit_signing_pub,
    })
}

fn write_leaf(dir: &Path, stem: &str, leaf: &Leaf) -> Result<(PathBuf, PathBuf), PkiError> {
    let cert = write(dir, &format!("{stem}.pem"), &leaf.cert_pem, false)?;
    let key = write(dir, &format!("{stem}.key"), &leaf.key_pem, true)?;
    Ok((cert, key))
}

/// Writes `text` to `dir/file`, replacing it; `secret` files are 0600 (on Unix).
fn write(dir: &Path, file: &str, text: &str, secret: bool) -> Result<PathBuf, PkiError> {
    use std::io::Write;
    let path = dir.join(file);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(&path).map_err(|e| io(&path, e))?;
    // The mode above only applies to a new file: tighten one that was already there.
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io(&path, e))?;
    }
    f.write_all(text.as_bytes()).map_err(|e| io(&path, e))?;
    Ok(path)
}

fn io(path: &Path, source: std::io::Error) -> PkiError {
    PkiError::Io {
        path: path.display().to_string(),
        source,
    }
}
