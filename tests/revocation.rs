//! Revocation and certificate checks on a running gateway (SPEC §6): a CRL reloaded mid-stream
//! cuts off the revoked certificate's open connections (after the response in flight) and only
//! its own issuer's certificate; a TLS session resumed after a reloaded CRL revoked its
//! certificate, or after the certificate expired, is refused; client CAs whose name constraints
//! cannot be evaluated, and intermediate CAs no CRL covers, are warned about; a stale CRL
//! refuses or warns as configured and shows in the metrics. Real TLS on loopback; no sleeps as
//! synchronisation.

mod support;

use caregate::pki::{Leaf, LeafSpec};
use http_body_util::BodyExt;
use ring::digest;
use rustls::version::{TLS12, TLS13};
use rustls::HandshakeKind;
use serde_json::Value;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_revoked_by_a_reloaded_crl_loses_its_open_connections_and_cannot_reconnect() {
    const SIZE: usize = 16 << 20;
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = Gw::standard(&pki, &up).await;
    // Top bit set: DER writes the serial with a leading zero byte, which the CRL entry and the
    // certificate must agree on.
    let victim = pki.client_with_serial("A81001", 0x8000_0000_0000_1234);
    let h2_victim = pki.client_with_serial("A81001", 0x0012_3456);
    let bystander = pki.client("A81001");

    // HTTP/1 keep-alive: one exchange done, a download in flight.
    let (mut sender, conn) = gw.h1(&victim).await;
    let r = sender.send_request(get("/files/bytes/10")).await.unwrap();
    assert_eq!(r.status(), 200);
    r.into_body().collect().await.unwrap();
    sender.ready().await.unwrap();
    let resp = sender.send_request(get(&format!("/files/bytes/{SIZE}"))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut got = read_hashing(&mut body, &mut hash, 1 << 20).await;

    // HTTP/2: an idle connection after one exchange.
    let (mut sender2, conn2) = gw.h2(&h2_victim).await;
    let r = sender2.send_request(get("/files/bytes/10")).await.unwrap();
    assert_eq!(r.status(), 200);
    r.into_body().collect().await.unwrap();

    pki.revoke(&[victim.serial, h2_victim.serial]);
    gw.reload().await.unwrap();

    // The in-flight response finishes, whole; then the connection closes.
    got += read_hashing(&mut body, &mut hash, u64::MAX).await;
    assert_eq!(got, SIZE as u64);
    assert_eq!(caregate::hex(hash.finish().as_ref()), pattern_sha(SIZE));
    let closed = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(
        closed.is_ok(),
        "the HTTP/1 connection must close after the in-flight response"
    );
    assert!(
        sender.send_request(get("/files/bytes/10")).await.is_err(),
        "no new request on it"
    );

    // HTTP/2: GOAWAY, the connection ends, no new stream.
    let closed = tokio::time::timeout(Duration::from_secs(10), conn2).await;
    assert!(closed.is_ok(), "the HTTP/2 connection must be sent away");
    assert!(sender2.send_request(get("/files/bytes/10")).await.is_err());

    // New handshakes fail; other certificates are untouched.
    assert!(gw.handshake_refused(Some(&victim)).await);
    assert!(gw.handshake_refused(Some(&h2_victim)).await);
    assert_eq!(gw.get(&bystander, "/files/bytes/10").await.status, 200);

    let revoked = gw
        .stop()
        .await
        .iter()
        .filter(|r| r["event"] == "tls_rejected" && r["reason"] == "revoked")
        .count();
    assert_eq!(revoked, 2, "each refused reconnection is audited as revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_crl_cuts_off_only_its_own_issuers_certificate_not_another_cas_with_the_same_serial() {
    // Small CAs number their certificates in sequence, so two of them give out the same serials.
    const SERIAL: u64 = 0x1003;
    let pki = TestPki::new();
    let other_ca = pki.write("other_ca.pem", pki.other_ca.cert_pem());
    let up = Upstream::start().await;
    let gw = Gw::standard(&pki, &up).await;
    gw.rewrite_config(|c| c.client_cas(&[&pki.path().join("ca.pem"), &other_ca]));
    gw.reload().await.unwrap();
    let victim = pki.client_with_serial("A81001", SERIAL);
    let mut spec = LeafSpec::client("system 1003 of A81001, other CA");
    spec.uris = vec!["urn:nhs:ods:A81001".into()];
    spec.serial = Some(SERIAL);
    let namesake = pki.other_ca.issue(&spec).unwrap();

    let (mut victim_sender, victim_conn) = gw.h1(&victim).await;
    let (mut sender, conn) = gw.h1(&namesake).await;
    for s in [&mut victim_sender, &mut sender] {
        let r = s.send_request(get("/files/bytes/10")).await.unwrap();
        assert_eq!(r.status(), 200);
        r.into_body().collect().await.unwrap();
    }

    pki.revoke(&[SERIAL]);
    gw.reload().await.unwrap();

    let closed = tokio::time::timeout(Duration::from_secs(10), victim_conn).await;
    assert!(closed.is_ok(), "the revoked certificate's connection must close");
    // Each request checks the certificate against the reloaded CRLs before it is served.
    sender.ready().await.unwrap();
    let r = sender.send_request(get("/files/bytes/10")).await.unwrap();
    assert_eq!(r.status(), 200, "the other CA's certificate is not revoked");
    r.into_body().collect().await.unwrap();
    assert!(!conn.is_finished());
    assert!(gw.handshake_refused(Some(&victim)).await);
    assert!(!gw.handshake_refused(Some(&namesake)).await);
}

/// A client CA with these name constraints, and a client certificate for A81001 under it with
/// the organisation URI SAN and these DNS SANs.
fn constrained_ca_and_client(constraints: rcgen::NameConstraints, dns: &[&str]) -> (String, Leaf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "constrained client CA");
    ca.distinguished_name.push(DnType::OrganizationName, "NHS");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.name_constraints = Some(constraints);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name.push(DnType::CommonName, "system of A81001");
    leaf.distinguished_name.push(DnType::OrganizationName, "NHS");
    leaf.subject_alt_names = vec![SanType::URI("urn:nhs:ods:A81001".try_into().unwrap())];
    for d in dns {
        leaf.subject_alt_names.push(SanType::DnsName((*d).try_into().unwrap()));
    }
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let leaf = Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().to_vec(),
        serial: 0,
    };
    (ca_pem, leaf)
}

#[tokio::test]
async fn a_client_ca_whose_name_constraints_cannot_be_evaluated_is_warned_about_and_its_clients_refused() {
    let pki = TestPki::new();
    let mut by_dn = rcgen::DistinguishedName::new();
    by_dn.push(rcgen::DnType::OrganizationName, "NHS");
    let (dn_ca, dn_client) = constrained_ca_and_client(
        rcgen::NameConstraints {
            permitted_subtrees: vec![rcgen::GeneralSubtree::DirectoryName(by_dn)],
            excluded_subtrees: vec![],
        },
        &[],
    );
    let (dns_ca, dns_client) = constrained_ca_and_client(
        rcgen::NameConstraints {
            permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName("nhs.uk".into())],
            excluded_subtrees: vec![],
        },
        &["gpsystem.a81001.nhs.uk"],
    );
    let dn_ca = pki.write("dn_ca.pem", dn_ca);
    let dns_ca = pki.write("dns_ca.pem", dns_ca);
    let up = Upstream::start().await;
    let gw = Gw::standard(&pki, &up).await;
    gw.rewrite_config(|c| c.client_cas(&[&pki.path().join("ca.pem"), &dn_ca, &dns_ca]));

    // `caregate check` names the file and says what will happen; the DNS-constrained CA is fine.
    let config = caregate::config::Config::load(&gw.config_path).unwrap();
    let summary = caregate::cli::check_summary(&caregate::state::State::build(config, 0).unwrap());
    let warnings: Vec<_> = summary.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{summary}");
    assert!(
        warnings[0].contains(
            "listener.client_ca[1]: the CA \"O=NHS,CN=constrained client CA\" has directoryName name constraints"
        ) && warnings[0].contains("it refuses every certificate under it"),
        "{summary}"
    );

    gw.reload().await.unwrap();
    assert!(gw.handshake_refused(Some(&dn_client)).await, "the warning is true");
    let answer = gw.get(&dns_client, "/files/bytes/10").await;
    assert_eq!(answer.status, 200, "DNS constraints are evaluated, and this one is met");
}

#[tokio::test]
async fn a_stale_crl_refuses_or_warns_as_configured_and_shows_in_metrics() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let now = time::OffsetDateTime::now_utc();
    let stale = pki
        .ca
        .crl(&[], now - time::Duration::days(3), now - time::Duration::days(1))
        .unwrap();
    pki.write("ca.crl", stale);
    // And a server certificate that expires in three days.
    let mut spec = LeafSpec::server(&["localhost", "127.0.0.1"]);
    spec.not_after = Some(now + time::Duration::days(3));
    let server = pki.issue(&spec);
    pki.write("server.pem", &server.cert_pem);
    pki.write("server.key", &server.key_pem);
    let gp = pki.client("A81001");

    for (crl_expired, refused) in [(None, true), (Some("refuse"), true), (Some("warn"), false)] {
        let mut config = pki.config().standard([up.url()]);
        if let Some(setting) = crl_expired {
            config = config.listener(format!("crl_expired = \"{setting}\""));
        }
        let mut gw = Gw::start(&pki, config).await;
        assert_eq!(
            gw.handshake_refused(Some(&gp)).await,
            refused,
            "crl_expired = {crl_expired:?}"
        );
        let m = gw.scrape().await;
        let crl = metric(&m, "caregate_crl_next_update_seconds", &["ca.crl"]).expect("a CRL gauge");
        assert!(crl < -86000.0, "a stale CRL reads negative: {crl}");
        let cert = metric(&m, "caregate_server_cert_expiry_seconds", &[]).unwrap();
        assert!(cert > 0.0 && cert < 14.0 * 86400.0, "{cert}");
        gw.stop().await;
    }
}

/// `sha256:<hex>` of a certificate, as `tls_rejected` records name it.
fn fingerprint(leaf: &Leaf) -> String {
    format!(
        "sha256:{}",
        caregate::hex(digest::digest(&digest::SHA256, &leaf.cert_der).as_ref())
    )
}

/// The `tls_rejected` records of this reason, by the certificate's fingerprint.
fn rejected(records: &[Value], reason: &str) -> Vec<String> {
    let mut prints: Vec<String> = records
        .iter()
        .filter(|r| r["event"] == "tls_rejected" && r["reason"] == reason)
        .map(|r| r["client"]["fingerprint"].as_str().unwrap_or_default().to_string())
        .collect();
    prints.sort();
    prints
}

/// A resumed session skips the client verifier, and sessions outlive a reload: without the
/// re-check, the sessions made before the CRL revoked their certificates would be served.
#[tokio::test]
async fn a_session_resumed_after_a_reloaded_crl_revoked_its_certificate_is_refused() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = Gw::standard(&pki, &up).await;
    let mut victims = Vec::new();
    for (serial, version) in [(0x5e55_1013, &TLS13), (0x5e55_1012, &TLS12)] {
        let victim = pki.client_with_serial("A81001", serial);
        let client = gw.client_config_for(&[version], Some(&victim), &[b"http/1.1"]);
        let (kind, answer) = gw.exchange(&client).await;
        assert_eq!(kind, Some(HandshakeKind::Full), "{version:?}");
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{version:?}");
        victims.push((version, victim, client));
    }
    let bystander = gw.client_config(Some(&pki.client("A81001")), &[b"http/1.1"]);
    assert_eq!(gw.exchange(&bystander).await.0, Some(HandshakeKind::Full));

    pki.revoke(&victims.iter().map(|v| v.1.serial).collect::<Vec<_>>());
    gw.reload().await.unwrap();

    for (version, _, client) in &victims {
        let (kind, answer) = gw.exchange(client).await;
        assert_eq!(
            kind,
            Some(HandshakeKind::Resumed),
            "{version:?}: the session outlived the reload"
        );
        assert!(
            answer.is_empty(),
            "{version:?}: refused, not served: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let (kind, answer) = gw.exchange(&bystander).await;
    assert_eq!(kind, Some(HandshakeKind::Resumed));
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "a certificate still good is served"
    );

    let mut want: Vec<String> = victims.iter().map(|v| fingerprint(&v.1)).collect();
    want.sort();
    assert_eq!(rejected(&gw.stop().await, "revoked"), want);
}

#[tokio::test]
async fn a_session_resumed_after_its_certificate_expired_is_refused() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = Gw::standard(&pki, &up).await;
    let not_after = time::OffsetDateTime::now_utc() + time::Duration::seconds(4);
    let mut spec = LeafSpec::client("short-lived system of A81001");
    spec.uris = vec!["urn:nhs:ods:A81001".into()];
    spec.not_after = Some(not_after);
    let leaf = pki.issue(&spec);
    let client = gw.client_config(Some(&leaf), &[b"http/1.1"]);
    let (kind, answer) = gw.exchange(&client).await;
    assert_eq!(kind, Some(HandshakeKind::Full));
    assert!(answer.starts_with(b"HTTP/1.1 200"), "valid for a few seconds yet");

    // The one thing that must change is the clock: wait until it is past `not_after` (whole
    // seconds, as certificates count them).
    let past = not_after + time::Duration::seconds(1) - time::OffsetDateTime::now_utc();
    tokio::time::sleep(past.try_into().unwrap_or_default()).await;

    let (kind, answer) = gw.exchange(&client).await;
    assert_eq!(kind, Some(HandshakeKind::Resumed), "within session_lifetime");
    assert!(answer.is_empty(), "refused: {}", String::from_utf8_lossy(&answer));
    assert_eq!(rejected(&gw.stop().await, "expired"), [fingerprint(&leaf)]);
}

/// A root CA and an intermediate under it (PEM each), and the intermediate's empty CRL.
fn root_and_intermediate() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose};
    let ca = |cn: &str| {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.key_identifier_method = KeyIdMethod::Sha256;
        (p, KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap())
    };
    let (root, root_key) = ca("test root CA");
    let root_pem = root.self_signed(&root_key).unwrap().pem();
    let root = rcgen::Issuer::new(root, root_key);
    let (inter, inter_key) = ca("test intermediate CA");
    let inter_pem = inter.signed_by(&inter_key, &root).unwrap().pem();
    let inter = rcgen::Issuer::new(inter, inter_key);
    let now = time::OffsetDateTime::now_utc();
    let crl = rcgen::CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(7),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl_pem = crl.signed_by(&inter).unwrap().pem().unwrap();
    (root_pem, inter_pem, crl_pem)
}

/// webpki lets a certificate through whose issuer has no CRL configured, so nothing under such
/// an intermediate is ever checked for revocation: `check` says so, once per CA, naming the
/// file, and the config still loads.
#[test]
fn check_warns_about_an_intermediate_client_ca_that_no_crl_covers() {
    let pki = TestPki::new();
    let (root, intermediate, crl) = root_and_intermediate();
    let bundle = pki.write("bundle.pem", format!("{root}{intermediate}"));
    let inter_crl = pki.write("intermediate.crl", crl);
    let warnings = |crls: &[&std::path::Path]| {
        let crls: Vec<String> = crls.iter().map(|p| p.display().to_string()).collect();
        let config = pki
            .config()
            .standard(["http://127.0.0.1:9"])
            .client_cas(&[&pki.path().join("ca.pem"), &bundle])
            .listener(format!("crl = {}", support::config::list(&crls)))
            .audit(&pki.path().join("audit"));
        let path = pki.write("caregate.toml", config.to_string());
        let config = caregate::config::Config::load(&path).unwrap();
        let summary = caregate::cli::check_summary(&caregate::state::State::build(config, 0).unwrap());
        summary
            .lines()
            .filter(|l| l.contains("warning"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let ca_crl = pki.path().join("ca.crl");
    let found = warnings(&[&ca_crl]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains(&format!(
            "listener.client_ca[1]: the intermediate CA \"CN=test intermediate CA\" in {} has no CRL in listener.crl",
            bundle.display()
        )) && found[0].contains("never checked for revocation"),
        "{found:?}"
    );
    assert_eq!(warnings(&[&ca_crl, &inter_crl]), Vec::<String>::new());
}
