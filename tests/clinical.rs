//! Clinical awareness end to end (issue 7): rules by FHIR resource and interaction and by Spine
//! interaction, SSP-style `/https://<provider>/…` addressing, identity cross-checks against
//! `Ssp-From` and the GP Connect token, NHS number check digits, OperationOutcome refusals, and
//! organisations from an ODS CSV extract. Real TLS on loopback, through a running gateway.

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use caregate::pki::LeafSpec;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use support::*;

const STRUCTURED: &str = "urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1";
const READ_PATIENT: &str = "urn:nhs:names:services:gpconnect:fhir:rest:read:patient-1";
const PROVIDER_A: &str = "provider-a.example.nhs.uk";
const PROVIDER_B: &str = "provider-b.example.nhs.uk";

/// Two providers behind SSP-style routes, a plain FHIR route with clinical rules, a route that
/// does not check NHS numbers, and a non-FHIR route.
fn config(pki: &TestPki, a: &Upstream, b: &Upstream) -> GatewayConfig {
    let gp = || Allow::groups(&["gp"]);
    pki.config()
        .org_from(&["san_uri:urn:nhs:ods:", "endpoint"])
        .endpoint("gpsystem.a81003.example.nhs.uk", "A81003", Some("200000000103"))
        .org("A81001", "Example Surgery", &["gp"])
        .org("A81002", "Other Surgery", &["gp"])
        .org("A81003", "Endpoint Surgery", &["gp"])
        .org("RXC", "East Sussex Healthcare NHS Trust", &["trust"])
        .upstream("provider-a", [a.url()])
        .upstream("provider-b", [b.url()])
        .timeouts("1s", "2s")
        .route(
            Route::new("gpc-a", "/fhir/", "provider-a", "epr")
                .set(format!("provider_host = \"{PROVIDER_A}\""))
                .set("require_ssp_headers = true")
                .set("check_token_org = true")
                .allow(
                    gp().methods(&["POST"])
                        .resources(&["Patient"])
                        .interactions(&["$gpc.getstructuredrecord"])
                        .spine_interactions(&[STRUCTURED]),
                )
                .allow(
                    gp().methods(&["GET"])
                        .resources(&["Patient"])
                        .interactions(&["read"])
                        .spine_interactions(&[READ_PATIENT]),
                ),
        )
        .route(
            Route::new("gpc-b", "/fhir/", "provider-b", "epr")
                .set(format!("provider_host = \"{PROVIDER_B}\""))
                .allow(gp().resources(&["Patient"])),
        )
        .route(
            Route::new("epr-fhir", "/fhir/", "provider-a", "epr").allow(
                gp().methods(&["GET"])
                    .resources(&["Patient", "Observation"])
                    .interactions(&["read", "search-type"]),
            ),
        )
        .route(
            Route::new("lax", "/lax/", "provider-a", "epr")
                .set("check_nhs_number = false")
                .allow(gp()),
        )
        .route(Route::new("files", "/files/", "provider-a", "other").allow(Allow::orgs(&["RXC"])))
}

struct Setup {
    pki: TestPki,
    a: Upstream,
    b: Upstream,
    gw: Gw,
}

async fn setup() -> Setup {
    let pki = TestPki::new();
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    let gw = Gw::start(&pki, config(&pki, &a, &b)).await;
    Setup { pki, a, b, gw }
}

/// A GP Connect access token as GP systems send it: unsigned (`alg: none`), empty signature.
fn gp_connect_token(org: &str, practitioner: &str) -> String {
    let header = json!({"alg": "none", "typ": "JWT"});
    let payload = json!({
        "iss": "https://gpsystem.example.nhs.uk",
        "sub": practitioner,
        "aud": format!("https://{PROVIDER_A}/fhir"),
        "exp": 4_102_444_800u64,
        "iat": 4_102_444_500u64,
        "reason_for_request": "directcare",
        "requested_scope": "patient/*.read",
        "requesting_organization": {
            "resourceType": "Organization",
            "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": org}]
        },
        "requesting_practitioner": {
            "resourceType": "Practitioner",
            "id": practitioner,
            "identifier": [{"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": practitioner}]
        }
    });
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.", enc(&header), enc(&payload))
}

/// The Spine headers a GP Connect consumer sends.
fn ssp(interaction: &str, from: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ssp-traceid", "5d9c1a4e-7f3b-4c2a-9b1e-0a6f1c2d3e4f".to_string()),
        ("ssp-from", from.to_string()),
        ("ssp-to", "918999198738".to_string()),
        ("ssp-interactionid", interaction.to_string()),
    ]
}

fn reason(a: &Answer) -> String {
    let b = a.json();
    b["error"]
        .as_str()
        .or_else(|| b["issue"][0]["details"]["coding"][0]["code"].as_str())
        .unwrap_or("")
        .to_string()
}

fn is_operation_outcome(a: &Answer, code: &str) {
    assert_eq!(a.headers["content-type"], "application/fhir+json", "{:?}", a.body);
    let b = a.json();
    assert_eq!(b["resourceType"], "OperationOutcome", "{b}");
    assert_eq!(b["issue"][0]["severity"], "error");
    assert_eq!(b["issue"][0]["code"], code, "{b}");
    let rid = a.request_id();
    assert!(b["issue"][0]["diagnostics"].as_str().unwrap().contains(rid), "{b}");
}

#[tokio::test]
async fn rules_by_fhir_resource_type_and_interaction() {
    let s = setup().await;
    let gp = s.pki.client("A81001");
    let cases = [
        ("/fhir/Patient/9990000018", 200),
        ("/fhir/Observation?patient=Patient/9990000026", 200),
        (
            "/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C9990000034",
            200,
        ),
        // A type no rule names, an interaction no rule names.
        ("/fhir/MedicationStatement?patient=9990000018", 403),
        ("/fhir/Patient/9990000018/_history", 403),
        ("/fhir/Patient/9990000018/$everything", 403),
        // No resource type to be found: a rule that needs one does not match.
        ("/fhir/metadata", 403),
        ("/fhir/", 403),
    ];
    for (path, status) in cases {
        let a = s.gw.get(&gp, path).await;
        assert_eq!(a.status, status, "{path}: {:?}", a.body);
        if status == 403 {
            assert_eq!(reason(&a), "not_allowed", "{path}");
        }
    }
    let seen: Vec<String> = s.a.seen().into_iter().map(|x| x.uri).collect();
    assert_eq!(
        seen,
        [
            "/fhir/Patient/9990000018",
            "/fhir/Observation?patient=Patient/9990000026",
            "/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C9990000034"
        ]
    );

    // The audit record carries the facts the rule was decided on.
    let a = s.gw.get(&gp, "/fhir/Observation?patient=9990000042").await;
    let r = s.gw.access_of(&a);
    assert_eq!(r["rule"], "epr-fhir/allow[0]");
    assert_eq!(r["clinical"]["fhir_type"], "Observation");
    assert_eq!(r["clinical"]["interaction"], "search-type");
    assert_eq!(r["clinical"]["nhs_number"], "9990000042");
    let a = s.gw.get(&gp, "/fhir/Patient/9990000018/_history").await;
    let r = s.gw.access_of(&a);
    assert_eq!(
        (r["decision"].as_str(), r["reason"].as_str()),
        (Some("deny"), Some("not_allowed"))
    );
    assert_eq!(r["clinical"]["interaction"], "history-instance");
}

#[tokio::test]
async fn spine_interaction_ids_decide_and_ssp_headers_are_required() {
    let s = setup().await;
    let gp = s.pki.client("A81001");
    let token = format!("Bearer {}", gp_connect_token("A81001", "G13579135"));
    let structured = format!("/https://{PROVIDER_A}/fhir/Patient/$gpc.getstructuredrecord");
    let read = format!("/https://{PROVIDER_A}/fhir/Patient/9990000018");
    let go = |method: &'static str, path: String, hs: Vec<(&'static str, String)>| {
        // The operation's POST carries its Parameters.
        let body: &'static [u8] = if method == "POST" {
            br#"{"resourceType":"Parameters"}"#
        } else {
            b""
        };
        let req = s.gw.request(&gp).method(method).path(&path).headers(&hs).body(body);
        async move { req.send().await }
    };
    let with_token = |mut h: Vec<(&'static str, String)>| {
        h.push(("authorization", token.clone()));
        h
    };

    // The operation with its own interaction ID; a read with the read interaction ID.
    let a = go("POST", structured.clone(), with_token(ssp(STRUCTURED, "200000000101"))).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let r = s.gw.access_of(&a);
    assert_eq!(r["rule"], "gpc-a/allow[0]");
    assert_eq!(r["clinical"]["interaction"], STRUCTURED);
    assert_eq!(r["clinical"]["trace_id"], "5d9c1a4e-7f3b-4c2a-9b1e-0a6f1c2d3e4f");
    assert_eq!(r["clinical"]["fhir_type"], "Patient");
    let a = go("GET", read.clone(), with_token(ssp(READ_PATIENT, "200000000101"))).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(s.gw.access_of(&a)["rule"], "gpc-a/allow[1]");

    // An interaction ID that does not label the request it comes with: malformed (400), so
    // that a rule filtering on it never trusts a header the client chose.
    for (method, path, id) in [
        ("POST", &structured, READ_PATIENT),
        ("GET", &read, STRUCTURED),
        (
            "GET",
            &read,
            "urn:nhs:names:services:gpconnect:fhir:rest:search:patient-1",
        ),
    ] {
        let a = go(method, path.clone(), with_token(ssp(id, "200000000101"))).await;
        assert_eq!(
            (a.status, reason(&a)),
            (400, "bad_request".to_string()),
            "{method} {path} {id}"
        );
        is_operation_outcome(&a, "invalid");
    }
    // One that labels the request but that no rule names: refused by policy.
    let unnamed = "urn:nhs:names:services:gpconnect:fhir:rest:read:patient-2";
    let a = go("GET", read.clone(), with_token(ssp(unnamed, "200000000101"))).await;
    assert_eq!((a.status, reason(&a)), (403, "not_allowed".to_string()));
    is_operation_outcome(&a, "forbidden");
    assert_eq!(s.a.seen().len(), 2);

    // `require_ssp_headers`: each of the four missing (or empty) is a 400, before any rule.
    for missing in ["ssp-traceid", "ssp-from", "ssp-to", "ssp-interactionid"] {
        let hs: Vec<_> = with_token(ssp(READ_PATIENT, "200000000101"))
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        let a = go("GET", read.clone(), hs).await;
        assert_eq!(
            (a.status, reason(&a)),
            (400, "bad_request".to_string()),
            "without {missing}"
        );
        is_operation_outcome(&a, "invalid");
        assert!(a.json()["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("Ssp-InteractionID"));
    }
    let mut empty = with_token(ssp(READ_PATIENT, "200000000101"));
    empty[0].1 = String::new();
    assert_eq!(go("GET", read.clone(), empty).await.status, 400);
    assert_eq!(s.a.seen().len(), 2, "nothing refused reached the provider");
}

#[tokio::test]
async fn ssp_addressing_reaches_the_provider_named_in_the_path() {
    let s = setup().await;
    let gp = s.pki.client("A81001");
    let token = format!("Bearer {}", gp_connect_token("A81001", "G13579135"));
    let mut hs = ssp(READ_PATIENT, "200000000101");
    hs.push(("authorization", token.clone()));
    hs.push(("accept", "application/fhir+json".into()));

    // Provider B: forwarded to B's upstream as `/fhir/…`, Spine headers as sent.
    let path = format!("/https://{PROVIDER_B}/fhir/Patient/9990000026?_summary=true");
    let a = s.gw.request(&gp).path(&path).headers(&hs).send().await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert!(s.a.seen().is_empty(), "provider A must not see provider B's request");
    let seen = s.b.seen().pop().unwrap();
    assert_eq!(seen.uri, "/fhir/Patient/9990000026?_summary=true");
    for (k, v) in &hs {
        assert_eq!(seen.headers.get_all(*k).iter().collect::<Vec<_>>(), [v.as_str()], "{k}");
    }
    let r = s.gw.access_of(&a);
    assert_eq!(r["route"], "gpc-b");
    assert_eq!(r["request"]["path"], "/fhir/Patient/9990000026");
    assert_eq!(r["clinical"]["nhs_number"], "9990000026");

    // Provider A: the same path shape, its own upstream.
    let path = format!("/https://{PROVIDER_A}/fhir/Patient/9990000018");
    let a = s.gw.request(&gp).path(&path).headers(&hs).send().await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let seen = s.a.seen().pop().unwrap();
    assert_eq!(seen.uri, "/fhir/Patient/9990000018");
    for (k, v) in &hs {
        assert_eq!(seen.headers[*k], v.as_str(), "{k}");
    }
    assert_eq!(s.gw.access_of(&a)["route"], "gpc-a");
    assert_eq!(s.b.seen().len(), 1);

    // Over HTTP/2 too.
    let a = s.gw.request(&gp).path(&path).headers(&hs).h2().send().await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(s.a.seen().pop().unwrap().uri, "/fhir/Patient/9990000018");

    // A provider no route names: 404, as an OperationOutcome (the path is FHIR-shaped).
    let path = "/https://unknown.example.nhs.uk/fhir/Patient/9990000018";
    let a = s.gw.request(&gp).path(path).headers(&hs).send().await;
    assert_eq!((a.status, reason(&a)), (404, "no_route".to_string()));
    is_operation_outcome(&a, "not-found");
    // A provider address that is not a host name.
    let a =
        s.gw.raw(
            &gp,
            b"GET /https://bad_host!/fhir/Patient HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert!(a.starts_with("HTTP/1.1 400"), "{a}");
    // Provider B's rule names Patient only.
    let path = format!("/https://{PROVIDER_B}/fhir/Observation?patient=9990000026");
    let mut search = ssp(
        "urn:nhs:names:services:gpconnect:fhir:rest:search:observation-1",
        "200000000101",
    );
    search.push(("authorization", token.clone()));
    let a = s.gw.request(&gp).path(&path).headers(&search).send().await;
    assert_eq!((a.status, reason(&a)), (403, "not_allowed".to_string()));
    assert_eq!((s.a.seen().len(), s.b.seen().len()), (2, 1));
}

#[tokio::test]
async fn identity_mismatch_for_a_wrong_asid_or_token_org() {
    let s = setup().await;
    // A registered endpoint (ASID 200000000103) and a practice without one.
    let mut spec = LeafSpec::client("gpsystem.a81003.example.nhs.uk");
    spec.dns_names = vec!["gpsystem.a81003.example.nhs.uk".into()];
    let endpoint = s.pki.issue(&spec);
    let gp = s.pki.client("A81001");
    let read = format!("/https://{PROVIDER_A}/fhir/Patient/9990000018");

    // Ssp-From against the endpoint's ASID, on any route.
    let a =
        s.gw.request(&endpoint)
            .path("/fhir/Patient/9990000018")
            .header("ssp-from", "200000000999")
            .send()
            .await;
    assert_eq!((a.status, reason(&a)), (403, "identity_mismatch".to_string()));
    is_operation_outcome(&a, "forbidden");
    assert!(a.json()["issue"][0]["diagnostics"].as_str().unwrap().contains("ASID"));
    let a =
        s.gw.request(&endpoint)
            .path("/fhir/Patient/9990000018")
            .header("ssp-from", "200000000103")
            .send()
            .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let token = format!("Bearer {}", gp_connect_token("A81003", "G22222226"));
    let mut hs = ssp(READ_PATIENT, "200000000999");
    hs.push(("authorization", token));
    let a = s.gw.request(&endpoint).path(&read).headers(&hs).send().await;
    assert_eq!((a.status, reason(&a)), (403, "identity_mismatch".to_string()));
    hs[1].1 = "200000000103".into();
    let a = s.gw.request(&endpoint).path(&read).headers(&hs).send().await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(s.a.seen().len(), 2);

    // `check_token_org`: a token for another organisation, or none, is refused; the token is
    // recorded either way.
    let mut hs = ssp(READ_PATIENT, "200000000101");
    hs.push((
        "authorization",
        format!("Bearer {}", gp_connect_token("A81002", "G99999999")),
    ));
    let a = s.gw.request(&gp).path(&read).headers(&hs).send().await;
    assert_eq!((a.status, reason(&a)), (403, "identity_mismatch".to_string()));
    is_operation_outcome(&a, "forbidden");
    let r = s.gw.access_of(&a);
    assert_eq!(
        (r["decision"].as_str(), r["reason"].as_str()),
        (Some("deny"), Some("identity_mismatch"))
    );
    assert_eq!(r["client"]["org"], "A81001");
    assert_eq!(r["clinical"]["token"]["organisation"], "A81002");
    assert_eq!(
        r["clinical"]["token"]["practitioner"],
        "https://fhir.nhs.uk/Id/sds-user-id|G99999999"
    );
    hs.pop();
    let a = s.gw.request(&gp).path(&read).headers(&hs).send().await;
    assert_eq!((a.status, reason(&a)), (403, "identity_mismatch".to_string()));
    // A token naming the certificate's organisation does not make a forbidden request allowed:
    // the token never authenticates (RXC may not use this route whatever the token says).
    let trust = s.pki.client("RXC");
    hs.push(("authorization", format!("Bearer {}", gp_connect_token("RXC", "G1"))));
    let a = s.gw.request(&trust).path(&read).headers(&hs).send().await;
    assert_eq!((a.status, reason(&a)), (403, "not_allowed".to_string()));
    // …and a token naming an allowed org does not lend its rights to the certificate.
    hs.pop();
    hs.push(("authorization", format!("Bearer {}", gp_connect_token("A81001", "G1"))));
    let a = s.gw.request(&trust).path(&read).headers(&hs).send().await;
    assert_eq!(a.status, 403);
    assert_eq!(s.a.seen().len(), 2, "nothing refused reached the provider");
}

#[tokio::test]
async fn token_org_and_practitioner_are_in_the_access_record() {
    let s = setup().await;
    let gp = s.pki.client("A81001");
    let mut hs = ssp(READ_PATIENT, "200000000101");
    let token = format!("Bearer {}", gp_connect_token("A81001", "G13579135"));
    hs.push(("authorization", token.clone()));
    let read = format!("/https://{PROVIDER_A}/fhir/Patient/9990000018");
    let a = s.gw.request(&gp).path(&read).headers(&hs).send().await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let r = s.gw.access_of(&a);
    assert_eq!(r["decision"], "allow");
    assert_eq!(r["client"]["org"], "A81001");
    assert_eq!(r["clinical"]["token"]["organisation"], "A81001");
    assert_eq!(
        r["clinical"]["token"]["practitioner"],
        "https://fhir.nhs.uk/Id/sds-user-id|G13579135"
    );
    assert_eq!(r["clinical"]["nhs_number"], "9990000018");
    // The token itself goes upstream untouched (the provider verifies what it needs).
    assert_eq!(s.a.seen().pop().unwrap().headers["authorization"], token.as_str());
    // Recorded on routes that do not check it, too.
    let a =
        s.gw.request(&gp)
            .path("/fhir/Patient/9990000018")
            .headers(&hs)
            .send()
            .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        s.gw.access_of(&a)["clinical"]["token"]["practitioner"],
        "https://fhir.nhs.uk/Id/sds-user-id|G13579135"
    );
}

#[tokio::test]
async fn refusals_are_operation_outcomes_on_epr_routes_and_json_elsewhere() {
    let s = setup().await;
    let gp = s.pki.client("A81001");
    let trust = s.pki.client("RXC");

    // epr route: OperationOutcome.
    let a = s.gw.get(&trust, "/fhir/Patient/9990000018").await;
    assert_eq!(a.status, 403);
    is_operation_outcome(&a, "forbidden");
    assert_eq!(a.json()["issue"][0]["details"]["coding"][0]["code"], "not_allowed");
    let a = s.gw.get(&gp, "/fhir/Patient/9990000019").await;
    assert_eq!(a.status, 400);
    is_operation_outcome(&a, "invalid");

    // Another class of route: the JSON of SPEC §4.
    let a = s.gw.get(&gp, "/files/report.pdf").await;
    assert_eq!(a.status, 403);
    assert_eq!(a.headers["content-type"], "application/json");
    let b = a.json();
    assert_eq!(b["error"], "not_allowed");
    assert_eq!(b["request_id"], a.headers["x-request-id"].to_str().unwrap());
    assert!(b.get("resourceType").is_none());

    // No route: plain JSON, unless the request looks like FHIR (path or media type).
    let a = s.gw.get(&gp, "/nowhere").await;
    assert_eq!((a.status, a.json()["error"].as_str()), (404, Some("no_route")));
    assert_eq!(a.headers["content-type"], "application/json");
    let a = s.gw.get(&gp, "/R4/fhir/Patient/9990000018").await;
    assert_eq!(a.status, 404);
    is_operation_outcome(&a, "not-found");
    let a =
        s.gw.request(&gp)
            .path("/nowhere")
            .header("accept", "application/fhir+json")
            .send()
            .await;
    assert_eq!(a.status, 404);
    is_operation_outcome(&a, "not-found");
    // An unknown organisation on a FHIR path: refused before any route, still FHIR-shaped.
    let stranger = s.pki.client("ZZZ99");
    let a = s.gw.get(&stranger, "/fhir/Patient/9990000018").await;
    assert_eq!(a.status, 403);
    is_operation_outcome(&a, "forbidden");
    assert_eq!(a.json()["issue"][0]["details"]["coding"][0]["code"], "unknown_org");
    assert!(s.a.seen().is_empty() && s.b.seen().is_empty());
}

#[tokio::test]
async fn nhs_numbers_with_a_wrong_check_digit_are_refused() {
    let s = setup().await;
    let gp = s.pki.client("A81001");
    for path in [
        "/fhir/Patient/9990000019",
        "/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C9990000019",
        "/fhir/Patient?identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9990000019",
    ] {
        let a = s.gw.get(&gp, path).await;
        assert_eq!((a.status, reason(&a)), (400, "bad_request".to_string()), "{path}");
        let msg = a.json()["issue"][0]["diagnostics"].as_str().unwrap().to_string();
        assert!(msg.contains("NHS number") && msg.contains("check digit"), "{msg}");
        assert!(!msg.contains("9990000019"), "refusals do not echo input: {msg}");
        let r = s.gw.access_of(&a);
        assert_eq!(r["reason"], "bad_request");
        assert!(
            r["clinical"].get("nhs_number").is_none(),
            "an invalid number is not recorded as one"
        );
    }
    assert!(s.a.seen().is_empty());
    // Valid numbers pass; `check_nhs_number = false` lets a bad one through.
    for path in ["/fhir/Patient/9990000042", "/lax/fhir/Patient/9990000019"] {
        let a = s.gw.get(&gp, path).await;
        assert_eq!(a.status, 200, "{path}: {:?}", a.body);
    }
    assert_eq!(s.a.seen().pop().unwrap().uri, "/lax/fhir/Patient/9990000019");
}

// === organisations from an ODS CSV extract ===

/// `n` practices in the epraccur layout (27 quoted columns): code `P<5 digits>`, commissioner
/// (column 15) one of 42, every 20th closed.
fn epraccur(n: usize) -> String {
    let mut s = String::with_capacity(n * 260);
    for i in 0..n {
        let status = if i % 20 == 19 { "C" } else { "A" };
        let _ = writeln!(
            s,
            "\"P{i:05}\",\"THE PRACTICE NUMBER {i}\",\"Y56\",\"QMJ\",\"1 HIGH STREET\",\"\",\"LONDON\",\"\",\"\",\
             \"N1 {d}AA\",\"19740401\",\"\",\"{status}\",\"B\",\"{icb:02}X\",\"20130401\",\"\",\"020 7000 0000\",\"\",\"\",\
             \"\",\"0\",\"\",\"{icb:02}X\",\"\",\"4\",\"\"",
            d = i % 10,
            icb = i % 42,
        );
    }
    s
}

#[tokio::test]
async fn ten_thousand_ods_organisations_load_and_are_recognised() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let csv = pki.path().join("epraccur.csv");
    std::fs::write(&csv, epraccur(10_000)).unwrap();

    // A loose sanity bound only (debug build, shared CI): the figure is in benches/directory.rs.
    let started = Instant::now();
    let orgs = caregate::directory::load_ods_csv(&csv).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(orgs.len(), 9_500, "closed practices are skipped");
    let p7 = orgs.iter().find(|o| o.code == "P00007").unwrap();
    assert_eq!(
        (&*p7.name, p7.groups.as_slice()),
        ("THE PRACTICE NUMBER 7", &["07X".to_string()][..])
    );

    // P00007 and P00049 are commissioned by 07X; P00008 by 08X; P00019 is closed.
    let config = pki
        .config()
        .org_from(&["san_uri:urn:nhs:ods:"])
        .set(
            "identity",
            format!("organisations_csv = {}", support::config::path(&csv)),
        )
        .upstream("epr", [up.url()])
        .route(Route::new("epr-fhir", "/fhir/", "epr", "epr").allow(Allow::groups(&["07X"]).resources(&["Patient"])));
    let gw = Gw::start(&pki, config).await;
    for (org, status, why) in [
        ("P00007", 200, "allowed"),
        ("P00049", 200, "allowed"),
        ("P00008", 403, "not_allowed"),
        ("P00019", 403, "unknown_org"),
        ("Q99999", 403, "unknown_org"),
    ] {
        let leaf = pki.client(org);
        let a = gw.get(&leaf, "/fhir/Patient/9990000018").await;
        assert_eq!(a.status, status, "{org}");
        let r = gw.access_of(&a);
        assert_eq!(r["reason"], why, "{org}");
        if status == 200 {
            assert_eq!(
                r["client"]["org_name"],
                format!("THE PRACTICE NUMBER {}", &org[1..].trim_start_matches('0'))
            );
            assert_eq!(up.seen().pop().unwrap().headers["x-client-org"], org);
        }
    }
}
