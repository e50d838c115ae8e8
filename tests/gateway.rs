//! The gateway end to end: real TLS on loopback, certificates minted per run, a real upstream
//! that records what it received.

mod support;

use caregate::pki::{Eku, KeyUsage, LeafSpec};
use std::time::Duration as StdDuration;
use support::*;
use time::{Duration, OffsetDateTime};

#[tokio::test]
async fn each_identity_source_reaches_the_upstream_with_identity_headers() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::standard(&pki, &up).await;

    // URI SAN, subject OU and a registered endpoint's DNS name.
    let by_uri = pki.client("A81001");
    let mut spec = LeafSpec::client("practice system");
    spec.org_unit = Some("A81002".into());
    let by_ou = pki.issue(&spec);
    let mut spec = LeafSpec::client("gpsystem.a81003.example.nhs.uk");
    spec.dns_names = vec!["gpsystem.a81003.example.nhs.uk".into()];
    let by_endpoint = pki.issue(&spec);

    for (leaf, org) in [(&by_uri, "A81001"), (&by_ou, "A81002"), (&by_endpoint, "A81003")] {
        let a = gw
            .request(leaf)
            .path("/fhir/Patient/9990000018")
            // Spoofed copies of what only the gateway may set.
            .header("x-client-org", "RXC")
            .header("x-client-cert-subject", "CN=evil")
            .header("x-client-cert-fingerprint", "sha256:00")
            .header("client-cert", ":AAAA:")
            .header("x-forwarded-for", "10.0.0.1")
            .header("forwarded", "for=10.0.0.1")
            // Overrides that upstream frameworks honour.
            .header("x-forwarded-host", "admin.internal")
            .header("x-forwarded-port", "8080")
            .header("x-forwarded-prefix", "/admin")
            .header("x-real-ip", "10.0.0.1")
            .header("x-original-url", "/admin/users")
            .header("x-rewrite-url", "/admin/users")
            .header("x-http-method-override", "DELETE")
            .header("x-http-method", "DELETE")
            .header("x-method-override", "DELETE")
            .header("x-forwarded-client-cert", "Hash=00;Subject=\"CN=evil\"")
            .header("x-custom", "kept")
            .send()
            .await;
        assert_eq!(a.status, 200, "{org}: {:?}", a.body);
        assert_eq!(&a.body[..], b"upstream ok");
        assert!(a.headers.contains_key("x-request-id"));
        let seen = up.seen().pop().unwrap();
        let h = &seen.headers;
        assert_eq!(h.get_all("x-client-org").iter().collect::<Vec<_>>(), vec![org], "{org}");
        let fp = format!(
            "sha256:{}",
            caregate::hex(ring::digest::digest(&ring::digest::SHA256, &leaf.cert_der).as_ref())
        );
        assert_eq!(h["x-client-cert-fingerprint"], fp.as_str());
        assert!(h["x-client-cert-subject"].to_str().unwrap().starts_with("CN="));
        assert!(h["client-cert"].to_str().unwrap().starts_with(':'));
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            vec!["127.0.0.1"]
        );
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["forwarded"], "for=127.0.0.1;host=\"localhost\";proto=https");
        assert_eq!(h["x-custom"], "kept");
        for name in [
            "x-forwarded-host",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-real-ip",
            "x-original-url",
            "x-rewrite-url",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x-forwarded-client-cert",
        ] {
            assert!(!h.contains_key(name), "{org}: {name} reached the upstream");
        }
        assert_eq!(seen.uri, "/fhir/Patient/9990000018");
    }
}

#[tokio::test]
async fn bad_certificates_are_refused_at_the_handshake() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let now = OffsetDateTime::now_utc();

    let mut expired = LeafSpec::client("expired");
    expired.uris = vec!["urn:nhs:ods:A81001".into()];
    expired.not_before = Some(now - Duration::days(30));
    expired.not_after = Some(now - Duration::days(1));
    let mut future = expired.clone();
    future.not_before = Some(now + Duration::days(1));
    future.not_after = Some(now + Duration::days(30));
    let mut server_only = LeafSpec::client("server only");
    server_only.uris = vec!["urn:nhs:ods:A81001".into()];
    server_only.eku = vec![Eku::ServerAuth];
    let mut encipher_only = server_only.clone();
    encipher_only.eku = vec![Eku::ClientAuth];
    encipher_only.key_usage = vec![KeyUsage::KeyEncipherment];
    let revoked = pki.client("A81001");
    pki.revoke(&[revoked.serial]);
    let rogue = {
        let mut s = LeafSpec::client("rogue");
        s.uris = vec!["urn:nhs:ods:A81001".into()];
        pki.other_ca.issue(&s).unwrap()
    };
    let mut gw = Gw::standard(&pki, &up).await;

    let good = pki.client("A81001");
    assert!(!gw.handshake_refused(Some(&good)).await, "a good cert must pass");
    let forwarded = up.seen().len();
    let cases = [
        ("no certificate", None, "no_certificate"),
        ("another CA", Some(rogue), "unknown_issuer"),
        ("expired", Some(pki.issue(&expired)), "expired"),
        ("not yet valid", Some(pki.issue(&future)), "not_yet_valid"),
        ("revoked", Some(revoked), "revoked"),
        ("serverAuth-only EKU", Some(pki.issue(&server_only)), "other"),
        (
            "keyEncipherment-only key usage",
            Some(pki.issue(&encipher_only)),
            "other",
        ),
    ];
    for (what, leaf, _) in &cases {
        assert!(gw.handshake_refused(leaf.as_ref()).await, "{what} must be refused");
    }
    assert_eq!(up.seen().len(), forwarded, "nothing else reaches the upstream");
    let reasons: Vec<String> = gw
        .stop()
        .await
        .iter()
        .filter(|r| r["event"] == "tls_rejected")
        .map(|r| r["reason"].as_str().unwrap_or("").to_string())
        .collect();
    for (what, _, reason) in &cases {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{what}: no tls_rejected record with {reason} in {reasons:?}"
        );
    }
}

#[tokio::test]
async fn refusals_have_their_status_and_reason() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::standard(&pki, &up).await;
    let gp = pki.client("A81001");
    let unknown = pki.client("ZZZ99");
    let no_rights = pki.client("B99999");

    let cases = [
        (&unknown, "GET", "/fhir/Patient/9990000018", 403, "unknown_org"),
        (&no_rights, "GET", "/fhir/Patient/9990000018", 403, "not_allowed"),
        (&gp, "POST", "/fhir/Patient", 403, "not_allowed"),
        (&gp, "GET", "/nowhere", 404, "no_route"),
    ];
    for (leaf, method, path, status, reason) in cases {
        let body = if method == "POST" { &b"{}"[..] } else { b"" };
        let a = gw.request(leaf).method(method).path(path).body(body).send().await;
        assert_eq!(a.status, status, "{reason}");
        let body = a.json();
        // FHIR routes answer with an OperationOutcome, others with the JSON of SPEC §4.
        let got = body["error"]
            .as_str()
            .or_else(|| body["issue"][0]["details"]["text"].as_str())
            .unwrap_or_default()
            .to_string();
        assert_eq!(got, reason);
    }
    assert!(up.seen().is_empty(), "refused requests never reach the upstream");
}

#[tokio::test]
async fn upstream_down_is_502_and_silent_upstream_is_504() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let dead = format!("http://{}", dead_addr());
    let gw = Gw::start(&pki, pki.config().standard([dead])).await;
    let trust = pki.client("RXC");
    let a = gw.get(&trust, "/files/x").await;
    assert_eq!(a.status, 502);
    assert_eq!(a.json()["error"], "upstream_unavailable");

    let gw = Gw::standard(&pki, &up).await;
    let a = gw.get(&trust, "/files/slow").await;
    assert_eq!(a.status, 504);
    assert_eq!(a.json()["error"], "upstream_timeout");
}

#[tokio::test]
async fn failover_to_the_next_origin_keeps_the_body() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let dead = format!("http://{}", dead_addr());
    let gw = Gw::start(&pki, pki.config().standard([dead, up.url()])).await;
    let trust = pki.client("RXC");
    for _ in 0..4 {
        let a = gw.post(&trust, "/files/upload", pattern(100_000)).await;
        assert_eq!(a.status, 200);
    }
    assert!(up.seen().iter().all(|s| s.body_len == 100_000));
    assert_eq!(up.seen().len(), 4);
}

#[tokio::test]
async fn path_tricks_never_reach_a_route_they_should_not() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let config = pki.config().standard([up.url()]).route(
        Route::new("servlet", "/servlet/", "epr", "epr")
            .set("allow_path_params = true")
            .allow(Allow::groups(&["gp"])),
    );
    let mut gw = Gw::start(&pki, config).await;
    // A81001 may use /files/ and /fhir/ (GET); the trick is to reach /files/ via /fhir/ or
    // anything else via traversal.
    let gp = pki.client("A81002");
    let cases: [(&str, u16, Option<&str>); 14] = [
        ("/fhir/../files/secret", 403, None),
        ("/fhir/%2e%2e/files/secret", 403, None),
        ("/fhir/%2E%2E/%2e%2e/etc/passwd", 400, None),
        ("/fhir%2f..%2ffiles/secret", 400, None),
        ("/fhir/..%5cfiles", 400, None),
        ("/fhir/a%00b", 400, None),
        ("//fhir//Patient", 200, Some("/fhir/Patient")),
        ("/fhir/./Patient/%39990000018", 200, Some("/fhir/Patient/9990000018")),
        (
            "/fhir/Patient/../Observation?patient=9990000018",
            200,
            Some("/fhir/Observation?patient=9990000018"),
        ),
        // Servlet path parameters: Tomcat resolves `..;` as `..`, and `;x` hides the id.
        ("/fhir/Patient/..;/Observation", 400, None),
        ("/fhir/Patient/9990000018;x", 400, None),
        ("/fhir;jsessionid=1/Patient/9990000018", 400, None),
        // A route that allows them: cut before matching and forwarding, as the servlet would.
        ("/servlet/a/..;/b;v=1", 200, Some("/servlet/b")),
        // Raw UTF-8 in a path that takes the slow path goes on as it came.
        ("/fhir/Zoë/./Patient", 200, Some("/fhir/Zoë/Patient")),
    ];
    for (path, status, forwarded) in cases {
        let before = up.seen().len();
        let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let a = gw.raw(&gp, head.as_bytes()).await;
        assert!(a.starts_with(&format!("HTTP/1.1 {status}")), "{path}: {a}");
        let seen = up.seen();
        match forwarded {
            Some(p) => assert_eq!(seen.last().unwrap().uri, p, "{path}"),
            None => assert_eq!(seen.len(), before, "{path} must not be forwarded"),
        }
    }
    let records = gw.stop().await;
    let servlet = records
        .iter()
        .find(|r| r["event"] == "access" && r["route"] == "servlet")
        .unwrap();
    assert_eq!(servlet["request"]["path"], "/servlet/b");
    assert_eq!(servlet["request"]["path_params"], serde_json::json!(["", "v=1"]));
}

#[tokio::test]
async fn smuggling_shapes_are_refused_and_never_forwarded() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::standard(&pki, &up).await;
    let trust = pki.client("RXC");
    let cases: [&[u8]; 12] = [
        b"POST /files/a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /files/a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /files/a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST /files/a HTTP/1.1\r\nHost: localhost\r\nContent-Length:\r\n\r\n",
        b"GET /files/a HTTP/1.1\r\nHost: localhost\r\nX-Folded: a\r\n  b\r\n\r\n",
        b"POST /files/a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        b"POST /files/a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
        // Two Hosts, two Authorizations, two Ssp-From: the upstream might read the other copy.
        b"GET /files/a HTTP/1.1\r\nHost: localhost\r\nHost: admin.internal\r\n\r\n",
        b"GET /files/a HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n",
        b"GET /files/a HTTP/1.1\r\nHost: localhost\r\nSsp-From: 1\r\nssp-from: 2\r\n\r\n",
        // A Host that is no host name.
        b"GET /files/a HTTP/1.1\r\nHost: =HYPERLINK(1)\r\n\r\n",
        // HTTP/1.1 without Host.
        b"GET /files/a HTTP/1.1\r\nAccept: */*\r\n\r\n",
    ];
    for case in cases {
        // Answered, and the connection closed: what follows could not be framed safely.
        let a = gw
            .raw_then_closed(&trust, case)
            .await
            .unwrap_or_else(|| panic!("still open after a refusal: {}", String::from_utf8_lossy(case)));
        assert!(
            a.starts_with("HTTP/1.1 400"),
            "{}: {a:?}",
            String::from_utf8_lossy(case)
        );
    }
    assert!(up.seen().is_empty(), "{:?}", up.seen());
}

#[tokio::test]
async fn http2_and_http11_carry_large_bodies_both_ways() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::standard(&pki, &up).await;
    let trust = pki.client("RXC");
    let n = 8 << 20;
    for h2 in [false, true] {
        let path = format!("/files/bytes/{n}");
        let a = gw.request(&trust).path(&path).http2(h2).send().await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body.len(), n);
        assert_eq!(&a.body[..], &pattern(n)[..], "download h2={h2}");

        let body = pattern(n);
        let a = gw
            .request(&trust)
            .method("PUT")
            .path("/files/echo")
            .body(body.clone())
            .http2(h2)
            .send()
            .await;
        assert_eq!(a.status, 200);
        assert_eq!(&a.body[..], &body[..], "upload h2={h2}");
    }
}

#[tokio::test]
async fn a_head_trickled_a_byte_at_a_time_is_cut_off() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(
        &pki,
        pki.config()
            .listener(r#"header_timeout = "300ms""#)
            .standard([up.url()]),
    )
    .await;
    let trust = pki.client("RXC");
    let mut tls = gw.connect(Some(&trust), &[b"http/1.1"]).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = b"GET /files/a HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = std::time::Instant::now();
    let mut cut = false;
    let mut interval = tokio::time::interval(StdDuration::from_millis(50));
    for b in head.iter() {
        interval.tick().await;
        if tls.write_all(&[*b]).await.is_err() || tls.flush().await.is_err() {
            cut = true;
            break;
        }
    }
    if !cut {
        let mut buf = Vec::new();
        let _ = tls.read_to_end(&mut buf).await;
        cut = !String::from_utf8_lossy(&buf).contains("200");
    }
    assert!(cut, "the slow head must be cut off");
    assert!(started.elapsed() < StdDuration::from_secs(4));
    assert!(up.seen().is_empty());
}

#[test]
fn config_errors_name_their_key() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let good = pki
        .config()
        .audit(&dir.path().join("audit"))
        .standard(["http://127.0.0.1:9"])
        .to_string();
    let cases = [
        ("bind = \"127.0.0.1:0\"", "bind = \"nonsense\"", "listener.bind"),
        (
            "bind = \"127.0.0.1:0\"",
            "bind = \"127.0.0.1:0\"\nworkers = 0",
            "listener.workers",
        ),
        ("[admin]", "[admin]\nport = 1", "port"),
        (
            "durability = \"flush\"",
            "durability = \"sometimes\"",
            "audit.durability",
        ),
        (
            "connect_timeout = \"1s\"",
            "connect_timeout = \"1 fortnight\"",
            "upstream[0].connect_timeout",
        ),
        (
            "upstream = \"epr\"\nclass = \"epr\"",
            "upstream = \"pacs\"\nclass = \"epr\"",
            "route[0].upstream",
        ),
        ("class = \"epr\"", "class = \"xray\"", "route[0].class"),
        (
            "groups = [\"gp\"]\n  methods",
            "groups = [\"nobody\"]\n  methods",
            "route[0].allow[0].groups",
        ),
        ("org = \"A81003\"", "org = \"NOPE1\"", "endpoint[0].org"),
        ("server.pem\"", "missing.pem\"", "listener.server_cert"),
        (
            "client_ca = [\"",
            "client_ca = [\"/nonexistent",
            "listener.client_ca[0]",
        ),
    ];
    for (from, to, key) in cases {
        assert!(good.contains(from), "fixture lacks {from}");
        let text = good.replacen(from, to, 1);
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let err = caregate::config::Config::load(&path)
            .and_then(|c| caregate::state::State::build(c, 0).map(|_| ()))
            .expect_err(key);
        let msg = err.to_string();
        assert!(msg.contains(key), "{key}: {msg}");
        assert!(!msg.contains('\n'), "one sentence: {msg}");
    }
}

/// A request trailer could forge what the head was checked for (identity, `Ssp-*`, `Host`):
/// those names never pass, others do, by one rule for HTTP/1 and HTTP/2.
#[tokio::test]
async fn request_trailers_never_forge_what_the_head_was_checked_for() {
    use http_body_util::{BodyExt as _, StreamBody};
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::standard(&pki, &up).await;
    let trust = pki.client("RXC");
    let check = |what: &str| {
        let seen = up.seen().pop().expect("forwarded");
        assert_eq!(seen.body_len, 5, "{what}");
        let t = seen.trailers.unwrap_or_default();
        assert_eq!(
            t.get("x-checksum").map(|v| v.to_str().unwrap()),
            Some("abc"),
            "{what}: {t:?}"
        );
        for name in ["x-client-org", "ssp-from", "host", "x-forwarded-host"] {
            assert!(!t.contains_key(name), "{what}: {name} passed as a trailer");
        }
    };

    let head = "POST /files/t HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
                Trailer: X-Client-Org, Ssp-From, Host, X-Forwarded-Host, X-Checksum\r\nConnection: close\r\n\r\n";
    let body = "5\r\nhello\r\n0\r\nX-Client-Org: A81001\r\nSsp-From: 1\r\nHost: evil\r\n\
                X-Forwarded-Host: admin\r\nX-Checksum: abc\r\n\r\n";
    let a = gw.raw(&trust, format!("{head}{body}").as_bytes()).await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    check("HTTP/1.1");

    let tls = gw.connect(Some(&trust), &[b"h2"]).await.unwrap();
    type Frames = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>>,
    >;
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, Frames>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut trailers = http::HeaderMap::new();
    for (k, v) in [
        ("x-client-org", "A81001"),
        ("ssp-from", "1"),
        ("x-forwarded-host", "admin"),
        ("x-checksum", "abc"),
    ] {
        trailers.insert(k, v.parse().unwrap());
    }
    let frames = vec![
        Ok(hyper::body::Frame::data(bytes::Bytes::from_static(b"hello"))),
        Ok(hyper::body::Frame::trailers(trailers)),
    ];
    let req = http::Request::post("https://localhost/files/t")
        .header("trailer", "x-client-org, ssp-from, x-forwarded-host, x-checksum")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await;
    check("HTTP/2");
}
