//! Reloading a running gateway (SPEC §6): a changed policy applies to new requests while a
//! transfer in flight finishes byte for byte; a config that fails is refused and the old one
//! keeps serving. Real TLS on loopback; no sleeps as synchronisation.

mod support;

use ring::digest;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_in_flight_survives_a_reload_that_changes_policy() {
    const SIZE: usize = 256 << 20;
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = Gw::standard(&pki, &up).await;
    let gp = pki.client("A81001");

    let Download {
        sender,
        conn,
        request_id,
        mut body,
    } = gw.download(&gp, SIZE).await;
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut got = read_hashing(&mut body, &mut hash, 8 << 20).await;

    // A81001 loses the files route while its download is in flight.
    gw.edit_config(r#"orgs = ["RXC", "A81001"]"#, r#"orgs = ["RXC"]"#);
    gw.reload().await.expect("the new config loads");
    let a = gw.get(&gp, "/files/bytes/10").await;
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (403, Some("not_allowed")),
        "new requests see the new policy"
    );
    let a = gw.request(&gp).path("/files/bytes/10").h2().send().await;
    assert_eq!(a.status, 403, "over HTTP/2 too");
    let a = gw.get(&pki.client("RXC"), "/files/bytes/10").await;
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

    let records = gw.stop().await;
    assert_eq!(lifecycle(&records, "reload").len(), 1);
    let done = completion(&records, &request_id).unwrap();
    assert_eq!(
        (done["status"].as_u64(), done["bytes_out"].as_u64()),
        (Some(200), Some(SIZE as u64))
    );
    assert_eq!(done["outcome"], "ok");
}

#[tokio::test]
async fn a_config_that_fails_on_reload_is_refused_and_the_old_one_keeps_serving() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = Gw::standard(&pki, &up).await;
    let gp = pki.client("A81001");
    let good = std::fs::read_to_string(&gw.config_path).unwrap();

    // A key that does not exist, then a file the config names that does not exist.
    let broken = [
        format!("{good}\n[listener2]\nbind = 1\n"),
        good.replace("server.pem", "missing.pem"),
    ];
    for text in &broken {
        std::fs::write(&gw.config_path, text).unwrap();
        assert!(gw.reload().await.is_err(), "a broken config must be refused");
        let a = gw.get(&gp, "/fhir/Patient/9990000018").await;
        assert_eq!(a.status, 200, "the old config keeps serving");
        assert!(!gw.handshake_refused(Some(&gp)).await, "and its TLS state");
    }
    let m = gw.scrape().await;
    assert_eq!(metric(&m, "caregate_reloads_total", &[r#"result="failed""#]), Some(2.0));
    assert_eq!(
        gw.admin_get("/readyz").await.0,
        200,
        "a refused reload does not make it unready"
    );

    // Fixing the file and reloading again works.
    std::fs::write(&gw.config_path, &good).unwrap();
    gw.reload().await.unwrap();
    let m = gw.scrape().await;
    assert_eq!(metric(&m, "caregate_reloads_total", &[r#"result="ok""#]), Some(1.0));

    let records = gw.stop().await;
    let failed = lifecycle(&records, "reload_failed");
    assert_eq!(failed.len(), 2);
    for (record, text) in failed.iter().zip(&broken) {
        assert_eq!(
            record["config_sha256"],
            caregate::hex(digest::digest(&digest::SHA256, text.as_bytes()).as_ref()),
            "names the refused file"
        );
    }
    assert_eq!(lifecycle(&records, "reload").len(), 1);
}

/// A reload (the nightly CRL refresh is one) keeps the connections to an upstream whose config
/// did not change; one whose config changed starts afresh.
#[tokio::test]
async fn a_reload_keeps_open_upstream_connections_where_the_upstream_did_not_change() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    // One worker: one pool per upstream, so every request can reuse the same connection.
    let config = pki.config().standard([up.url()]).listener("workers = 1");
    let gw = Gw::start(&pki, config).await;
    let gp = pki.client("A81001");
    assert_eq!(gw.get(&gp, "/fhir/Patient/9990000018").await.status, 200);
    assert_eq!(up.connections(), 1);

    gw.edit_config(r#"name = "Example Surgery""#, r#"name = "Example Surgery (renamed)""#);
    gw.reload().await.expect("the new config loads");
    assert_eq!(gw.get(&gp, "/fhir/Patient/9990000018").await.status, 200);
    assert_eq!(up.connections(), 1, "the reload kept the open upstream connection");

    gw.rewrite_config(|c| c.timeouts("2s", "30s"));
    gw.reload().await.expect("the new config loads");
    assert_eq!(gw.get(&gp, "/fhir/Patient/9990000018").await.status, 200);
    assert_eq!(up.connections(), 2, "a changed upstream starts with new connections");
}
