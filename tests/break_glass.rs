//! Break-glass end to end: a `[[route.break_glass]]` entry lets a listed organisation through a
//! `not_allowed` refusal with `X-Break-Glass-Reason`, recorded, answered with `X-Break-Glass:
//! used`, counted and the reason sent upstream; nothing else is overridden, and outside those
//! entries the header changes nothing (and never reaches the upstream).

mod support;

use support::*;

const PATIENT: &str = "/fhir/Patient/9990000018";
const REASON: &str = "Unconscious patient in ED resus, no shared care record agreement";

/// The standard gateway plus RYR, an emergency department in group `ed` that no allow rule
/// names, listed for break-glass GETs on `epr-fhir`; and the admin listener for `/metrics`.
fn config(pki: &TestPki, up: &Upstream) -> GatewayConfig {
    pki.config()
        .admin()
        .standard_organisations()
        .org("RYR", "Emergency Department", &["ed"])
        .upstream("epr", [up.url()])
        .timeouts("1s", "2s")
        .route(
            Route::new("epr-fhir", "/fhir/", "epr", "epr")
                .allow(Allow::groups(&["gp"]).methods(&["GET"]))
                .allow(Allow::orgs(&["RXC"]))
                .break_glass(Allow::groups(&["ed"]).methods(&["GET"])),
        )
}

async fn get_with_reason(gw: &Gw, leaf: &caregate::pki::Leaf, path: &str, reason: &str) -> Answer {
    gw.request(leaf)
        .path(path)
        .header("x-break-glass-reason", reason)
        .send()
        .await
}

#[tokio::test]
async fn a_listed_org_with_a_reason_is_let_through_recorded_flagged_counted_and_the_reason_goes_upstream() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(&pki, config(&pki, &up)).await;
    let ed = pki.client("RYR");

    let a = get_with_reason(&gw, &ed, PATIENT, REASON).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["x-break-glass"], "used");
    let access = gw.access_of(&a);
    assert_eq!(access["decision"], "allow");
    assert_eq!(access["rule"], "epr-fhir/break_glass[0]");
    assert_eq!(access["break_glass"]["reason"], REASON);
    assert_eq!(access["clinical"]["nhs_number"], "9990000018");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["x-break-glass-reason"], REASON);

    let metrics = gw.scrape().await;
    let used = metric(
        &metrics,
        "caregate_break_glass_total",
        &["org=\"RYR\"", "route=\"epr-fhir\""],
    );
    assert_eq!(used, Some(1.0), "{metrics}");
}

#[tokio::test]
async fn without_the_header_or_outside_the_entries_the_request_stays_not_allowed() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(&pki, config(&pki, &up)).await;

    // Listed, but no reason: refused as without break-glass.
    let a = gw.get(&pki.client("RYR"), PATIENT).await;
    assert_eq!(
        (a.status, a.json()["issue"][0]["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert_eq!(gw.access_of(&a)["reason"], "not_allowed");
    assert!(a.headers.get("x-break-glass").is_none());

    // Not listed: the header changes nothing.
    let a = get_with_reason(&gw, &pki.client("B99999"), PATIENT, REASON).await;
    assert_eq!(a.status, 403);
    let access = gw.access_of(&a);
    assert_eq!(access["reason"], "not_allowed");
    assert!(access.get("break_glass").is_none());
    assert!(a.headers.get("x-break-glass").is_none());

    // Listed, but for GETs only.
    let post = gw
        .request(&pki.client("RYR"))
        .method("POST")
        .path("/fhir/Observation")
        .header("content-type", "application/fhir+json")
        .header("x-break-glass-reason", REASON)
        .body(r#"{"resourceType":"Observation"}"#)
        .send()
        .await;
    assert_eq!(post.status, 403);
    assert_eq!(gw.access_of(&post)["reason"], "not_allowed");
    assert!(up.seen().is_empty(), "nothing refused reached the upstream");
}

#[tokio::test]
async fn an_allowed_request_with_the_header_is_not_break_glass_and_the_header_is_not_forwarded() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(&pki, config(&pki, &up)).await;

    let a = get_with_reason(&gw, &pki.client("A81001"), PATIENT, REASON).await;
    assert_eq!(a.status, 200);
    assert!(a.headers.get("x-break-glass").is_none());
    let access = gw.access_of(&a);
    assert_eq!(access["rule"], "epr-fhir/allow[0]");
    assert!(access.get("break_glass").is_none());
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].headers.get("x-break-glass-reason").is_none());
    let metrics = gw.scrape().await;
    assert_eq!(metric(&metrics, "caregate_break_glass_total", &[]), None);
}

#[tokio::test]
async fn break_glass_overrides_not_allowed_only() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let config = config(&pki, &up).rate_limit("epr", &["requests_per_second = 0.01", "burst = 1"]);
    let gw = Gw::start(&pki, config).await;
    let ed = pki.client("RYR");

    // An organisation the gateway does not know.
    let a = get_with_reason(&gw, &pki.client("Z99999"), PATIENT, REASON).await;
    assert_eq!(a.status, 403);
    assert_eq!(gw.access_of(&a)["reason"], "unknown_org");
    // A bad request: an NHS number whose check digit is wrong.
    let a = get_with_reason(&gw, &ed, "/fhir/Patient/9990000019", REASON).await;
    assert_eq!(a.status, 400);
    assert_eq!(gw.access_of(&a)["reason"], "bad_request");
    // Path parameters.
    let a = get_with_reason(&gw, &ed, "/fhir/Patient/9990000018;x", REASON).await;
    assert_eq!(a.status, 400);
    // No route.
    let a = get_with_reason(&gw, &ed, "/nowhere/9990000018", REASON).await;
    assert_eq!(a.status, 404);
    // The rate limit: the first break-glass request takes the one token, the next is 429.
    assert_eq!(get_with_reason(&gw, &ed, PATIENT, REASON).await.status, 200);
    let a = get_with_reason(&gw, &ed, "/fhir/Patient/9990000026", REASON).await;
    assert_eq!(a.status, 429);
    assert_eq!(gw.access_of(&a)["reason"], "rate_limited");
    assert_eq!(up.seen().len(), 1);
}

#[tokio::test]
async fn a_malformed_reason_overrides_nothing_and_says_what_is_wrong() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(&pki, config(&pki, &up)).await;
    let ed = pki.client("RYR");

    let long = "x".repeat(501);
    let bad = [
        "123456789",           // 9 characters
        "emergency\tresus",    // a control character
        "réanimation urgente", // not ASCII
        &long,
        "          ", // only spaces: nothing once trimmed
    ];
    for reason in bad {
        let a = get_with_reason(&gw, &ed, PATIENT, reason).await;
        assert_eq!(a.status, 400, "{reason:?}");
        assert!(a.headers.get("x-break-glass").is_none());
        let access = gw.access_of(&a);
        assert_eq!(access["reason"], "bad_request");
        assert!(access.get("break_glass").is_none());
    }
    // Two reasons: which one would a reviewer believe?
    let a = gw
        .request(&ed)
        .path(PATIENT)
        .headers(&[("x-break-glass-reason", REASON), ("x-break-glass-reason", REASON)])
        .send()
        .await;
    assert_eq!(a.status, 400);
    // Exactly 10 and exactly 500 characters are enough.
    for reason in ["ED resus 1".to_string(), "y".repeat(500)] {
        assert_eq!(get_with_reason(&gw, &ed, PATIENT, &reason).await.status, 200);
    }
    assert_eq!(up.seen().len(), 2);
}

#[tokio::test]
async fn explain_says_when_a_refused_request_could_break_glass() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(&pki, config(&pki, &up)).await;
    let config = caregate::config::Config::load(&gw.config_path).unwrap();
    let state = caregate::state::State::build(config, 0).unwrap();
    let explain = |org: &str, method: &str| {
        caregate::cli::explain(&state, pki.client(org).cert_pem.as_bytes(), method, PATIENT).unwrap()
    };
    let ed = explain("RYR", "GET");
    assert!(ed.contains("DENY 403 not_allowed"), "{ed}");
    assert!(
        ed.contains("break-glass  eligible: with X-Break-Glass-Reason, allowed by epr-fhir/break_glass[0]"),
        "{ed}"
    );
    for (org, method) in [("RYR", "POST"), ("B99999", "GET"), ("A81001", "GET")] {
        let out = explain(org, method);
        assert!(!out.contains("break-glass"), "{org} {method}: {out}");
    }
}

#[tokio::test]
async fn a_break_glass_record_keeps_its_whole_reason_when_a_long_request_is_cut() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(&pki, config(&pki, &up)).await;
    let reason = "Emergency admission, no agreement in place. ".repeat(12)[..490].to_string();
    let query = format!("_elements={}", "name,".repeat(2000));
    let path = format!("{PATIENT}?{query}");
    let a = get_with_reason(&gw, &pki.client("RYR"), &path, &reason).await;
    assert_eq!(a.status, 200);
    let access = gw.access_of(&a);
    // The query is cut to the record cap (8 KiB), the reason kept whole.
    assert_eq!(access["request"]["query_len"], query.len());
    assert_eq!(access["break_glass"]["reason"], reason.as_str());
    assert_eq!(up.seen()[0].headers["x-break-glass-reason"], reason.as_str());
}
