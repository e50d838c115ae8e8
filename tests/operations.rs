//! Operating the gateway (SPEC §6): reload without dropping transfers, refused reloads,
//! revocation that bites open connections, drain, the admin listener's metrics and readiness,
//! and the real binary's signals and logs. Real TLS on loopback; no sleeps as synchronisation.

mod common;

use bytes::Bytes;
use caregate::pki::{Leaf, LeafSpec};
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::digest;
use serde_json::Value;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// === helpers ===

type H1Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
type ConnTask = tokio::task::JoinHandle<Result<(), hyper::Error>>;

/// An HTTP/1.1 keep-alive connection: the request sender and the task driving the connection
/// (it ends when the gateway closes the connection).
async fn h1(gw: SocketAddr, pki: &TestPki, leaf: &Leaf) -> (H1Sender, ConnTask) {
    let tls = connect(gw, pki, Some(leaf), &[b"http/1.1"]).await.expect("handshake");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    (sender, tokio::spawn(conn))
}

/// A download of `size` pattern bytes over a fresh HTTP/1.1 connection: answered 200, its body
/// not yet read.
struct Download {
    sender: H1Sender,
    conn: ConnTask,
    request_id: String,
    body: Incoming,
}

async fn start_download(gw: SocketAddr, pki: &TestPki, leaf: &Leaf, size: usize) -> Download {
    let (mut sender, conn) = h1(gw, pki, leaf).await;
    let resp = sender.send_request(get(&format!("/files/bytes/{size}"))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    Download {
        sender,
        conn,
        request_id,
        body: resp.into_body(),
    }
}

async fn h2(
    gw: SocketAddr,
    pki: &TestPki,
    leaf: &Leaf,
) -> (hyper::client::conn::http2::SendRequest<Full<Bytes>>, ConnTask) {
    let tls = connect(gw, pki, Some(leaf), &[b"h2"]).await.expect("handshake");
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    (sender, tokio::spawn(conn))
}

/// Reads body frames into `hash` until at least `want` more bytes arrived or the body ended;
/// returns how many arrived. Nothing is kept but the hash.
async fn read_hashing(body: &mut Incoming, hash: &mut digest::Context, want: u64) -> u64 {
    let mut got = 0;
    while got < want {
        match tokio::time::timeout(Duration::from_secs(60), body.frame())
            .await
            .expect("body stalled")
        {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    hash.update(&data);
                    got += data.len() as u64;
                }
            }
            Some(Err(e)) => panic!("the body failed after {got} bytes: {e}"),
            None => break,
        }
    }
    got
}

/// SHA-256 of the upstream fixture's `/bytes/<n>` body (byte i is i % 251), made in blocks.
fn pattern_sha(n: usize) -> String {
    let block = pattern(251 * 4096);
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut left = n;
    while left > 0 {
        let k = left.min(block.len());
        ctx.update(&block[..k]);
        left -= k;
    }
    caregate::hex(ctx.finish().as_ref())
}

/// `GET path` on the admin listener: (status, body).
async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(admin).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

async fn scrape(admin: SocketAddr) -> String {
    let (status, body) = admin_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    body
}

/// The sum of the samples of series `name` whose labels contain every one of `labels`
/// (e.g. `route="files"`); None when there is no such sample.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{' | b' ')))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

fn lifecycle(records: &[Value], action: &str) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["event"] == "lifecycle" && r["action"] == action)
        .cloned()
        .collect()
}

fn sha_hex(bytes: &[u8]) -> String {
    caregate::hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// Rewrites the gateway's config file with `from` replaced by `to` (which must occur).
fn edit_config(gw: &Gw, from: &str, to: &str) {
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    assert!(text.contains(from), "the config has no {from:?}");
    std::fs::write(&gw.config_path, text.replace(from, to)).unwrap();
}

/// Adds these files of the test PKI's folder to the gateway's `client_ca`, after `ca.pem`
/// (for the next reload).
fn add_client_cas(gw: &Gw, pki: &TestPki, files: &[&str]) {
    let p = pki.path().display();
    let more: String = files.iter().map(|f| format!(r#", "{p}/{f}""#)).collect();
    edit_config(
        gw,
        &format!(r#"client_ca = ["{p}/ca.pem"]"#),
        &format!(r#"client_ca = ["{p}/ca.pem"{more}]"#),
    );
}

/// A client certificate for `org` with this exact serial.
fn client_with_serial(pki: &TestPki, org: &str, serial: u64) -> Leaf {
    let mut spec = LeafSpec::client(&format!("system {serial:x} of {org}"));
    spec.uris = vec![format!("urn:nhs:ods:{org}")];
    spec.serial = Some(serial);
    pki.issue(&spec)
}

// === reload ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_in_flight_survives_a_reload_that_changes_policy() {
    const SIZE: usize = 256 << 20;
    let pki = TestPki::new();
    let up = start_upstream().await;
    let gw = start_gateway(&pki, &up).await;
    let gp = pki.client("A81001");

    let Download {
        sender,
        conn,
        request_id,
        mut body,
    } = start_download(gw.addr(), &pki, &gp, SIZE).await;
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut got = read_hashing(&mut body, &mut hash, 8 << 20).await;

    // A81001 loses the files route while its download is in flight.
    edit_config(&gw, r#"orgs = ["RXC", "A81001"]"#, r#"orgs = ["RXC"]"#);
    gw.running.reload().await.expect("the new config loads");
    let a = send(gw.addr(), &pki, &gp, false, get("/files/bytes/10")).await;
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (403, Some("not_allowed")),
        "new requests see the new policy"
    );
    let a = send(gw.addr(), &pki, &gp, true, get("/files/bytes/10")).await;
    assert_eq!(a.status, 403, "over HTTP/2 too");
    let a = send(gw.addr(), &pki, &pki.client("RXC"), false, get("/files/bytes/10")).await;
    assert_eq!(a.status, 200, "the rule's other organisation still passes");

    got += read_hashing(&mut body, &mut hash, u64::MAX).await;
    assert_eq!(got, SIZE as u64, "the download completes");
    assert_eq!(
        caregate::hex(hash.finish().as_ref()),
        pattern_sha(SIZE),
        "byte-identical"
    );
    drop(sender);
    let _ = conn.await;

    gw.running.shutdown();
    let audit = gw.audit_dir.clone();
    gw.running.wait().await.unwrap();
    let records = audit_records(&audit);
    assert_eq!(lifecycle(&records, "reload").len(), 1);
    let done = records
        .iter()
        .find(|r| r["event"] == "complete" && r["request_id"] == request_id.as_str())
        .unwrap();
    assert_eq!(
        (done["status"].as_u64(), done["bytes_out"].as_u64()),
        (Some(200), Some(SIZE as u64))
    );
    assert_eq!(done["outcome"], "ok");
}

#[tokio::test]
async fn a_config_that_fails_on_reload_is_refused_and_the_old_one_keeps_serving() {
    let pki = TestPki::new();
    let up = start_upstream().await;
    let gw = start_gateway(&pki, &up).await;
    let admin = gw.running.admin_addr.unwrap();
    let gp = pki.client("A81001");
    let good = std::fs::read_to_string(&gw.config_path).unwrap();

    // A key that does not exist, then a file the config names that does not exist.
    let broken = [
        format!("{good}\n[listener2]\nbind = 1\n"),
        good.replace("server.pem", "missing.pem"),
    ];
    for text in &broken {
        std::fs::write(&gw.config_path, text).unwrap();
        assert!(gw.running.reload().await.is_err(), "a broken config must be refused");
        let a = send(gw.addr(), &pki, &gp, false, get("/fhir/Patient/9990000018")).await;
        assert_eq!(a.status, 200, "the old config keeps serving");
        assert!(
            !handshake_refused(gw.addr(), &pki, Some(&gp)).await,
            "and its TLS state"
        );
    }
    let m = scrape(admin).await;
    assert_eq!(metric(&m, "caregate_reloads_total", &[r#"result="failed""#]), Some(2.0));
    assert_eq!(
        admin_get(admin, "/readyz").await.0,
        200,
        "a refused reload does not make it unready"
    );

    // Fixing the file and reloading again works.
    std::fs::write(&gw.config_path, &good).unwrap();
    gw.running.reload().await.unwrap();
    let m = scrape(admin).await;
    assert_eq!(metric(&m, "caregate_reloads_total", &[r#"result="ok""#]), Some(1.0));

    gw.running.shutdown();
    let audit = gw.audit_dir.clone();
    gw.running.wait().await.unwrap();
    let records = audit_records(&audit);
    let failed = lifecycle(&records, "reload_failed");
    assert_eq!(failed.len(), 2);
    for (record, text) in failed.iter().zip(&broken) {
        assert_eq!(
            record["config_sha256"],
            sha_hex(text.as_bytes()),
            "names the refused file"
        );
    }
    assert_eq!(lifecycle(&records, "reload").len(), 1);
}

// === workers ===

/// Each connection goes to the least busy worker thread and is served there, forwarding through
/// that worker's own upstream pool: six keep-alive connections on three workers sit two to a
/// worker, every request is answered, and a shutdown closes them all.
#[tokio::test]
async fn connections_are_spread_over_the_workers_and_each_worker_forwards() {
    let pki = TestPki::new();
    let up = start_upstream().await;
    let gw = start_gateway_with(&pki, "workers = 3", &standard_rest(&up)).await;
    let gp = pki.client("A81001");
    let mut conns = Vec::new();
    for _ in 0..6 {
        let (mut sender, task) = h1(gw.addr(), &pki, &gp).await;
        for _ in 0..2 {
            let resp = sender.send_request(get("/fhir/Patient/9990000018")).await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.into_body().collect().await.unwrap();
        }
        conns.push((sender, task));
    }
    let m = scrape(gw.running.admin_addr.unwrap()).await;
    for worker in ["0", "1", "2"] {
        let label = format!("worker=\"{worker}\"");
        assert_eq!(
            metric(&m, "caregate_worker_connections", &[label.as_str()]),
            Some(2.0),
            "worker {worker}"
        );
    }

    gw.running.shutdown();
    gw.running.wait().await.unwrap();
    for (_, task) in conns {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the drain closes idle keep-alive connections")
            .unwrap()
            .unwrap();
    }
}

// === revocation ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_revoked_by_a_reloaded_crl_loses_its_open_connections_and_cannot_reconnect() {
    const SIZE: usize = 16 << 20;
    let pki = TestPki::new();
    let up = start_upstream().await;
    let gw = start_gateway(&pki, &up).await;
    // Top bit set: DER writes the serial with a leading zero byte, which the CRL entry and the
    // certificate must agree on.
    let victim = client_with_serial(&pki, "A81001", 0x8000_0000_0000_1234);
    let h2_victim = client_with_serial(&pki, "A81001", 0x0012_3456);
    let bystander = pki.client("A81001");

    // HTTP/1 keep-alive: one exchange done, a download in flight.
    let (mut sender, conn) = h1(gw.addr(), &pki, &victim).await;
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
    let (mut sender2, conn2) = h2(gw.addr(), &pki, &h2_victim).await;
    let r = sender2.send_request(get("/files/bytes/10")).await.unwrap();
    assert_eq!(r.status(), 200);
    r.into_body().collect().await.unwrap();

    pki.revoke(&[victim.serial, h2_victim.serial]);
    gw.running.reload().await.unwrap();

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
    assert!(handshake_refused(gw.addr(), &pki, Some(&victim)).await);
    assert!(handshake_refused(gw.addr(), &pki, Some(&h2_victim)).await);
    assert_eq!(
        send(gw.addr(), &pki, &bystander, false, get("/files/bytes/10"))
            .await
            .status,
        200
    );

    gw.running.shutdown();
    let audit = gw.audit_dir.clone();
    gw.running.wait().await.unwrap();
    let revoked = audit_records(&audit)
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
    std::fs::write(pki.path().join("other_ca.pem"), pki.other_ca.cert_pem()).unwrap();
    let up = start_upstream().await;
    let gw = start_gateway(&pki, &up).await;
    add_client_cas(&gw, &pki, &["other_ca.pem"]);
    gw.running.reload().await.unwrap();
    let victim = client_with_serial(&pki, "A81001", SERIAL);
    let mut spec = LeafSpec::client("system 1003 of A81001, other CA");
    spec.uris = vec!["urn:nhs:ods:A81001".into()];
    spec.serial = Some(SERIAL);
    let namesake = pki.other_ca.issue(&spec).unwrap();

    let (mut victim_sender, victim_conn) = h1(gw.addr(), &pki, &victim).await;
    let (mut sender, conn) = h1(gw.addr(), &pki, &namesake).await;
    for s in [&mut victim_sender, &mut sender] {
        let r = s.send_request(get("/files/bytes/10")).await.unwrap();
        assert_eq!(r.status(), 200);
        r.into_body().collect().await.unwrap();
    }

    pki.revoke(&[SERIAL]);
    gw.running.reload().await.unwrap();

    let closed = tokio::time::timeout(Duration::from_secs(10), victim_conn).await;
    assert!(closed.is_ok(), "the revoked certificate's connection must close");
    // Each request checks the certificate against the reloaded CRLs before it is served.
    sender.ready().await.unwrap();
    let r = sender.send_request(get("/files/bytes/10")).await.unwrap();
    assert_eq!(r.status(), 200, "the other CA's certificate is not revoked");
    r.into_body().collect().await.unwrap();
    assert!(!conn.is_finished());
    assert!(handshake_refused(gw.addr(), &pki, Some(&victim)).await);
    assert!(!handshake_refused(gw.addr(), &pki, Some(&namesake)).await);
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
    std::fs::write(pki.path().join("dn_ca.pem"), dn_ca).unwrap();
    std::fs::write(pki.path().join("dns_ca.pem"), dns_ca).unwrap();
    let up = start_upstream().await;
    let gw = start_gateway(&pki, &up).await;
    add_client_cas(&gw, &pki, &["dn_ca.pem", "dns_ca.pem"]);

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

    gw.running.reload().await.unwrap();
    assert!(
        handshake_refused(gw.addr(), &pki, Some(&dn_client)).await,
        "the warning is true"
    );
    let answer = send(gw.addr(), &pki, &dns_client, false, get("/files/bytes/10")).await;
    assert_eq!(answer.status, 200, "DNS constraints are evaluated, and this one is met");
}

// === CRL freshness and certificate expiry ===

#[tokio::test]
async fn a_stale_crl_refuses_or_warns_as_configured_and_shows_in_metrics() {
    let pki = TestPki::new();
    let up = start_upstream().await;
    let now = time::OffsetDateTime::now_utc();
    let stale = pki
        .ca
        .crl(&[], now - time::Duration::days(3), now - time::Duration::days(1))
        .unwrap();
    std::fs::write(pki.path().join("ca.crl"), stale).unwrap();
    // And a server certificate that expires in three days.
    let mut spec = LeafSpec::server(&["localhost", "127.0.0.1"]);
    spec.not_after = Some(now + time::Duration::days(3));
    let server = pki.issue(&spec);
    std::fs::write(pki.path().join("server.pem"), &server.cert_pem).unwrap();
    std::fs::write(pki.path().join("server.key"), &server.key_pem).unwrap();
    let gp = pki.client("A81001");

    for (extra, refused) in [
        ("", true),
        (r#"crl_expired = "refuse""#, true),
        (r#"crl_expired = "warn""#, false),
    ] {
        let gw = start_gateway_with(&pki, extra, &standard_rest(&up)).await;
        assert_eq!(
            handshake_refused(gw.addr(), &pki, Some(&gp)).await,
            refused,
            "{extra:?}"
        );
        let m = scrape(gw.running.admin_addr.unwrap()).await;
        let crl = metric(&m, "caregate_crl_next_update_seconds", &["ca.crl"]).expect("a CRL gauge");
        assert!(crl < -86000.0, "a stale CRL reads negative: {crl}");
        let cert = metric(&m, "caregate_server_cert_expiry_seconds", &[]).unwrap();
        assert!(cert > 0.0 && cert < 14.0 * 86400.0, "{cert}");
        gw.running.shutdown();
        gw.running.wait().await.unwrap();
    }
}

// === drain ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_download_finish_then_stops_with_a_final_record() {
    const SIZE: usize = 32 << 20;
    let pki = TestPki::new();
    let up = start_upstream().await;
    let gw = start_gateway(&pki, &up).await;
    let admin = gw.running.admin_addr.unwrap();
    let addr = gw.addr();
    let trust = pki.client("RXC");
    assert_eq!(admin_get(admin, "/readyz").await, (200, "ready\n".to_string()));
    assert_eq!(admin_get(admin, "/healthz").await.0, 200);

    let Download {
        sender,
        conn,
        request_id,
        mut body,
    } = start_download(addr, &pki, &trust, SIZE).await;
    let mut hash = digest::Context::new(&digest::SHA256);
    let first = read_hashing(&mut body, &mut hash, 1 << 20).await;
    // An idle keep-alive connection: drain closes it.
    let (idle, idle_conn) = h1(addr, &pki, &trust).await;

    gw.running.shutdown();
    let (status, why) = admin_get(admin, "/readyz").await;
    assert_eq!((status, why.as_str()), (503, "not ready: draining\n"));
    assert_eq!(metric(&scrape(admin).await, "caregate_draining", &[]), Some(1.0));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "the listener still accepts while draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(10), idle_conn).await.is_ok(),
        "idle connections are closed"
    );
    drop(idle);

    // The download carries on while the gateway waits for it.
    let reader = tokio::spawn(async move {
        let rest = read_hashing(&mut body, &mut hash, u64::MAX).await;
        (first + rest, caregate::hex(hash.finish().as_ref()))
    });
    let audit = gw.audit_dir.clone();
    let waited = tokio::time::timeout(Duration::from_secs(60), gw.running.wait())
        .await
        .expect("drained");
    assert!(waited.is_ok(), "{waited:?}");
    let (len, sha) = reader.await.unwrap();
    assert_eq!((len, sha), (SIZE as u64, pattern_sha(SIZE)));
    drop(sender);
    let _ = conn.await;

    let records = audit_records(&audit);
    let last = records.last().unwrap();
    assert_eq!(
        (&last["event"], &last["action"]),
        (&Value::from("lifecycle"), &Value::from("stop"))
    );
    let done = records
        .iter()
        .find(|r| r["event"] == "complete" && r["request_id"] == request_id.as_str())
        .unwrap();
    assert_eq!(
        (done["outcome"].as_str(), done["bytes_out"].as_u64()),
        (Some("ok"), Some(SIZE as u64))
    );
}

/// A transfer still running when the drain deadline passes is cut off: the gateway stops on
/// time, the client's body ends in an error, and the trail records the cut as `timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_still_running_at_the_drain_deadline_is_cut_off_and_recorded() {
    const SIZE: usize = 1 << 30;
    let pki = TestPki::new();
    let up = start_upstream().await;
    let gw = start_gateway_with(&pki, r#"drain_timeout = "1s""#, &standard_rest(&up)).await;
    let trust = pki.client("RXC");
    let Download {
        sender,
        conn,
        request_id,
        mut body,
    } = start_download(gw.addr(), &pki, &trust, SIZE).await;
    let mut hash = digest::Context::new(&digest::SHA256);
    // Then stop reading: the transfer stalls on back-pressure, still in flight.
    read_hashing(&mut body, &mut hash, 1 << 20).await;

    gw.running.shutdown();
    let audit = gw.audit_dir.clone();
    let waited = tokio::time::timeout(Duration::from_secs(20), gw.running.wait())
        .await
        .expect("the gateway stops at the drain deadline");
    assert!(waited.is_ok(), "{waited:?}");
    assert!(body.collect().await.is_err(), "the transfer was cut off");
    drop(sender);
    let _ = conn.await;

    let records = audit_records(&audit);
    let done = records
        .iter()
        .find(|r| r["event"] == "complete" && r["request_id"] == request_id.as_str())
        .expect("the cut transfer has its completion");
    assert_eq!(done["outcome"], "timeout");
    assert!(done["bytes_out"].as_u64().unwrap() < SIZE as u64);
    let last = records.last().unwrap();
    assert_eq!(
        (&last["event"], &last["action"]),
        (&Value::from("lifecycle"), &Value::from("stop"))
    );
}

// === metrics ===

#[tokio::test]
async fn metrics_move_with_requests_refusals_and_tls_rejections() {
    let pki = TestPki::new();
    let up = start_upstream().await;
    let rest = format!(
        r#"{}
[[upstream]]
name = "gone"
urls = ["http://127.0.0.1:1"]
connect_timeout = "1s"
response_timeout = "2s"

[[route]]
name = "gone"
path_prefix = "/gone/"
upstream = "gone"
class = "epr"
  [[route.allow]]
  orgs = ["RXC"]

[rate_limit.other]
requests_per_second = 0.01
burst = 1
"#,
        standard_rest(&up)
    );
    let gw = start_gateway_with(&pki, "", &rest).await;
    let admin = gw.running.admin_addr.unwrap();
    let before = scrape(admin).await;
    let v = |text: &str, name: &str, labels: &[&str]| metric(text, name, labels).unwrap_or(0.0);

    let gp = pki.client("A81001");
    let trust = pki.client("RXC");
    assert_eq!(
        send(gw.addr(), &pki, &gp, false, get("/fhir/Patient/9990000018"))
            .await
            .status,
        200
    );
    assert_eq!(
        send(
            gw.addr(),
            &pki,
            &pki.client("B99999"),
            false,
            get("/fhir/Patient/9990000018")
        )
        .await
        .status,
        403
    );
    assert_eq!(
        send(gw.addr(), &pki, &trust, false, get("/files/bytes/100"))
            .await
            .status,
        200
    );
    assert_eq!(
        send(gw.addr(), &pki, &trust, false, get("/files/bytes/100"))
            .await
            .status,
        429
    );
    assert_eq!(send(gw.addr(), &pki, &trust, false, get("/gone/x")).await.status, 502);
    assert!(handshake_refused(gw.addr(), &pki, None).await);
    let (open, _conn) = h1(gw.addr(), &pki, &gp).await;

    let after = scrape(admin).await;
    let delta = |name: &str, labels: &[&str]| v(&after, name, labels) - v(&before, name, labels);
    let req = "caregate_requests_total";
    assert_eq!(
        delta(req, &[r#"route="epr-fhir""#, r#"decision="allow""#, r#"status="200""#]),
        1.0
    );
    assert_eq!(
        delta(req, &[r#"route="epr-fhir""#, r#"decision="deny""#, r#"status="403""#]),
        1.0
    );
    assert_eq!(
        delta(req, &[r#"route="files""#, r#"class="other""#, r#"status="429""#]),
        1.0
    );
    assert_eq!(delta(req, &[r#"route="gone""#, r#"status="502""#]), 1.0);
    assert_eq!(delta("caregate_rate_limited_total", &[]), 1.0);
    assert_eq!(delta("caregate_upstream_errors_total", &[r#"upstream="gone""#]), 1.0);
    assert_eq!(
        delta("caregate_tls_rejections_total", &[r#"reason="no_certificate""#]),
        1.0
    );
    assert!(delta("caregate_request_duration_seconds_count", &[r#"route="epr-fhir""#]) >= 2.0);
    assert!(delta("caregate_response_bytes_total", &[]) >= 111.0);
    assert!(
        delta("caregate_audit_records_total", &[]) >= 10.0,
        "five access + complete pairs, a tls_rejected"
    );
    assert!(
        v(&after, "caregate_active_connections", &[]) >= 1.0,
        "the open connection counts"
    );
    assert_eq!(v(&after, "caregate_audit_healthy", &[]), 1.0);
    for series in [
        "caregate_audit_queue_depth",
        "caregate_audit_fsync_seconds",
        "caregate_audit_fsyncs_total",
        "caregate_audit_fsync_duration_seconds_count",
    ] {
        assert!(metric(&after, series, &[]).is_some(), "{series} is exported");
    }
    assert!(v(&after, "caregate_server_cert_expiry_seconds", &[]) > 14.0 * 86400.0);
    assert!(v(&after, "caregate_crl_next_update_seconds", &["ca.crl"]) > 0.0);
    assert!(!after.contains("9990000018"), "no patient identifier in a label");
    drop(open);

    gw.running.reload().await.unwrap();
    assert_eq!(
        v(&scrape(admin).await, "caregate_reloads_total", &[r#"result="ok""#]),
        1.0
    );
    assert_eq!(admin_get(admin, "/nothing").await.0, 404);
    gw.running.shutdown();
    gw.running.wait().await.unwrap();
}

// === the real binary ===

/// The `caregate` binary, killed if the test fails before it exits.
struct Process {
    child: std::process::Child,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Process {
    fn run(config: &Path) -> Process {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_caregate"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "debug")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                match line {
                    Ok(l) => lines.lock().unwrap().push(l),
                    Err(_) => return,
                }
            }
        });
        Process {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    /// The first log line (JSON) whose message is `message`, waiting for it.
    async fn log_line(&self, message: &str) -> Value {
        self.log_line_where(message, |_| true).await
    }

    /// The first log line with this message that `pred` accepts, waiting for it.
    async fn log_line_where(&self, message: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["message"] == message && pred(v));
            if let Some(v) = found {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no {message:?} in the log: {:?}",
                self.stderr.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit; returns its status and everything it wrote to stderr.
    async fn exit(&mut self) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "caregate did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        (status, self.stderr.lock().unwrap().clone())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_on_sighup_drains_on_sigterm_and_logs_no_patient_identifiers() {
    let pki = TestPki::new();
    let up = start_upstream().await;
    let work = tempfile::tempdir().unwrap();
    let audit_dir = work.path().join("audit");
    let (key, public) = caregate::pki::audit_signing_key().unwrap();
    std::fs::write(work.path().join("audit.key"), key).unwrap();
    std::fs::write(work.path().join("audit.pub"), public).unwrap();
    let rest = format!(
        "signing_key = \"{}\"\n{}",
        work.path().join("audit.key").display(),
        standard_rest(&up)
    );
    let config_path = work.path().join("caregate.toml");
    std::fs::write(
        &config_path,
        config_text(&pki, &audit_dir, r#"drain_timeout = "10s""#, &rest),
    )
    .unwrap();

    let mut gw = Process::run(&config_path);
    let listening = gw.log_line("caregate listening").await;
    let addr: SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
    let admin: SocketAddr = listening["admin"]
        .as_str()
        .expect("the admin address is logged")
        .parse()
        .unwrap();
    assert_eq!(admin_get(admin, "/readyz").await.0, 200);

    // Patient traffic of every kind: allowed, denied, refused, malformed, over both protocols,
    // with NHS numbers in paths, queries, headers and bodies.
    let nhs = ["9990000018", "9990000026", "9990000034", "9990000042", "9990000019"];
    let gp = pki.client("A81001");
    let trust = pki.client("RXC");
    let nobody = pki.client("B99999");
    let mut statuses = Vec::new();
    for h2 in [false, true] {
        for (leaf, path) in [
            (&gp, "/fhir/Patient/9990000018"),
            (&gp, "/fhir/Observation?patient=9990000026&_count=10"),
            (
                &gp,
                "/fhir/Patient?identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9990000034",
            ),
            (&gp, "/fhir/Patient/9990000019"),
            (&nobody, "/fhir/Patient/9990000042"),
            (&gp, "/nowhere/9990000018"),
            (&gp, "/fhir/Patient/%2e%2e/%2e%2e/9990000026"),
            (&trust, "/fhir/Patient/9990000042/$everything?subject=9990000034"),
        ] {
            statuses.push(send(addr, &pki, leaf, h2, get(path)).await.status);
        }
        let post = Request::post("https://localhost/fhir/Patient")
            .header("host", "localhost")
            .header("content-type", "application/fhir+json")
            .header("x-patient", "9990000026")
            .body(Full::new(Bytes::from_static(
                br#"{"resourceType":"Patient","id":"9990000018"}"#,
            )))
            .unwrap();
        statuses.push(send(addr, &pki, &trust, h2, post).await.status);
    }
    assert!(
        statuses.contains(&200) && statuses.contains(&403) && statuses.contains(&404),
        "{statuses:?}"
    );
    assert!(statuses.contains(&400), "{statuses:?}");
    let raw_bad = raw(
        addr,
        &pki,
        &gp,
        b"GET /fhir/Patient/9990000018 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    )
    .await;
    assert!(raw_bad.starts_with("HTTP/1.1 400"), "{raw_bad}");
    assert!(handshake_refused(addr, &pki, None).await);
    // A server's certificate offered as a client's: the audit's reason is `other`, and the log
    // says what that was.
    let server_cert = pki.issue(&LeafSpec::server(&["gp.example"]));
    assert!(handshake_refused(addr, &pki, Some(&server_cert)).await);
    let refused = gw
        .log_line_where("TLS handshake refused", |v| v["reason"] == "other")
        .await;
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(error.contains("extended key usage"), "{refused}");
    let refused = gw
        .log_line_where("TLS handshake refused", |v| v["reason"] == "no_certificate")
        .await;
    assert!(refused["error"].as_str().is_some_and(|e| !e.is_empty()), "{refused}");
    let m = scrape(admin).await;
    assert!(metric(&m, "caregate_requests_total", &[]).unwrap() >= 18.0);

    // SIGHUP: a reload, logged and audited.
    gw.signal("-HUP");
    gw.log_line("config reloaded").await;
    assert_eq!(
        metric(&scrape(admin).await, "caregate_reloads_total", &[r#"result="ok""#]),
        Some(1.0)
    );

    // SIGTERM: drain and exit 0.
    gw.signal("-TERM");
    let (status, log) = gw.exit().await;
    assert!(status.success(), "exit status {status:?}; log: {log:?}");
    assert!(log.iter().any(|l| l.contains("\"stopped\"")), "{log:?}");

    // The operational log: JSON lines, and no NHS number anywhere in it (at debug level).
    assert!(log.len() > 5);
    for line in &log {
        assert!(serde_json::from_str::<Value>(line).is_ok(), "not a JSON line: {line}");
        for n in nhs {
            assert!(!line.contains(n), "an NHS number in the log: {line}");
        }
        assert!(
            !line.contains("9990000"),
            "a test NHS number (999 range) in the log: {line}"
        );
    }

    // The audit trail holds what the log must not, and ends with stop and a signed checkpoint.
    let records = audit_records(&audit_dir);
    let trail = records.iter().map(|r| r.to_string()).collect::<String>();
    assert!(trail.contains("9990000018"));
    assert_eq!(lifecycle(&records, "start").len(), 1);
    assert_eq!(lifecycle(&records, "reload").len(), 1);
    let n = records.len();
    assert_eq!(records[n - 1]["event"], "checkpoint", "the final checkpoint");
    assert_eq!(
        (&records[n - 2]["event"], &records[n - 2]["action"]),
        (&Value::from("lifecycle"), &Value::from("stop"))
    );
}
