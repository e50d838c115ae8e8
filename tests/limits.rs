//! Per-organisation limits end to end: 429s with their headers, concurrency slots held by slow
//! streams, and bandwidth shaping measured on a real transfer.

mod support;

use http_body_util::BodyExt;
use std::time::{Duration, Instant};
use support::*;

#[tokio::test]
async fn a_burst_beyond_the_limit_is_429_while_another_org_still_passes() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let config = pki
        .config()
        .standard([up.url()])
        .rate_limit("epr", &["requests_per_second = 0.5", "burst = 3"]);
    let mut gw = Gw::start(&pki, config).await;
    let busy = pki.client("A81001");
    let other = pki.client("A81002");
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..5 {
        let a = gw.get(&busy, "/fhir/Patient/9990000018").await;
        statuses.push(a.status);
        if a.status == 429 {
            limited = Some(a);
        }
    }
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
    let a = limited.unwrap();
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    assert_eq!(a.headers["ratelimit-policy"], "\"epr\";q=3;w=6");
    assert!(a.headers["ratelimit"].to_str().unwrap().starts_with("\"epr\";r=0;t="));
    assert_eq!(a.json()["issue"][0]["code"], "throttled");

    // Another organisation has its own quota.
    assert_eq!(gw.get(&other, "/fhir/Patient/9990000018").await.status, 200);
    // Refused requests use no quota and are audited with their reason.
    assert_eq!(up.seen().len(), 4);
    let limited: Vec<_> = gw
        .stop()
        .await
        .into_iter()
        .filter(|r| r["event"] == "access" && r["reason"] == "rate_limited")
        .collect();
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[0]["decision"], "deny");
}

#[tokio::test]
async fn max_concurrent_holds_while_slow_streams_are_open() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let config = pki
        .config()
        .standard([up.url()])
        .rate_limit("other", &["max_concurrent = 2"]);
    let gw = Gw::start(&pki, config).await;
    let trust = pki.client("RXC");

    // Two downloads whose bodies we do not read: their slots stay taken.
    let mut open = Vec::new();
    for _ in 0..2 {
        let (mut s, _conn) = gw.h1(&trust).await;
        let resp = s.send_request(get("/files/bytes/67108864")).await.unwrap();
        assert_eq!(resp.status(), 200);
        open.push((s, resp));
    }
    let a = gw.get(&trust, "/files/small").await;
    assert_eq!(a.status, 429);
    assert!(a.headers["ratelimit-policy"].to_str().unwrap().contains("concurrency"));

    // Finishing one stream frees its slot.
    let (_s, resp) = open.pop().unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 64 << 20);
    assert_eq!(gw.get(&trust, "/files/small").await.status, 200);
    // Dropping one mid-stream frees its slot too.
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = gw.get(&trust, "/files/small").await;
        if a.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the aborted stream's slot was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_shaped_download_takes_the_expected_time() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let config = pki
        .config()
        .standard([up.url()])
        .rate_limit("other", &[r#"bytes_per_second = "2MiB""#]);
    let gw = Gw::start(&pki, config).await;
    let trust = pki.client("RXC");
    let n = 6 << 20;
    let started = Instant::now();
    let a = gw.get(&trust, &format!("/files/bytes/{n}")).await;
    let took = started.elapsed();
    assert_eq!(a.body.len(), n);
    // 6 MiB at 2 MiB/s: about 3 s, less the bucket's first tenth of a second.
    assert!(took > Duration::from_millis(2500), "too fast: {took:?}");
    assert!(took < Duration::from_secs(6), "too slow: {took:?}");
}

#[tokio::test]
async fn a_reload_does_not_hand_out_a_fresh_burst_but_a_changed_limit_applies_at_once() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    // One request per 100 s: nothing refills while the test runs.
    let config = pki
        .config()
        .standard([up.url()])
        .rate_limit("epr", &["requests_per_second = 0.01", "burst = 2"]);
    let gw = Gw::start(&pki, config).await;
    let gp = pki.client("A81001");
    let status = || async { gw.get(&gp, "/fhir/Patient/9990000018").await.status };
    assert_eq!(status().await, 200);
    assert_eq!(status().await, 200);
    assert_eq!(status().await, 429);

    // The nightly CRL refresh: a reload that changes no limit.
    pki.revoke(&[]);
    gw.reload().await.unwrap();
    assert_eq!(status().await, 429, "the spent burst stays spent");

    // A raised limit is a new quota, full from the reload.
    gw.rewrite_config(|c| c.rate_limit("epr", &["burst = 3"]));
    gw.reload().await.unwrap();
    for _ in 0..3 {
        assert_eq!(status().await, 200);
    }
    assert_eq!(status().await, 429);
}
