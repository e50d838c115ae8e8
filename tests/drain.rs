//! Draining (SPEC §6): a shutdown stops accepting, turns unready, closes idle connections and
//! lets transfers in flight finish, up to the drain deadline, after which they are cut off; the
//! trail ends with `stop`. Real TLS on loopback; no sleeps as synchronisation.

mod support;

use http_body_util::BodyExt;
use ring::digest;
use serde_json::Value;
use std::time::{Duration, Instant};
use support::*;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_download_finish_then_stops_with_a_final_record() {
    const SIZE: usize = 32 << 20;
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = Gw::standard(&pki, &up).await;
    let addr = gw.addr();
    let trust = pki.client("RXC");
    assert_eq!(gw.admin_get("/readyz").await, (200, "ready\n".to_string()));
    assert_eq!(gw.admin_get("/healthz").await.0, 200);

    let Download {
        sender,
        conn,
        request_id,
        mut body,
    } = gw.download(&trust, SIZE).await;
    let mut hash = digest::Context::new(&digest::SHA256);
    let first = read_hashing(&mut body, &mut hash, 1 << 20).await;
    // An idle keep-alive connection: drain closes it.
    let (idle, idle_conn) = gw.h1(&trust).await;

    gw.shutdown();
    let (status, why) = gw.admin_get("/readyz").await;
    assert_eq!((status, why.as_str()), (503, "not ready: draining\n"));
    assert_eq!(metric(&gw.scrape().await, "caregate_draining", &[]), Some(1.0));
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
    let waited = tokio::time::timeout(Duration::from_secs(60), gw.wait())
        .await
        .expect("drained");
    assert!(waited.is_ok(), "{waited:?}");
    let (len, sha) = reader.await.unwrap();
    assert_eq!((len, sha), (SIZE as u64, pattern_sha(SIZE)));
    drop(sender);
    let _ = conn.await;

    let records = gw.records();
    let last = records.last().unwrap();
    assert_eq!(
        (&last["event"], &last["action"]),
        (&Value::from("lifecycle"), &Value::from("stop"))
    );
    let done = completion(&records, &request_id).unwrap();
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
    let up = Upstream::start().await;
    let config = pki.config().listener(r#"drain_timeout = "1s""#).standard([up.url()]);
    let mut gw = Gw::start(&pki, config).await;
    let trust = pki.client("RXC");
    let Download {
        sender,
        conn,
        request_id,
        mut body,
    } = gw.download(&trust, SIZE).await;
    let mut hash = digest::Context::new(&digest::SHA256);
    // Then stop reading: the transfer stalls on back-pressure, still in flight.
    read_hashing(&mut body, &mut hash, 1 << 20).await;

    gw.shutdown();
    let waited = tokio::time::timeout(Duration::from_secs(20), gw.wait())
        .await
        .expect("the gateway stops at the drain deadline");
    assert!(waited.is_ok(), "{waited:?}");
    assert!(body.collect().await.is_err(), "the transfer was cut off");
    drop(sender);
    let _ = conn.await;

    let records = gw.records();
    let done = completion(&records, &request_id).expect("the cut transfer has its completion");
    assert_eq!(done["outcome"], "timeout");
    assert!(done["bytes_out"].as_u64().unwrap() < SIZE as u64);
    let last = records.last().unwrap();
    assert_eq!(
        (&last["event"], &last["action"]),
        (&Value::from("lifecycle"), &Value::from("stop"))
    );
}
