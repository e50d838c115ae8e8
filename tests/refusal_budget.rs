//! Issue 19, "Filling the audit disk is a denial of service": the per-organisation refusal
//! budget (`[rate_limit] refusals_per_second`, `refusal_burst`).
//!
//! Before it, any trusted certificate could send refused requests (404, 403, 400) at any rate,
//! each with up to 64 KB of path and query, each an `access` and a `complete` record, fsynced,
//! counted by no rate limit. Now each refusal spends from its organisation's budget (or, for an
//! organisation the gateway does not know, its certificate's); past it the answer is 429
//! `refusal_budget`, no record of its own is written, and what it stood for is counted into at
//! most one `refusals_coalesced` record per organisation per second.
//!
//! The budget here is small (a burst of 5, 1 a second), so the counts below follow from it
//! however fast the machine is: nothing depends on timing luck.

mod support;

use http_body_util::BodyExt;
use serde_json::Value;
use std::path::Path;
use std::time::Instant;
use support::*;

const BURST: u64 = 5;
const PER_SECOND: u64 = 1;
/// Refused requests of the flood.
const FLOOD: usize = 2_000;
/// Keep-alive connections the flood is sent on.
const CONNECTIONS: usize = 4;
/// Record sizes, generous, from the records as written: an `access` is cut to `max_record_bytes`
/// (8 KiB by default) whatever the path; its `complete` is about 250 bytes, a
/// `refusals_coalesced` about 300.
const ACCESS_MAX: u64 = 8 * 1024 + 1;
const COMPLETE_MAX: u64 = 400;
const COALESCED_MAX: u64 = 600;

fn config(pki: &TestPki, up: &Upstream, per_second: f64) -> GatewayConfig {
    pki.config()
        .standard([up.url()])
        .set("rate_limit", format!("refusals_per_second = {per_second:?}"))
        .set("rate_limit", format!("refusal_burst = {BURST}"))
}

/// A budget that refills too slowly for any test to see: the burst is all there is.
const NO_REFILL: f64 = 0.001;

/// Bytes of the trail's files.
fn trail_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// The records of `event` whose organisation (the `access` record's `client.org`, a
/// `refusals_coalesced` record's `org`) is `org`.
fn of<'a>(records: &'a [Value], event: &str, org: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["event"] == event && (r["client"]["org"] == org || r["org"] == org))
        .collect()
}

fn counted(coalesced: &[&Value]) -> u64 {
    coalesced.iter().map(|r| r["count"].as_u64().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_requests_is_counted_not_written_and_a_neighbour_is_still_served() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = Gw::start(&pki, config(&pki, &up, PER_SECOND as f64)).await;
    // The start record is written before any request.
    while trail_bytes(&gw.audit_dir) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let before = trail_bytes(&gw.audit_dir);
    let (flooder, neighbour) = (pki.client("A81001"), pki.client("A81002"));

    // A81001: 2,000 requests for no route, each with 6 KB of path, on keep-alive connections.
    let started = Instant::now();
    let path = format!("/nowhere/{}", "x".repeat(6_000));
    let per_connection = FLOOD / CONNECTIONS;
    let mut flood = Vec::new();
    for _ in 0..CONNECTIONS {
        let (mut sender, _conn) = gw.h1(&flooder).await;
        let path = path.clone();
        flood.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..per_connection {
                let resp = sender.send_request(get(&path)).await.unwrap();
                let status = resp.status().as_u16();
                let retry = resp.headers().get("retry-after").cloned();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                let reason = serde_json::from_slice::<Value>(&body).unwrap()["error"].clone();
                if status == 429 {
                    assert_eq!(reason, "refusal_budget");
                    assert_eq!(retry.unwrap(), "1");
                } else {
                    assert_eq!((status, reason.as_str()), (404, Some("no_route")));
                }
                statuses.push(status);
            }
            statuses
        }));
    }
    // Meanwhile A81002 is served, and its own few refusals are recorded one by one.
    let mut served = 0;
    let mut refused_ids = Vec::new();
    for i in 0..30 {
        if i % 10 == 0 {
            let a = gw.get(&neighbour, "/nowhere/else").await;
            assert_eq!(a.status, 404);
            refused_ids.push(a.request_id().to_string());
        } else {
            let a = gw.get(&neighbour, "/fhir/Patient/9990000018").await;
            assert_eq!(a.status, 200, "{:?}", a.body);
            served += 1;
        }
    }
    let mut statuses = Vec::new();
    for t in flood {
        statuses.extend(t.await.unwrap());
    }
    let seconds = started.elapsed().as_secs() + 1;
    let answered_404 = statuses.iter().filter(|s| **s == 404).count() as u64;
    let answered_429 = statuses.iter().filter(|s| **s == 429).count() as u64;
    assert_eq!(answered_404 + answered_429, FLOOD as u64);
    let metrics = gw.scrape().await;
    let coalesced_metric = metric(&metrics, "caregate_refusals_coalesced_total", &["source=\"request\""]);
    assert_eq!(coalesced_metric, Some(answered_429 as f64));

    let records = gw.stop().await;
    let added = trail_bytes(&gw.audit_dir) - before;

    // Every refusal is accounted for: recorded one by one (404), or counted (429).
    let written = of(&records, "access", "A81001");
    let coalesced = of(&records, "refusals_coalesced", "A81001");
    assert_eq!(written.len() as u64, answered_404);
    assert_eq!(counted(&coalesced), answered_429);
    assert!(coalesced
        .iter()
        .all(|r| r["reasons"]["no_route"] == r["count"] && r["since"].is_string()));
    // Within its budget: the burst, and one a second after it.
    assert!(
        answered_404 <= BURST + PER_SECOND * seconds,
        "{answered_404} in {seconds}s"
    );
    // At most one coalesced record per second, and one for the second cut short at stop.
    assert!(
        coalesced.len() as u64 <= seconds + 1,
        "{} in {seconds}s",
        coalesced.len()
    );

    // The neighbour: every allowed request served and recorded, its refusals each recorded.
    assert!(of(&records, "refusals_coalesced", "A81002").is_empty());
    let neighbours = of(&records, "access", "A81002");
    assert_eq!(neighbours.iter().filter(|r| r["decision"] == "allow").count(), served);
    for id in &refused_ids {
        let access = by_request(&records, id, "access");
        assert_eq!(access[0]["reason"], "no_route");
        assert!(completion(&records, id).is_some());
    }

    // The trail grew by the records within the budgets and one summary a second, whatever the
    // flood's size: before, each of the 2,000 refusals wrote about 8 KB.
    let neighbour_requests = (served + refused_ids.len()) as u64;
    let bound = (BURST + PER_SECOND * seconds + neighbour_requests) * (ACCESS_MAX + COMPLETE_MAX)
        + (seconds + 1) * COALESCED_MAX
        + 1024;
    eprintln!(
        "{FLOOD} refused requests in {seconds}s: {answered_404} recorded, {answered_429} counted in {} records; the trail grew {added} bytes (bound {bound})",
        coalesced.len()
    );
    assert!(added <= bound, "{added} bytes added, bound {bound}");
}

/// A trusted certificate of an organisation the gateway does not know is budgeted by its own
/// fingerprint: a second such certificate is not refused for the first one's refusals.
#[tokio::test]
async fn unknown_organisations_are_budgeted_by_certificate() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = Gw::start(&pki, config(&pki, &up, NO_REFILL)).await;
    let (first, second) = (pki.client("Z99991"), pki.client("Z99992"));
    let mut answers = Vec::new();
    for _ in 0..BURST + 3 {
        answers.push(gw.get(&first, "/files/report").await.status);
    }
    assert_eq!(&answers[..BURST as usize], [403; BURST as usize]);
    assert_eq!(&answers[BURST as usize..], [429; 3]);
    let a = gw.get(&second, "/files/report").await;
    assert_eq!((a.status, a.json()["error"].as_str()), (403, Some("unknown_org")));

    let records = gw.stop().await;
    let fingerprint = |leaf: &caregate::pki::Leaf| {
        let digest = ring::digest::digest(&ring::digest::SHA256, &leaf.cert_der);
        format!("sha256:{}", caregate::hex(digest.as_ref()))
    };
    let coalesced = of(&records, "refusals_coalesced", &fingerprint(&first));
    let written = records
        .iter()
        .filter(|r| r["event"] == "access" && r["client"]["fingerprint"] == fingerprint(&first).as_str())
        .count() as u64;
    assert_eq!((written, counted(&coalesced)), (BURST, 3));
    assert!(coalesced.iter().all(|r| r["reasons"]["unknown_org"] == r["count"]));
    assert!(of(&records, "refusals_coalesced", &fingerprint(&second)).is_empty());
}

/// Allowed requests spend nothing: an organisation that is served many times over its refusal
/// budget can still be refused, and recorded, one by one.
#[tokio::test]
async fn allowed_requests_do_not_spend_the_refusal_budget() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = Gw::start(&pki, config(&pki, &up, NO_REFILL)).await;
    let gp = pki.client("A81001");
    let (mut sender, _conn) = gw.h1(&gp).await;
    for _ in 0..3 * BURST {
        let resp = sender.send_request(get("/fhir/Patient/9990000018")).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }
    for _ in 0..BURST {
        let resp = sender.send_request(get("/nowhere")).await.unwrap();
        assert_eq!(resp.status(), 404);
        resp.into_body().collect().await.unwrap();
    }
    let records = gw.stop().await;
    assert!(of(&records, "refusals_coalesced", "A81001").is_empty());
    let refused = of(&records, "access", "A81001");
    assert_eq!(
        refused.iter().filter(|r| r["reason"] == "no_route").count() as u64,
        BURST
    );
}

/// A bad request past the budget is answered 429, and its connection is still closed after it:
/// what follows a request the gateway could not read unambiguously is never read as another.
#[tokio::test]
async fn a_bad_request_past_the_budget_still_closes_its_connection() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = Gw::start(&pki, config(&pki, &up, NO_REFILL)).await;
    let gp = pki.client("A81001");
    let bad = b"GET /fhir/Patient/9990000018;x HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for _ in 0..BURST {
        let answer = gw.raw_then_closed(&gp, bad).await.expect("closed after a bad request");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    let answer = gw.raw_then_closed(&gp, bad).await.expect("closed after a bad request");
    assert!(
        answer.starts_with("HTTP/1.1 429") && answer.contains("refusal_budget"),
        "{answer}"
    );
    let records = gw.stop().await;
    assert_eq!(counted(&of(&records, "refusals_coalesced", "A81001")), 1);
}

/// The budget is the gateway's, not the config's: a reload (a nightly CRL refresh is one) does
/// not hand out a fresh one.
#[tokio::test]
async fn a_reload_does_not_refill_the_refusal_budget() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = Gw::start(&pki, config(&pki, &up, NO_REFILL)).await;
    let gp = pki.client("A81001");
    for _ in 0..BURST {
        assert_eq!(gw.get(&gp, "/nowhere").await.status, 404);
    }
    gw.reload().await.unwrap();
    let a = gw.get(&gp, "/nowhere").await;
    assert_eq!((a.status, a.json()["error"].as_str()), (429, Some("refusal_budget")));
    gw.stop().await;
}
