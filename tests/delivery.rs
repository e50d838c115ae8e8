//! The `complete` record tells the truth about delivery and broken bodies (issue 19): a request
//! body that breaks its own framing after its head went upstream aborts the upstream request
//! (never completed as if whole) and its connection, and is recorded as `client_error`; a head
//! hyper refuses by itself (431) is recorded too. (A response's record waits for its delivery:
//! `tests/connections.rs`, `an_h1_client_that_stops_reading_a_response_is_cut_off`.)
//!
//! Real loopback TLS against the gateway in-process, a real upstream; one worker, so that the
//! upstream connection a request would reuse is the one the test watches.

mod support;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const BOUND: Duration = Duration::from_secs(10);

fn config(pki: &TestPki, up: &Upstream) -> GatewayConfig {
    pki.config().standard([up.url()]).listener("workers = 1")
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

/// The `complete` record of request `id`, once written.
async fn completion_of(gw: &Gw, id: &str) -> Value {
    eventually(&format!("a complete record for {id}"), || async {
        completion(&gw.records(), id).is_some()
    })
    .await;
    completion(&gw.records(), id).unwrap().clone()
}

/// Two good requests over one upstream connection (the second reuses the first's): the
/// upstream connection a broken request will go out on.
async fn warm(gw: &Gw, up: &Upstream, trust: &caregate::pki::Leaf) {
    for _ in 0..2 {
        assert_eq!(gw.get(trust, "/files/ok").await.status, 200);
    }
    assert_eq!(
        up.connections(),
        1,
        "the second request should reuse the upstream connection"
    );
}

/// After a broken request: the next one needs a new upstream connection, and is served.
async fn not_reused(gw: &Gw, up: &Upstream, trust: &caregate::pki::Leaf) {
    assert_eq!(gw.get(trust, "/files/after").await.status, 200);
    assert_eq!(
        up.connections(),
        2,
        "the broken request's upstream connection was reused"
    );
}

#[tokio::test]
async fn a_bad_chunk_after_the_head_aborts_the_upstream_request_and_its_connection() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(&pki, config(&pki, &up)).await;
    let trust = pki.client("RXC");
    warm(&gw, &up, &trust).await;

    // A valid head and first chunk; once the head is upstream, a chunk size that is not hex.
    let mut tls = gw.connect(Some(&trust), &[b"http/1.1"]).await.unwrap();
    let head = b"POST /files/upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    tls.write_all(head).await.unwrap();
    tls.flush().await.unwrap();
    eventually("the upstream has the head", || async { up.heads() == 3 }).await;
    tls.write_all(b"zz\r\nmore\r\n0\r\n\r\n").await.unwrap();
    tls.flush().await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(BOUND, tls.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the connection stayed open");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no request id: {text:?}"))
        .to_string();

    let done = completion_of(&gw, &id).await;
    assert_eq!(done["outcome"], "client_error", "{done}");
    assert_eq!(done["status"], 400, "{done}");
    // The upstream got the head and saw its body fail: never a whole request.
    eventually("the upstream saw the request", || async { up.seen().len() == 3 }).await;
    let broken = &up.seen()[2];
    assert_eq!(broken.uri, "/files/upload");
    assert!(!broken.body_complete, "{broken:?}");
    not_reused(&gw, &up, &trust).await;
}

/// A request over HTTP/2 with `content-length: 10` whose DATA says otherwise, after its head
/// has gone upstream (to `/files/echo`, which answers at once and streams the body back).
async fn h2_body_against_its_length(more: Option<&'static [u8]>) {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(&pki, config(&pki, &up)).await;
    let trust = pki.client("RXC");
    warm(&gw, &up, &trust).await;

    let tls = gw.connect(Some(&trust), &[b"h2"]).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let req = http::Request::builder()
        .method("POST")
        .uri("https://localhost/files/echo")
        .header("content-length", "10")
        .body(StreamBody::new(Box::pin(frames)))
        .unwrap();
    tx.send(Ok(Frame::data(Bytes::from_static(b"hello")))).await.unwrap();
    let resp = sender.send_request(req).await.unwrap();
    // The head went upstream and its answer came back: the body is what breaks now.
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    match more {
        Some(b) => tx.send(Ok(Frame::data(Bytes::from_static(b)))).await.unwrap(),
        None => drop(tx),
    }
    let body = tokio::time::timeout(BOUND, resp.into_body().collect()).await.unwrap();
    assert!(body.is_err(), "the response should fail, not end as if whole");

    let done = completion_of(&gw, &id).await;
    assert_eq!(done["outcome"], "client_error", "{done}");
    not_reused(&gw, &up, &trust).await;
    eventually("caregate_in_flight_requests at 0", || async {
        metric(&gw.scrape().await, "caregate_in_flight_requests", &[]) == Some(0.0)
    })
    .await;
}

#[tokio::test]
async fn an_h2_body_longer_than_its_content_length_aborts_the_upstream_request() {
    h2_body_against_its_length(Some(b"and far more than ten")).await;
}

#[tokio::test]
async fn an_h2_body_shorter_than_its_content_length_aborts_the_upstream_request() {
    h2_body_against_its_length(None).await;
}

/// The access record refused as `bad_request` with `status` in its completion, once written.
async fn refused_with(gw: &Gw, status: u16) -> (Value, Value) {
    let find = || {
        let records = gw.records();
        records
            .iter()
            .filter(|r| r["event"] == "access" && r["reason"] == "bad_request")
            .find_map(|a| {
                let done = completion(&records, a["request_id"].as_str()?)?;
                (done["status"] == status).then(|| (a.clone(), done.clone()))
            })
    };
    eventually(&format!("a refusal recorded with {status}"), || async {
        find().is_some()
    })
    .await;
    find().unwrap()
}

#[tokio::test]
async fn a_head_hyper_refuses_by_itself_leaves_a_record() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(&pki, config(&pki, &up)).await;
    let gp = pki.client("A81001");
    let head = |n: usize| {
        format!(
            "GET /fhir/Patient/9990000018 HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
            "a".repeat(n)
        )
    };

    // Past listener.max_header_bytes (64 KiB) while still incomplete (its end never sent):
    // hyper answers 431 itself.
    let unended = head(80_000);
    let unended = &unended[..unended.len() - 4];
    let text = gw.raw_then_closed(&gp, unended.as_bytes()).await.expect("closed");
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
    let (access, done) = refused_with(&gw, 431).await;
    assert_eq!(access["decision"], "deny", "{access}");
    assert_eq!(access["client"]["org"], "A81001", "{access}");
    assert_eq!(done["outcome"], "client_error", "{done}");

    // 70 KB arrives whole in the read that takes it past the limit, which hyper lets through:
    // the framing guard refuses it, and the pipeline records it.
    let text = gw.raw_then_closed(&gp, head(70_000).as_bytes()).await.expect("closed");
    assert!(
        text.starts_with("HTTP/1.1 400 ") || text.starts_with("HTTP/1.1 431 "),
        "{text}"
    );
    let status: u16 = text[9..12].parse().unwrap();
    refused_with(&gw, status).await;
    // Nothing of either went upstream.
    assert!(up.seen().is_empty(), "{:?}", up.seen());
}
