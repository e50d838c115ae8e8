//! Worker threads and their upstream pools: connections are spread over the workers, each
//! worker forwards through its own pool, and a pool's connection is reused request after request.
//! Real TLS on loopback.

mod support;

use http_body_util::BodyExt;
use std::time::Duration;
use support::*;

/// Upstream connections are kept and reused, whatever the client connections do: each
/// response read to its end through the gateway (small, large, uploaded, refused by the
/// upstream) gives its connection back. One worker, so one pool.
#[tokio::test]
async fn one_upstream_connection_serves_request_after_request() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(&pki, pki.config().listener("workers = 1").standard([up.url()])).await;
    let trust = pki.client("RXC");
    let gp = pki.client("A81001");
    for h2 in [false, true] {
        let a = gw.request(&gp).path("/fhir/Patient/9990000018").http2(h2).send().await;
        assert_eq!(a.status, 200);
        let a = gw.request(&trust).path("/files/bytes/300000").http2(h2).send().await;
        assert_eq!((a.status, a.body.len()), (200, 300_000));
        let a = gw
            .request(&trust)
            .method("POST")
            .path("/files/echo")
            .body(pattern(100_000))
            .http2(h2)
            .send()
            .await;
        assert_eq!((a.status, a.body.len()), (200, 100_000));
    }
    assert_eq!(up.seen().len(), 6);
    assert_eq!(up.connections(), 1);
}

/// Each connection goes to the least busy worker thread and is served there, forwarding through
/// that worker's own upstream pool: six keep-alive connections on three workers sit two to a
/// worker, every request is answered, and a shutdown closes them all.
#[tokio::test]
async fn connections_are_spread_over_the_workers_and_each_worker_forwards() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = Gw::start(&pki, pki.config().listener("workers = 3").standard([up.url()])).await;
    let gp = pki.client("A81001");
    let mut conns = Vec::new();
    for _ in 0..6 {
        let (mut sender, task) = gw.h1(&gp).await;
        for _ in 0..2 {
            let resp = sender.send_request(get("/fhir/Patient/9990000018")).await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.into_body().collect().await.unwrap();
        }
        conns.push((sender, task));
    }
    let m = gw.scrape().await;
    for worker in ["0", "1", "2"] {
        let label = format!("worker=\"{worker}\"");
        assert_eq!(
            metric(&m, "caregate_worker_connections", &[label.as_str()]),
            Some(2.0),
            "worker {worker}"
        );
    }

    gw.stop().await;
    for (_, task) in conns {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the drain closes idle keep-alive connections")
            .unwrap()
            .unwrap();
    }
}
