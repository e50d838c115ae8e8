//! Issue 19, "Filling the audit disk is a denial of service": what an unauthenticated peer can
//! add to the trail is bounded.
//!
//! Before the fix every bare TCP connect-and-close wrote a `tls_rejected` record (about 270
//! bytes), and a certificate with a huge subject about four times its subject per handshake.
//! Now refusals past `refusals::PER_SECOND` per address per second are counted into one
//! `refusals_coalesced` record, and a refused certificate's subject is a 256-byte summary.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use caregate::audit::refusals::PER_SECOND;
use caregate::pki::{Leaf, LeafSpec};
use support::*;

/// Connections of the flood. The issue asks for 100,000; on the 2 shared cores this was written
/// on a debug build takes about 1.4 ms a connection (140 s for 100,000), so 10,000 keep the test
/// near 15 s. The bound below is per second of flood, not per connection, so it does not scale
/// with the count: 100,000 were measured within it too (427,133 bytes in 140 s, 4.3 bytes per
/// connection, against about 200 before).
const FLOOD: u64 = 10_000;
/// At most this many at once, from one client address.
const CONCURRENCY: usize = 32;
/// Generous per-record sizes, from the records as written (a `tls_rejected` without a
/// certificate is about 200 bytes on loopback, a `refusals_coalesced` about 330).
const REJECTED_MAX: u64 = 400;
const COALESCED_MAX: u64 = 600;

/// Bytes of the trail's files.
fn trail_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Waits until the gateway has refused `n` handshakes in all (its `/metrics`).
async fn wait_refused(gw: &Gw, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = metric(&gw.scrape().await, "caregate_tls_rejections_total", &[]).unwrap_or(0.0) as u64;
        if seen >= n {
            return;
        }
        assert!(Instant::now() < deadline, "only {seen} of {n} refusals seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bare_connections_adds_a_bounded_number_of_bytes_to_the_trail() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = Gw::standard(&pki, &up).await;
    let addr = gw.addr();
    // The start record is written before any flood.
    while trail_bytes(&gw.audit_dir) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = trail_bytes(&gw.audit_dir);

    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < FLOOD {
                // Connect and close at once: no TLS, nothing sent.
                drop(tokio::net::TcpStream::connect(addr).await.unwrap());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    wait_refused(&gw, FLOOD).await;
    let seconds = started.elapsed().as_secs() + 1;
    let metrics = gw.scrape().await;
    let records = gw.stop().await;
    let added = trail_bytes(&gw.audit_dir) - before;

    // Everything is accounted for: written one by one, or counted.
    let rejected = records.iter().filter(|r| r["event"] == "tls_rejected").count() as u64;
    let coalesced: Vec<_> = records.iter().filter(|r| r["event"] == "refusals_coalesced").collect();
    let counted: u64 = coalesced.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(rejected + counted, FLOOD);
    // Every refusal counted rather than written shows in /metrics.
    let coalesced_metric = metric(&metrics, "caregate_refusals_coalesced_total", &["source=\"handshake\""]);
    assert_eq!(coalesced_metric, Some(counted as f64));
    assert!(coalesced
        .iter()
        .all(|r| r["ip"] == "127.0.0.1" && r["since"].is_string()));

    // One address: at most PER_SECOND records and one summary per second it lasted (plus
    // one window for the edges), and the stop record.
    let windows = seconds + 1;
    let bound = windows * (u64::from(PER_SECOND) * REJECTED_MAX + COALESCED_MAX) + 1024;
    let line = records
        .iter()
        .find(|r| r["event"] == "tls_rejected")
        .map(|r| r.to_string().len() + 1);
    eprintln!("a tls_rejected line (no certificate) is about {line:?} bytes: the cost of a connection before");
    eprintln!(
        "{FLOOD} connections in {:.1}s added {added} bytes to the trail ({:.3} bytes per connection; bound {bound}): {rejected} tls_rejected, {} refusals_coalesced",
        started.elapsed().as_secs_f64(),
        added as f64 / FLOOD as f64,
        coalesced.len()
    );
    assert!(added <= bound, "{added} bytes added, bound {bound}");
    assert!(rejected <= windows * u64::from(PER_SECOND));
}

/// A client certificate whose subject is a 60 KB common name, from a CA the gateway does not
/// trust (refused: unknown issuer). (A self-signed one would carry the name twice, as subject
/// and issuer: 120 KB, past rustls' 64 KiB handshake message, refused before any verifier
/// reads it.)
fn huge_subject_certificate(pki: &TestPki) -> (Leaf, String) {
    let cn = "x".repeat(60_000);
    (pki.other_ca.issue(&LeafSpec::client(&cn)).unwrap(), cn)
}

/// A handshake presenting `leaf`: true if refused. Built by hand
/// because rustls' client, like any careful client, will not load a certificate with a 60 KB
/// name; the certificate is presented as it is, without that check.
async fn present(gw: &Gw, pki: &TestPki, leaf: &Leaf) -> bool {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Debug)]
    struct Present(std::sync::Arc<rustls::sign::CertifiedKey>);
    impl rustls::client::ResolvesClientCert for Present {
        fn resolve(
            &self,
            _: &[&[u8]],
            _: &[rustls::SignatureScheme],
        ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
        fn has_certs(&self) -> bool {
            true
        }
    }
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
    let certified = rustls::sign::CertifiedKey::new(vec![CertificateDer::from(leaf.cert_der.clone())], signer);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pki.ca.cert_der())).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_cert_resolver(std::sync::Arc::new(Present(std::sync::Arc::new(certified))));
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let Ok(mut tls) = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await else {
        return true;
    };
    // TLS 1.3: the server's verdict on the client's certificate comes after the client's side of
    // the handshake; a refused client reads an alert or EOF.
    if tls
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .is_err()
    {
        return true;
    }
    let mut buf = [0u8; 64];
    !matches!(tls.read(&mut buf).await, Ok(n) if n > 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_with_a_60kb_subject_adds_at_most_a_few_kb_per_handshake() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = Gw::standard(&pki, &up).await;
    while trail_bytes(&gw.audit_dir) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = trail_bytes(&gw.audit_dir);
    let (cert, cn) = huge_subject_certificate(&pki);
    assert!(cert.cert_der.len() > 60_000);
    const HANDSHAKES: u64 = 5;
    for _ in 0..HANDSHAKES {
        assert!(present(&gw, &pki, &cert).await);
    }
    wait_refused(&gw, HANDSHAKES).await;
    let records = gw.stop().await;
    let added = trail_bytes(&gw.audit_dir) - before;
    eprintln!(
        "{HANDSHAKES} handshakes with a {} byte certificate added {added} bytes ({} per handshake)",
        cert.cert_der.len(),
        added / HANDSHAKES
    );
    assert!(added <= HANDSHAKES * 2048, "{added} bytes for {HANDSHAKES} handshakes");

    let refused: Vec<_> = records.iter().filter(|r| r["event"] == "tls_rejected").collect();
    assert_eq!(refused.len() as u64, HANDSHAKES);
    let client = &refused[0]["client"];
    let subject = client["subject"].as_str().unwrap();
    assert!(subject.len() <= 256 && subject.starts_with("CN=xxxx"), "{subject}");
    let whole = client["subject_len"].as_u64().unwrap();
    assert!(whole >= cn.len() as u64, "{whole}");
    assert_eq!(client["subject_sha256"].as_str().unwrap().len(), 64);
    assert!(client["fingerprint"].as_str().unwrap().starts_with("sha256:"));
}
