//! The development PKI: a throwaway CA that issues server and client certificates and CRLs, and
//! the Ed25519 audit signing key. Everything is generated on the spot (ECDSA P-256 via ring);
//! nothing here is meant for production, and no real key ever lives in this repository.
//!
//! - [`Ca`]: a self-signed CA; [`Ca::issue`] mints a leaf from a [`LeafSpec`], [`Ca::crl`] signs
//!   a CRL naming revoked serials.
//! - [`dev`]: writes the whole dev PKI (`caregate pki dev --out DIR`) into a folder.
//! - [`audit_signing_key`]: an Ed25519 key pair for signed audit checkpoints.
//!
//! Integration tests mint their certificates per run with the same API.

mod dev;
#[cfg(test)]
mod tests;

pub use dev::{dev, DevClient, DevPki, SOCIAL_CARE_FQDN};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType,
    SerialNumber,
};
use std::fmt;
use std::net::IpAddr;
use time::{Duration, OffsetDateTime};

/// Why a certificate, key or CRL could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Extended key usages a leaf may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eku {
    ClientAuth,
    ServerAuth,
}

/// Key usages a leaf may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyUsage {
    DigitalSignature,
    KeyEncipherment,
}

/// What to put in a leaf certificate.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    pub common_name: String,
    /// Subject `O`.
    pub organisation: Option<String>,
    /// Subject `OU`: where `subject:OU` identity finds an ODS code.
    pub org_unit: Option<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    /// URI SANs, e.g. `urn:nhs:ods:A81001` for `san_uri:urn:nhs:ods:` identity.
    pub uris: Vec<String>,
    /// The exact serial (so a CRL can revoke it); random and positive if `None`.
    pub serial: Option<u64>,
    /// Default: an hour ago (tolerates small clock skew).
    pub not_before: Option<OffsetDateTime>,
    /// Default: a year from now.
    pub not_after: Option<OffsetDateTime>,
    pub eku: Vec<Eku>,
    pub key_usage: Vec<KeyUsage>,
}

/// An issued leaf: certificate and its PKCS#8 private key.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    pub serial: u64,
}

/// A self-signed ECDSA P-256 certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: Vec<u8>,
}

// === impl LeafSpec ===

impl LeafSpec {
    /// A client certificate: EKU clientAuth, key usage digitalSignature, no SANs.
    pub fn client(cn: &str) -> LeafSpec {
        LeafSpec {
            common_name: cn.to_string(),
            organisation: None,
            org_unit: None,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            uris: Vec::new(),
            serial: None,
            not_before: None,
            not_after: None,
            eku: vec![Eku::ClientAuth],
            key_usage: vec![KeyUsage::DigitalSignature],
        }
    }

    /// A server certificate for `names` (each an IP address or a DNS name); the first name is
    /// also the CN. EKU serverAuth, key usage digitalSignature + keyEncipherment.
    pub fn server(names: &[&str]) -> LeafSpec {
        let mut spec = LeafSpec::client(names.first().copied().unwrap_or("server"));
        spec.eku = vec![Eku::ServerAuth];
        spec.key_usage = vec![KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment];
        for name in names {
            match name.parse::<IpAddr>() {
                Ok(ip) => spec.ip_addresses.push(ip),
                Err(_) => spec.dns_names.push((*name).to_string()),
            }
        }
        spec
    }
}

// === impl Ca ===

impl Ca {
    /// A new CA valid from a day ago for ten years, with basicConstraints CA and key usage
    /// keyCertSign + cRLSign.
    pub fn new(common_name: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, Some("caregate development"), None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(SerialNumber::from(random_serial()?));
        params.key_identifier_method = KeyIdMethod::Sha256;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    pub fn cert_der(&self) -> Vec<u8> {
        self.cert_der.clone()
    }

    /// The CA's private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Mints a fresh P-256 key and a certificate for it as `spec` says.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Leaf, PkiError> {
        if spec.common_name.is_empty() {
            return Err(PkiError::Invalid("a leaf needs a common name".into()));
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let serial = match spec.serial {
            Some(s) => s,
            None => random_serial()?,
        };
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = name(
            &spec.common_name,
            spec.organisation.as_deref(),
            spec.org_unit.as_deref(),
        );
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_before = spec.not_before.unwrap_or(now - Duration::hours(1));
        params.not_after = spec.not_after.unwrap_or(now + Duration::days(365));
        if params.not_after <= params.not_before {
            return Err(PkiError::Invalid(format!(
                "leaf \"{}\": not_after must be after not_before",
                spec.common_name
            )));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        for dns in &spec.dns_names {
            params.subject_alt_names.push(SanType::DnsName(
                dns.clone().try_into().map_err(|_| bad_name("DNS name", dns))?,
            ));
        }
        for ip in &spec.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        for uri in &spec.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.clone().try_into().map_err(|_| bad_name("URI", uri))?));
        }
        params.extended_key_usages = spec
            .eku
            .iter()
            .map(|e| match e {
                Eku::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
                Eku::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
            })
            .collect();
        params.key_usages = spec
            .key_usage
            .iter()
            .map(|k| match k {
                KeyUsage::DigitalSignature => KeyUsagePurpose::DigitalSignature,
                KeyUsage::KeyEncipherment => KeyUsagePurpose::KeyEncipherment,
            })
            .collect();
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            serial,
        })
    }

    /// A CRL (PEM) signed by this CA, listing `revoked_serials` as revoked at `this_update`.
    /// Its CRL number is `this_update` in seconds, so a later CRL has a larger number.
    pub fn crl(
        &self,
        revoked_serials: &[u64],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<String, PkiError> {
        if next_update <= this_update {
            return Err(PkiError::Invalid(
                "a CRL's next_update must be after its this_update".into(),
            ));
        }
        let crl_number = u64::try_from(this_update.unix_timestamp()).unwrap_or(1).max(1);
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(crl_number),
            // Not needed: this CA's only CRL covers everything it issued.
            issuing_distribution_point: None,
            revoked_certs: revoked_serials
                .iter()
                .map(|&s| RevokedCertParams {
                    serial_number: SerialNumber::from(s),
                    revocation_time: this_update,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

impl fmt::Debug for Ca {
    /// Shows the certificate, never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").field("issuer", &self.issuer).finish()
    }
}

impl fmt::Debug for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaf")
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// A fresh Ed25519 key pair for signing audit checkpoints: (PKCS#8 PEM private key, SPKI
/// `PUBLIC KEY` PEM for `caregate audit verify --public-key`).
pub fn audit_signing_key() -> Result<(String, String), PkiError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

/// A random serial that is positive and non-zero as a DER INTEGER (top bit masked).
fn random_serial() -> Result<u64, PkiError> {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    loop {
        let mut bytes = [0u8; 8];
        rng.fill(&mut bytes)
            .map_err(|_| PkiError::Invalid("the system random generator failed".into()))?;
        let serial = u64::from_be_bytes(bytes) & (u64::MAX >> 1);
        if serial != 0 {
            return Ok(serial);
        }
    }
}

/// Subject `O=…, OU=…, CN=…` (absent parts left out).
fn name(cn: &str, o: Option<&str>, ou: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(o) = o {
        dn.push(DnType::OrganizationName, o);
    }
    if let Some(ou) = ou {
        dn.push(DnType::OrganizationalUnitName, ou);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

fn bad_name(what: &str, value: &str) -> PkiError {
    PkiError::Invalid(format!("\"{value}\" is not a valid {what} (ASCII only)"))
}
