//! The admin listener's metrics (SPEC §6) move with requests, refusals, rate limiting, upstream
//! errors, TLS rejections and reloads, and carry no patient identifier. Real TLS on loopback.

mod support;

use support::*;

#[tokio::test]
async fn metrics_move_with_requests_refusals_and_tls_rejections() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let config = pki
        .config()
        .standard([up.url()])
        .upstream("gone", ["http://127.0.0.1:1"])
        .route(Route::new("gone", "/gone/", "gone", "epr").allow(Allow::orgs(&["RXC"])))
        .rate_limit("other", &["requests_per_second = 0.01", "burst = 1"]);
    let mut gw = Gw::start(&pki, config).await;
    let before = gw.scrape().await;
    let v = |text: &str, name: &str, labels: &[&str]| metric(text, name, labels).unwrap_or(0.0);

    let gp = pki.client("A81001");
    let trust = pki.client("RXC");
    assert_eq!(gw.get(&gp, "/fhir/Patient/9990000018").await.status, 200);
    assert_eq!(
        gw.get(&pki.client("B99999"), "/fhir/Patient/9990000018").await.status,
        403
    );
    assert_eq!(gw.get(&trust, "/files/bytes/100").await.status, 200);
    assert_eq!(gw.get(&trust, "/files/bytes/100").await.status, 429);
    assert_eq!(gw.get(&trust, "/gone/x").await.status, 502);
    assert!(gw.handshake_refused(None).await);
    let (open, _conn) = gw.h1(&gp).await;

    // Fire-and-forget records (completions, the TLS rejection) and the handshake's metric land
    // a moment after the client has its answer: wait for them, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let after = loop {
        let after = gw.scrape().await;
        let moved = |name: &str, labels: &[&str]| v(&after, name, labels) - v(&before, name, labels);
        if moved("caregate_audit_records_total", &[]) >= 10.0
            && moved("caregate_tls_rejections_total", &[r#"reason="no_certificate""#]) >= 1.0
        {
            break after;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the records were not written in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
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

    gw.reload().await.unwrap();
    assert_eq!(
        v(&gw.scrape().await, "caregate_reloads_total", &[r#"result="ok""#]),
        1.0
    );
    assert_eq!(gw.admin_get("/nothing").await.0, 404);
    gw.stop().await;
}
