//! Connections that never end (issue 19): an HTTP/2 client that never sends its preface, a
//! request body that stops coming, a response nobody reads, and one client taking every
//! connection. Real loopback TLS against the gateway in-process; every wait is bounded, and each
//! test ends with the connection and request gauges back at zero.

mod support;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use support::client::TlsStream;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Far beyond every deadline these tests configure (300 ms), far below "never".
const BOUND: Duration = Duration::from_secs(10);

/// The standard gateway with short deadlines: 300 ms for heads, the HTTP/2 preface and idle
/// bodies; an upstream that may take 30 s to answer (so its deadline is never what fires).
fn config(pki: &TestPki, up: &Upstream) -> GatewayConfig {
    pki.config()
        .standard([up.url()])
        .timeouts("1s", "30s")
        .listener(r#"header_timeout = "300ms""#)
        .listener(r#"body_idle_timeout = "300ms""#)
}

/// Polls `check` (every 20 ms) until it holds; panics after [`BOUND`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let waited = tokio::time::timeout(BOUND, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "not within {BOUND:?}: {what}");
}

/// Reads until the gateway closes the connection (EOF or an error); false if it is still open
/// after [`BOUND`].
async fn closed_by_gateway(tls: &mut TlsStream) -> bool {
    let mut buf = vec![0u8; 64 << 10];
    tokio::time::timeout(BOUND, async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// The `complete` record of request `id`, once written.
async fn completion_of(gw: &Gw, id: &str) -> Value {
    eventually(&format!("a complete record for {id}"), || async {
        completion(&gw.records(), id).is_some()
    })
    .await;
    completion(&gw.records(), id).unwrap().clone()
}

/// Every connection closed and every request over: the gauges are back at zero.
async fn gauges_back_to_zero(gw: &Gw) {
    eventually(
        "caregate_in_flight_requests and caregate_active_connections at 0",
        || async {
            let m = gw.scrape().await;
            metric(&m, "caregate_in_flight_requests", &[]) == Some(0.0)
                && metric(&m, "caregate_active_connections", &[]) == Some(0.0)
                && metric(&m, "caregate_worker_connections", &[]).unwrap_or(0.0) == 0.0
        },
    )
    .await;
}

fn refused(m: &str, reason: &str) -> f64 {
    metric(
        m,
        "caregate_connections_refused_total",
        &[&format!("reason=\"{reason}\"")],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn an_h2_client_that_never_sends_its_preface_is_closed_after_header_timeout() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(&pki, config(&pki, &up)).await;
    let gp = pki.client("A81001");

    let mut tls = gw.connect(Some(&gp), &[b"h2"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // Nothing sent: no preface, no SETTINGS.
    assert!(
        closed_by_gateway(&mut tls).await,
        "an HTTP/2 connection without a preface stayed open"
    );

    // One that sends its preface is served as ever.
    let a = gw.request(&gp).path("/fhir/Patient/9990000018").h2().send().await;
    assert_eq!(a.status, 200);
    drop(tls);
    gauges_back_to_zero(&gw).await;
}

#[tokio::test]
async fn a_request_body_that_stops_coming_is_cut_off_and_its_upstream_request_aborted() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(&pki, config(&pki, &up)).await;
    let trust = pki.client("RXC");

    let mut tls = gw.connect(Some(&trust), &[b"http/1.1"]).await.unwrap();
    let head = "POST /files/upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n";
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&pattern(1000)).await.unwrap();
    tls.flush().await.unwrap();
    // ... and nothing more. The gateway gives up on the body and closes the connection.
    let mut out = Vec::new();
    let read = tokio::time::timeout(BOUND, tls.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "a stalled upload kept its connection open");
    let text = String::from_utf8_lossy(&out);
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no answer with a request id: {text:?}"))
        .to_string();
    // The client timed out, not the upstream: 408, if the client still reads.
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(text.contains("\"error\":\"client_timeout\""), "{text}");

    let done = completion_of(&gw, &id).await;
    assert_eq!(done["outcome"], "client_timeout", "{done}");
    assert_eq!(done["status"], 408, "{done}");
    assert_eq!(done["bytes_in"], 1000, "{done}");
    // The upstream saw its request fail part-way: it never got the whole body.
    eventually("the upstream saw the request", || async { !up.seen().is_empty() }).await;
    assert!(up.seen()[0].body_len < 1_000_000, "{:?}", up.seen()[0]);
    gauges_back_to_zero(&gw).await;
}

/// A download over HTTP/1.1 whose client reads nothing: the gateway's writes block, and the
/// connection ends after body_idle_timeout. The record counts what reached the socket (all of
/// which the client can still read after the close), not what hyper and rustls were holding.
#[tokio::test]
async fn an_h1_client_that_stops_reading_a_response_is_cut_off() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(&pki, config(&pki, &up)).await;
    let trust = pki.client("RXC");

    // Far more than the socket buffers on both sides hold.
    let size = 256 << 20;
    let mut d = gw.download(&trust, size).await;
    let done = completion_of(&gw, &d.request_id).await;
    assert_eq!(done["outcome"], "client_aborted", "{done}");
    assert!(done["bytes_out"].as_u64().unwrap() < size as u64, "{done}");

    // What the client sees when it reads again: the body ends short, with an error.
    let mut got = 0usize;
    let ended = tokio::time::timeout(BOUND, async {
        while let Some(frame) = d.body.frame().await {
            match frame {
                Ok(f) => got += f.data_ref().map_or(0, Bytes::len),
                Err(_) => return true,
            }
        }
        false
    })
    .await;
    assert_eq!(ended, Ok(true), "the body should fail part-way");
    assert!(got < size);
    let bytes_out = done["bytes_out"].as_u64().unwrap();
    assert!(
        bytes_out <= got as u64,
        "recorded {bytes_out} delivered, the client got {got}"
    );
    // Short of it by no more than what was written after the last flush that returned.
    assert!(
        got as u64 - bytes_out < 1 << 20,
        "recorded {bytes_out}, the client got {got}"
    );
    drop(d);
    gauges_back_to_zero(&gw).await;
}

/// The same over HTTP/2, where a client that reads nothing only stops granting flow-control
/// window: the socket never blocks, hyper just stops asking the body for more.
#[tokio::test]
async fn an_h2_client_that_stops_reading_a_response_is_cut_off() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(&pki, config(&pki, &up)).await;
    let trust = pki.client("RXC");

    let size = 256 << 20;
    let (mut sender, conn) = gw.h2(&trust).await;
    let resp = sender.send_request(get(&format!("/files/bytes/{size}"))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    // Held, never read.
    let _body = resp.into_body();

    let done = completion_of(&gw, &id).await;
    assert_eq!(done["outcome"], "client_aborted", "{done}");
    assert!(done["bytes_out"].as_u64().unwrap() < size as u64, "{done}");
    // The gateway closed the connection.
    let ended = tokio::time::timeout(BOUND, conn).await;
    assert!(ended.is_ok(), "the HTTP/2 connection stayed open");
    drop(sender);
    gauges_back_to_zero(&gw).await;
}

#[tokio::test]
async fn one_address_cannot_take_more_than_max_connections_per_address() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(&pki, config(&pki, &up).listener("max_connections_per_address = 2")).await;
    let gp = pki.client("A81001");

    let (mut first, first_conn) = gw.h1(&gp).await;
    let (mut second, second_conn) = gw.h1(&gp).await;
    for s in [&mut first, &mut second] {
        let r = s.send_request(get("/fhir/Patient/9990000018")).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    // A third from the same address is closed before its handshake.
    assert!(gw.connect(Some(&gp), &[b"http/1.1"]).await.is_err());
    assert_eq!(refused(&gw.scrape().await, "per_address"), 1.0);

    // Once one closes, the address may connect again.
    drop(first);
    let _ = tokio::time::timeout(BOUND, first_conn)
        .await
        .expect("the first connection ends");
    eventually("a new connection from the address once one closed", || async {
        gw.connect(Some(&gp), &[b"http/1.1"]).await.is_ok()
    })
    .await;

    drop(second);
    let _ = tokio::time::timeout(BOUND, second_conn).await;
    gauges_back_to_zero(&gw).await;
}

#[tokio::test]
async fn one_organisation_cannot_take_more_than_max_connections_per_org() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(&pki, config(&pki, &up).listener("max_connections_per_org = 1")).await;
    let one = pki.client("A81001");
    // Another system of the same organisation: a certificate of its own.
    let other_system = pki.client_with_serial("A81001", 0x5151);

    let (mut held, held_conn) = gw.h1(&one).await;
    let r = held.send_request(get("/fhir/Patient/9990000018")).await.unwrap();
    assert_eq!(r.status(), 200);

    // The handshake completes (the organisation is only known then), then the connection
    // closes without an answer.
    assert!(gw.handshake_refused(Some(&other_system)).await);
    assert_eq!(refused(&gw.scrape().await, "per_org"), 1.0);
    // Other organisations are not affected.
    assert_eq!(gw.get(&pki.client("RXC"), "/fhir/Patient/9990000018").await.status, 200);

    drop(held);
    let _ = tokio::time::timeout(BOUND, held_conn)
        .await
        .expect("the held connection ends");
    eventually("the organisation may connect again", || async {
        !gw.handshake_refused(Some(&other_system)).await
    })
    .await;
    gauges_back_to_zero(&gw).await;
}
