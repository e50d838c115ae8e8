//! The auditor's console over HTTP (no browser): who gets in, what every use leaves in the
//! trail, that values from the trail are shown and never run, and the exports. A real gateway
//! on loopback with `[console]`, real traffic, the in-process index follower, real TLS.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::*;

/// A gateway with the standard organisations and routes and a console for `auditors`.
async fn gateway(pki: &TestPki, up: &Upstream, auditors: &[&str]) -> Gw {
    Gw::start(pki, pki.config().standard([up.url()]).console(auditors)).await
}

/// Asks the console for `path` until the page contains `want` (the follower indexes the trail
/// a little after the gateway writes it), for at most 20 s.
async fn page_with(console: &Remote, who: &caregate::pki::Leaf, path: &str, want: &str) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = console.get(who, path).await;
        if a.status == 200 && String::from_utf8_lossy(&a.body).contains(want) {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: no {want:?} in time; last answer {} {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn uses(records: &[Value]) -> Vec<&Value> {
    records.iter().filter(|r| r["event"] == "audit_access").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_auditors_get_in_and_every_use_is_recorded() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    // The trust's group audits; a GP practice is no auditor.
    let mut gw = gateway(&pki, &up, &["group:trust"]).await;
    let (gp, auditor) = (pki.client("A81001"), pki.client("RXC"));
    assert_eq!(gw.get(&gp, "/fhir/Patient/9990000018").await.status, 200);
    let console = Remote::new(gw.console_addr(), None, &pki);

    let page = page_with(&console, &auditor, "/patient/9990000018", "A81001").await;
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("Patient 9990000018"), "{html}");
    assert!(html.contains("<svg"), "the timeline is drawn: {html}");
    assert!(
        html.contains("href=\"/org/A81001\""),
        "links to the organisation: {html}"
    );
    // Pages hold patient identifiers: no caching, no referrer, no script of any origin.
    assert_eq!(page.headers["cache-control"], "no-store");
    assert_eq!(page.headers["referrer-policy"], "no-referrer");
    assert!(page.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .starts_with("default-src 'none'"));

    // A client certificate the gateway trusts, of an organisation that is not an auditor.
    let refused = console.get(&gp, "/patient/9990000018").await;
    assert_eq!(refused.status, 403);
    assert!(!String::from_utf8_lossy(&refused.body).contains("9990000018"));

    // Without a certificate, or with one of another CA: no handshake.
    assert!(console.handshake_refused(None).await);

    let records = gw.stop().await;
    let uses = uses(&records);
    let seen = uses
        .iter()
        .find(|r| r["action"] == "patient" && r["rows"] == 1)
        .expect("the patient page that showed the access is recorded");
    assert_eq!(seen["decision"], "allow");
    assert_eq!(seen["client"]["org"], "RXC");
    assert!(seen["client"]["fingerprint"].as_str().unwrap().starts_with("sha256:"));
    assert!(seen["client"]["subject"].as_str().is_some());
    assert_eq!(seen["filters"]["patient"], "9990000018");
    let denied: Vec<_> = uses.iter().filter(|r| r["decision"] == "deny").collect();
    assert_eq!(denied.len(), 1, "one record for the refused connection: {denied:?}");
    assert_eq!(denied[0]["client"]["org"], "A81001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_is_an_auditor_by_default() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = gateway(&pki, &up, &[]).await;
    let console = Remote::new(gw.console_addr(), None, &pki);
    for org in ["RXC", "A81001"] {
        let a = console.get(&pki.client(org), "/").await;
        assert_eq!(a.status, 403, "{org}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_trail_holds_is_shown_never_run() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = gateway(&pki, &up, &["RXC"]).await;
    let gp = pki.client("A81001");
    // A client chooses what it sends: an identifier with markup in it (percent-encoded, as a
    // URL must carry it) is recorded decoded, as the patient id it names.
    let hostile = "/fhir/Patient?identifier=https://example.org/id%7C%3Cscript%3Ealert(1)%3C/script%3E%22onmouseover=x";
    assert_eq!(gw.get(&gp, hostile).await.status, 200);
    let recorded = gw
        .records()
        .into_iter()
        .find(|r| r["event"] == "access" && r.to_string().contains("<script>"))
        .unwrap_or_else(|| panic!("the trail holds the markup: {:?}", gw.records()));
    assert_eq!(recorded["client"]["org"], "A81001");

    let console = Remote::new(gw.console_addr(), None, &pki);
    let page = page_with(&console, &pki.client("RXC"), "/search?org=A81001", "/fhir/Patient").await;
    let html = String::from_utf8_lossy(&page.body);
    assert!(!html.contains("<script>"), "{html}");
    assert!(!html.contains("\"onmouseover"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;onmouseover=x"),
        "{html}"
    );
    // …and in the link to the patient's page, percent-encoded.
    assert!(
        html.contains("/patient/https%3A%2F%2Fexample.org%2Fid%7C%3Cscript%3E"),
        "{html}"
    );
    // The search form gives back what was typed, escaped too.
    let typed = console
        .get(&pki.client("RXC"), "/search?route=%22%3E%3Cscript%3Ex")
        .await;
    let html = String::from_utf8_lossy(&typed.body);
    assert!(html.contains("value=\"&quot;&gt;&lt;script&gt;x\""), "{html}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_are_audit_querys_csv_and_fhir_auditevents() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = gateway(&pki, &up, &["RXC"]).await;
    let gp = pki.client("A81001");
    for nhs in ["9990000018", "9990000026"] {
        assert_eq!(gw.get(&gp, &format!("/fhir/Patient/{nhs}")).await.status, 200);
    }
    let console = Remote::new(gw.console_addr(), None, &pki);
    let auditor = pki.client("RXC");
    page_with(&console, &auditor, "/search?patient=9990000026", "9990000026").await;

    let csv = console.get(&auditor, "/export.csv?patient=9990000026").await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.headers["content-type"], "text/csv; charset=utf-8");
    assert!(csv.headers["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    let text = String::from_utf8_lossy(&csv.body);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("time,seq,request_id,org"), "{text}");
    assert_eq!(lines.len(), 2, "the header and one request: {text}");
    assert!(lines[1].contains("9990000026") && !lines[1].contains("9990000018"));

    let fhir = console.get(&auditor, "/export.ndjson?org=A81001").await;
    assert_eq!(fhir.status, 200);
    let events: Vec<Value> = String::from_utf8_lossy(&fhir.body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e["resourceType"] == "AuditEvent"));

    let records = gw.stop().await;
    let uses = uses(&records);
    let csv_use = uses
        .iter()
        .find(|r| r["action"] == "export_csv")
        .expect("the CSV export is recorded");
    assert_eq!(
        (csv_use["rows"].as_u64(), &csv_use["filters"]["patient"]),
        (Some(1), &Value::from("9990000026"))
    );
    let fhir_use = uses
        .iter()
        .find(|r| r["action"] == "export_fhir")
        .expect("the FHIR export is recorded");
    assert_eq!(fhir_use["rows"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_and_organisation_pages_chart_the_traffic() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = gateway(&pki, &up, &["RXC"]).await;
    let gp = pki.client("A81001");
    assert_eq!(gw.get(&gp, "/fhir/Patient/9990000018").await.status, 200);
    // Refused: a GP may not write.
    assert_eq!(gw.post(&gp, "/fhir/Patient", "{}").await.status, 403);
    let console = Remote::new(gw.console_addr(), None, &pki);
    let auditor = pki.client("RXC");
    let org = page_with(&console, &auditor, "/org/A81001", "not_allowed").await;
    let html = String::from_utf8_lossy(&org.body);
    assert!(
        html.contains("Requests per day") && html.matches("<svg").count() >= 4,
        "{html}"
    );
    let overview = page_with(&console, &auditor, "/", "A81001").await;
    let html = String::from_utf8_lossy(&overview.body);
    assert!(
        html.contains("The trail&#39;s health") || html.contains("The trail's health"),
        "{html}"
    );
    assert!(html.contains("Audit log used"), "{html}");
    assert!(html.contains("not_allowed"), "refusals by reason: {html}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_serve_will_not_share_a_trail_a_gateway_is_writing() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = gateway(&pki, &up, &["RXC"]).await;
    let config = caregate::config::Config::load(&gw.config_path).unwrap();
    let refused = caregate::console::serve_alone(config, async {}).await.unwrap_err();
    assert!(format!("{refused:#}").contains("audit.dir"), "{refused:#}");
    gw.stop().await;
    // Once the gateway has stopped, it serves (and stops when told).
    let config = caregate::config::Config::load(&gw.config_path).unwrap();
    caregate::console::serve_alone(config, async {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_session_resumed_after_its_certificate_was_revoked_is_refused() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = gateway(&pki, &up, &["RXC"]).await;
    let console = Remote::new(gw.console_addr(), None, &pki);
    let auditor = pki.client_with_serial("RXC", 0x5e55_c0de);
    let client = console.client_config_for(&[&rustls::version::TLS13], Some(&auditor), &[b"http/1.1"]);
    let (kind, answer) = console.exchange(&client).await;
    assert_eq!(kind, Some(rustls::HandshakeKind::Full));
    assert!(answer.starts_with(b"HTTP/1.1 "), "served before the CRL");

    pki.revoke(&[auditor.serial]);
    gw.reload().await.unwrap();
    let (kind, answer) = console.exchange(&client).await;
    assert_eq!(
        kind,
        Some(rustls::HandshakeKind::Resumed),
        "the session outlived the reload"
    );
    assert!(
        answer.is_empty(),
        "a revoked auditor's resumed session is refused: {}",
        String::from_utf8_lossy(&answer)
    );
    gw.stop().await;
}
