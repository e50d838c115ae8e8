//! The dev PKI checked the way its users see it: x509-parser for the fields, rustls' webpki
//! verifiers for chains, CRLs and names.

use super::*;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime};
use std::sync::Arc;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{parse_x509_certificate, parse_x509_crl};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Ca) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca.cert_der())).unwrap();
    Arc::new(roots)
}

fn client_verifier(ca: &Ca, crl_pem: Option<&str>) -> Arc<dyn ClientCertVerifier> {
    let mut b = WebPkiClientVerifier::builder_with_provider(roots(ca), provider());
    if let Some(pem) = crl_pem {
        b = b.with_crls(vec![
            CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap()
        ]);
    }
    b.build().unwrap()
}

fn verify_client(v: &dyn ClientCertVerifier, leaf: &Leaf) -> Result<(), rustls::Error> {
    v.verify_client_cert(&CertificateDer::from(leaf.cert_der.clone()), &[], UnixTime::now())
        .map(|_| ())
}

fn serial_of(raw: &[u8]) -> u64 {
    let raw: Vec<u8> = raw.iter().copied().skip_while(|b| *b == 0).collect();
    assert!(raw.len() <= 8, "serial longer than a u64: {raw:?}");
    raw.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

#[test]
fn ca_is_a_ca_with_cert_and_crl_signing() {
    let ca = Ca::new("test CA").unwrap();
    let der = ca.cert_der();
    let (_, cert) = parse_x509_certificate(&der).unwrap();
    assert!(cert.is_ca());
    assert_eq!(cert.subject(), cert.issuer());
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(ca.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(!format!("{ca:?}").contains("PRIVATE"));
}

#[test]
fn leaf_has_the_serial_subject_sans_usages_and_validity_asked_for() {
    let ca = Ca::new("test CA").unwrap();
    let nb = time::macros::datetime!(2024-01-02 03:04:05 UTC);
    let na = time::macros::datetime!(2034-01-02 03:04:05 UTC);
    let mut spec = LeafSpec::client("gpsystem.a81001.example.nhs.uk");
    spec.organisation = Some("Example Surgery".into());
    spec.org_unit = Some("A81001".into());
    spec.uris = vec!["urn:nhs:ods:A81001".into()];
    spec.dns_names = vec!["gp.example.nhs.uk".into()];
    spec.ip_addresses = vec!["10.1.2.3".parse().unwrap()];
    spec.serial = Some(0x8000_0000_0000_0001); // top bit set: must still be positive and exact
    spec.not_before = Some(nb);
    spec.not_after = Some(na);
    let leaf = ca.issue(&spec).unwrap();
    assert_eq!(leaf.serial, 0x8000_0000_0000_0001);

    let (_, cert) = parse_x509_certificate(&leaf.cert_der).unwrap();
    assert_eq!(serial_of(cert.raw_serial()), 0x8000_0000_0000_0001);
    assert_eq!(cert.raw_serial()[0], 0, "positive INTEGER needs a leading 0 byte");
    let subject = cert.subject();
    let cn: Vec<_> = subject.iter_common_name().map(|a| a.as_str().unwrap()).collect();
    let o: Vec<_> = subject.iter_organization().map(|a| a.as_str().unwrap()).collect();
    let ou: Vec<_> = subject
        .iter_organizational_unit()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(cn, ["gpsystem.a81001.example.nhs.uk"]);
    assert_eq!(o, ["Example Surgery"]);
    assert_eq!(ou, ["A81001"]);
    assert_eq!(cert.issuer().to_string(), {
        let der = ca.cert_der();
        let (_, ca_cert) = parse_x509_certificate(&der).unwrap();
        ca_cert.subject().to_string()
    });

    let sans = &cert.subject_alternative_name().unwrap().unwrap().value.general_names;
    assert!(sans.contains(&GeneralName::URI("urn:nhs:ods:A81001")));
    assert!(sans.contains(&GeneralName::DNSName("gp.example.nhs.uk")));
    assert!(sans.contains(&GeneralName::IPAddress(&[10, 1, 2, 3])));
    assert_eq!(sans.len(), 3);

    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_encipherment() && !ku.key_cert_sign());
    assert!(!cert.is_ca());

    assert_eq!(cert.validity().not_before.to_datetime(), nb);
    assert_eq!(cert.validity().not_after.to_datetime(), na);

    // The key is PKCS#8 that rustls can load.
    assert!(leaf.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(matches!(
        PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
        PrivateKeyDer::Pkcs8(_)
    ));
    assert_eq!(
        CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes())
            .unwrap()
            .as_ref(),
        leaf.cert_der.as_slice()
    );
}

#[test]
fn default_validity_and_random_serials() {
    let ca = Ca::new("test CA").unwrap();
    let a = ca.issue(&LeafSpec::client("a")).unwrap();
    let b = ca.issue(&LeafSpec::client("b")).unwrap();
    assert_ne!(a.serial, b.serial);
    assert!(a.serial > 0 && a.serial < 1 << 63);
    let (_, cert) = parse_x509_certificate(&a.cert_der).unwrap();
    assert_eq!(serial_of(cert.raw_serial()), a.serial);
    let now = time::OffsetDateTime::now_utc();
    let v = cert.validity();
    let nb = now - v.not_before.to_datetime();
    let na = v.not_after.to_datetime() - now;
    assert!(
        nb > time::Duration::minutes(59) && nb < time::Duration::minutes(61),
        "{nb}"
    );
    assert!(
        na > time::Duration::days(364) && na <= time::Duration::days(365),
        "{na}"
    );
}

#[test]
fn server_spec_parses_names_and_sets_server_usages() {
    let spec = LeafSpec::server(&["localhost", "127.0.0.1", "::1"]);
    assert_eq!(spec.common_name, "localhost");
    assert_eq!(spec.dns_names, ["localhost"]);
    assert_eq!(spec.ip_addresses.len(), 2);
    assert_eq!(spec.eku, [Eku::ServerAuth]);
    assert_eq!(spec.key_usage, [KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment]);
    let c = LeafSpec::client("x");
    assert_eq!(c.eku, [Eku::ClientAuth]);
    assert_eq!(c.key_usage, [KeyUsage::DigitalSignature]);
}

#[test]
fn bad_specs_are_errors_not_panics() {
    let ca = Ca::new("test CA").unwrap();
    let now = time::OffsetDateTime::now_utc();
    let mut spec = LeafSpec::client("x");
    spec.not_before = Some(now);
    spec.not_after = Some(now - time::Duration::days(1));
    assert!(matches!(ca.issue(&spec), Err(PkiError::Invalid(_))));
    let mut spec = LeafSpec::client("x");
    spec.dns_names = vec!["bücher.example".into()];
    assert!(matches!(ca.issue(&spec), Err(PkiError::Invalid(_))));
    assert!(ca.crl(&[], now, now).is_err());
}

#[test]
fn crl_parses_and_lists_the_revoked_serial() {
    let ca = Ca::new("test CA").unwrap();
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let pem = ca
        .crl(&[42, 0xdead_beef_cafe], now, now + time::Duration::days(7))
        .unwrap();
    assert!(pem.starts_with("-----BEGIN X509 CRL-----"));
    let der = CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, crl) = parse_x509_crl(der.as_ref()).unwrap();
    let serials: Vec<u64> = crl
        .iter_revoked_certificates()
        .map(|r| serial_of(r.raw_serial()))
        .collect();
    assert_eq!(serials, [42, 0xdead_beef_cafe]);
    assert_eq!(crl.last_update().to_datetime(), now);
    assert_eq!(crl.next_update().unwrap().to_datetime(), now + time::Duration::days(7));
    let ca_der = ca.cert_der();
    let (_, ca_cert) = parse_x509_certificate(&ca_der).unwrap();
    assert_eq!(crl.issuer(), ca_cert.subject());
}

#[test]
fn webpki_accepts_a_good_client_and_refuses_a_revoked_one() {
    let ca = Ca::new("test CA").unwrap();
    let good = ca.issue(&LeafSpec::client("good")).unwrap();
    let mut spec = LeafSpec::client("revoked");
    spec.serial = Some(0xfeed_f00d);
    let revoked = ca.issue(&spec).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let crl = ca
        .crl(
            &[revoked.serial],
            now - time::Duration::hours(1),
            now + time::Duration::days(1),
        )
        .unwrap();

    let v = client_verifier(&ca, Some(&crl));
    verify_client(&*v, &good).unwrap();
    let err = verify_client(&*v, &revoked).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
        ),
        "{err:?}"
    );

    // Without the CRL the same certificate passes: the CRL is what refuses it.
    verify_client(&*client_verifier(&ca, None), &revoked).unwrap();
}

#[test]
fn webpki_refuses_expired_foreign_and_server_only_certs() {
    let ca = Ca::new("test CA").unwrap();
    let v = client_verifier(&ca, None);
    let now = time::OffsetDateTime::now_utc();

    let mut spec = LeafSpec::client("expired");
    spec.not_before = Some(now - time::Duration::days(30));
    spec.not_after = Some(now - time::Duration::days(1));
    let err = verify_client(&*v, &ca.issue(&spec).unwrap()).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)
                | rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext { .. })
        ),
        "{err:?}"
    );

    let other = Ca::new("other CA").unwrap();
    let err = verify_client(&*v, &other.issue(&LeafSpec::client("rogue")).unwrap()).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );

    // A server certificate lacks clientAuth.
    assert!(verify_client(&*v, &ca.issue(&LeafSpec::server(&["localhost"])).unwrap()).is_err());
}

#[test]
fn webpki_accepts_the_server_cert_for_localhost_and_loopback_ips() {
    let ca = Ca::new("test CA").unwrap();
    let server = ca.issue(&LeafSpec::server(&["localhost", "127.0.0.1", "::1"])).unwrap();
    let v = WebPkiServerVerifier::builder_with_provider(roots(&ca), provider())
        .build()
        .unwrap();
    let ee = CertificateDer::from(server.cert_der.clone());
    for name in ["localhost", "127.0.0.1", "::1"] {
        let sn = ServerName::try_from(name).unwrap();
        v.verify_server_cert(&ee, &[], &sn, &[], UnixTime::now())
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    let sn = ServerName::try_from("example.com").unwrap();
    assert!(v.verify_server_cert(&ee, &[], &sn, &[], UnixTime::now()).is_err());
    // And a client certificate is no server certificate.
    let client = ca.issue(&LeafSpec::client("localhost")).unwrap();
    let sn = ServerName::try_from("localhost").unwrap();
    let ee = CertificateDer::from(client.cert_der);
    assert!(v.verify_server_cert(&ee, &[], &sn, &[], UnixTime::now()).is_err());
}

#[test]
fn audit_signing_key_is_ed25519_pkcs8_and_spki() {
    let (key_pem, pub_pem) = audit_signing_key().unwrap();
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(pub_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    let der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let kp = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_der()).unwrap();
    let spki = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(pub_pem.as_bytes()).unwrap();
    // SPKI for Ed25519 is a 12-byte header and the 32-byte key.
    use ring::signature::KeyPair as _;
    assert_eq!(&spki.as_ref()[12..], kp.public_key().as_ref());
    let sig = kp.sign(b"chain head");
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &spki.as_ref()[12..])
        .verify(b"chain head", sig.as_ref())
        .unwrap();
}

#[test]
fn dev_writes_the_whole_pki_and_it_behaves() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("certs/dev");
    let pki = dev(&out).unwrap();
    for f in [
        "ca.pem",
        "ca.key",
        "ca.crl",
        "server.pem",
        "server.key",
        "other-ca.pem",
        "audit-signing.key",
        "audit-signing.pub",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    for c in ["a81001", "a81002", "rxc", "socialcare", "revoked", "expired", "rogue"] {
        let client = pki.client(c).unwrap_or_else(|| panic!("{c}"));
        assert!(client.cert.is_file() && client.key.is_file(), "{c}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["ca.key", "server.key", "a81001.key", "audit-signing.key"] {
            let mode = std::fs::metadata(out.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }

    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&read(&pki.ca_cert)).unwrap())
        .unwrap();
    let crl = CertificateRevocationListDer::from_pem_slice(&read(&pki.ca_crl)).unwrap();
    let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider())
        .with_crls(vec![crl])
        .build()
        .unwrap();
    let check = |name: &str| {
        let c = pki.client(name).unwrap();
        let der = CertificateDer::from_pem_slice(&read(&c.cert)).unwrap();
        v.verify_client_cert(&der, &[], UnixTime::now()).map(|_| ())
    };
    for ok in ["a81001", "a81002", "rxc", "socialcare"] {
        check(ok).unwrap_or_else(|e| panic!("{ok}: {e:?}"));
    }
    for bad in ["revoked", "expired", "rogue"] {
        assert!(check(bad).is_err(), "{bad}");
    }
    assert!(matches!(
        check("revoked"),
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked))
    ));

    // Identities are where the demo config looks for them.
    let cert_of = |name: &str| read(&pki.client(name).unwrap().cert);
    let der = CertificateDer::from_pem_slice(&cert_of("a81001")).unwrap();
    let (_, c) = parse_x509_certificate(der.as_ref()).unwrap();
    let sans = &c.subject_alternative_name().unwrap().unwrap().value.general_names;
    assert!(sans.contains(&GeneralName::URI("urn:nhs:ods:A81001")));
    assert_eq!(
        c.subject().iter_organization().next().unwrap().as_str().unwrap(),
        "Example Surgery"
    );
    let der = CertificateDer::from_pem_slice(&cert_of("rxc")).unwrap();
    let (_, c) = parse_x509_certificate(der.as_ref()).unwrap();
    assert_eq!(
        c.subject().iter_organizational_unit().next().unwrap().as_str().unwrap(),
        "RXC"
    );
    let der = CertificateDer::from_pem_slice(&cert_of("socialcare")).unwrap();
    let (_, c) = parse_x509_certificate(der.as_ref()).unwrap();
    assert!(c.subject().iter_organizational_unit().next().is_none());
    let sans = &c.subject_alternative_name().unwrap().unwrap().value.general_names;
    assert_eq!(sans.as_slice(), [GeneralName::DNSName(dev::SOCIAL_CARE_FQDN)]);

    // The server cert, from disk, for the names the demo's curl commands use.
    let sv = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .unwrap();
    let ee = CertificateDer::from_pem_slice(&read(&pki.server_cert)).unwrap();
    for name in ["localhost", "127.0.0.1", "::1"] {
        let sn = ServerName::try_from(name).unwrap();
        sv.verify_server_cert(&ee, &[], &sn, &[], UnixTime::now()).unwrap();
    }
    PrivateKeyDer::from_pem_slice(&read(&pki.server_key)).unwrap();

    // Running it again replaces everything with a fresh PKI.
    let first = read(&pki.ca_cert);
    let again = dev(&out).unwrap();
    assert_ne!(read(&again.ca_cert), first);
}
