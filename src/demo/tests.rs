//! The sample upstreams over real loopback sockets, the demo config, and the demo start-up.

use super::upstreams::{self, nhs_number_is_valid, PATIENTS, STUDIES};
use super::*;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

type TestClient = Client<HttpConnector, http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn empty() -> http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error> {
    Full::new(Bytes::new()).map_err(|e| match e {}).boxed_unsync()
}

async fn start(kind: &str) -> (SocketAddr, AbortOnDrop) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = match kind {
        "fhir" => tokio::spawn(upstreams::serve_fhir(l)),
        _ => tokio::spawn(upstreams::serve_dicomweb(l)),
    };
    (addr, AbortOnDrop(task))
}

async fn get(c: &TestClient, addr: SocketAddr, path: &str) -> (StatusCode, String, Bytes) {
    let uri = format!("http://{addr}{path}");
    let resp = c.get(uri.parse().unwrap()).await.unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ct, body)
}

fn json(b: &Bytes) -> Value {
    serde_json::from_slice(b).unwrap()
}

#[test]
fn sample_nhs_numbers_have_valid_check_digits() {
    for p in PATIENTS {
        assert!(nhs_number_is_valid(p.0), "{}", p.0);
        assert!(p.0.starts_with("999"), "synthetic range only: {}", p.0);
    }
    for s in STUDIES {
        assert!(PATIENTS.iter().any(|p| p.0 == s.1));
        assert!(s.0.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
    }
    // Known good and bad numbers.
    assert!(nhs_number_is_valid("9990000034"));
    assert!(!nhs_number_is_valid("9990000019"));
    assert!(!nhs_number_is_valid("999000001"));
    assert!(!nhs_number_is_valid("99900000x8"));
    // A check digit of 10 is never valid: 999000014 sums to a remainder of 1.
    assert!((0..10).all(|d| !nhs_number_is_valid(&format!("999000014{d}"))));
}

#[tokio::test]
async fn fhir_upstream_answers_reads_searches_and_404s() {
    let (addr, _srv) = start("fhir").await;
    let c = client();

    let (s, ct, b) = get(&c, addr, "/fhir/metadata").await;
    assert_eq!((s, ct.as_str()), (StatusCode::OK, "application/fhir+json"));
    assert_eq!(json(&b)["resourceType"], "CapabilityStatement");

    let nhs = PATIENTS[0].0;
    let (s, ct, b) = get(&c, addr, &format!("/fhir/Patient/{nhs}")).await;
    assert_eq!((s, ct.as_str()), (StatusCode::OK, "application/fhir+json"));
    let p = json(&b);
    assert_eq!(p["resourceType"], "Patient");
    assert_eq!(p["identifier"][0]["system"], "https://fhir.nhs.uk/Id/nhs-number");
    assert_eq!(p["identifier"][0]["value"], nhs);

    // Plain and percent-encoded search.
    let nhs = PATIENTS[1].0;
    for q in [
        format!("identifier=https://fhir.nhs.uk/Id/nhs-number|{nhs}"),
        format!("identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C{nhs}"),
    ] {
        let (s, _, b) = get(&c, addr, &format!("/fhir/Patient?{q}")).await;
        assert_eq!(s, StatusCode::OK);
        let bundle = json(&b);
        assert_eq!(bundle["resourceType"], "Bundle");
        assert_eq!(bundle["type"], "searchset");
        assert_eq!(bundle["total"], 1, "{q}");
        assert_eq!(bundle["entry"][0]["resource"]["id"], nhs);
    }
    let (_, _, b) = get(
        &c,
        addr,
        "/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000999",
    )
    .await;
    assert_eq!(json(&b)["total"], 0);

    let (s, _, b) = get(&c, addr, &format!("/fhir/Observation?patient={nhs}")).await;
    assert_eq!(s, StatusCode::OK);
    let bundle = json(&b);
    assert_eq!(bundle["total"], 2);
    assert_eq!(
        bundle["entry"][0]["resource"]["subject"]["reference"],
        format!("Patient/{nhs}")
    );

    for path in ["/fhir/Patient/9990000999", "/fhir/Nothing", "/elsewhere"] {
        let (s, ct, b) = get(&c, addr, path).await;
        assert_eq!(
            (s, ct.as_str()),
            (StatusCode::NOT_FOUND, "application/fhir+json"),
            "{path}"
        );
        assert_eq!(json(&b)["resourceType"], "OperationOutcome");
    }

    // A create is answered 201 with the resource back.
    let body = r#"{"resourceType":"Observation","status":"final"}"#;
    let req = Request::post(format!("http://{addr}/fhir/Observation"))
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed_unsync())
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(resp.headers().contains_key(header::LOCATION));
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), body);
}

#[tokio::test]
async fn dicomweb_upstream_lists_and_streams_studies() {
    let (addr, _srv) = start("dicomweb").await;
    let c = client();

    let (s, ct, b) = get(&c, addr, "/dicomweb/studies").await;
    assert_eq!((s, ct.as_str()), (StatusCode::OK, "application/dicom+json"));
    let studies = json(&b);
    let uids: Vec<&str> = studies
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["0020000D"]["Value"][0].as_str().unwrap())
        .collect();
    assert_eq!(uids, [STUDIES[0].0, STUDIES[1].0]);
    let (_, _, b) = get(&c, addr, &format!("/dicomweb/studies?PatientID={}", STUDIES[1].1)).await;
    assert_eq!(json(&b).as_array().unwrap().len(), 1);

    // The small study, whole.
    let (s, ct, b) = get(&c, addr, &format!("/dicomweb/studies/{}", STUDIES[0].0)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        ct.starts_with("multipart/related; type=\"application/dicom\"; boundary="),
        "{ct}"
    );
    let boundary = ct.rsplit("boundary=").next().unwrap();
    assert!(b.starts_with(format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes()));
    assert!(b.ends_with(format!("\r\n--{boundary}--\r\n").as_bytes()));
    let head = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").len();
    assert_eq!(&b[head + 128..head + 132], b"DICM");
    assert_eq!(
        b.len() as u64,
        upstreams::INSTANCE_BYTES + head as u64 + 2 + boundary.len() as u64 + 6
    );

    // The large one: announced length, streamed; read a few frames and hang up.
    let uri = format!("http://{addr}/dicomweb/studies/{}", STUDIES[1].0);
    let resp = c.get(uri.parse().unwrap()).await.unwrap();
    let len: u64 = resp.headers()[header::CONTENT_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(len > 256 << 20, "{len}");
    let mut body = resp.into_body();
    let mut got = 0;
    for _ in 0..16 {
        let frame = body.frame().await.unwrap().unwrap();
        got += frame.into_data().unwrap().len();
    }
    assert!(got > 0);
    drop(body);

    let (s, _, _) = get(&c, addr, "/dicomweb/studies/1.2.3.4").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn generated_study_body_is_made_in_64k_chunks_of_the_announced_length() {
    let (len, parts) = upstreams::study_body(3, Bytes::from(vec![b'x'; upstreams::CHUNK]));
    let mut body = upstreams::Generated::new(len, parts);
    assert_eq!(http_body::Body::size_hint(&body).exact(), Some(len));
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        assert!(!data.is_empty() && data.len() <= upstreams::CHUNK);
        total += data.len() as u64;
    }
    assert_eq!(total, len);
    assert!(len > 3 * upstreams::INSTANCE_BYTES);
}

#[tokio::test]
async fn bytes_and_echo_stream() {
    let (addr, _srv) = start("fhir").await;
    let c = client();
    for n in [0usize, 1024, 64 << 10, (1 << 20) + 7] {
        let (s, _, b) = get(&c, addr, &format!("/bytes/{n}")).await;
        assert_eq!((s, b.len()), (StatusCode::OK, n));
    }
    let (s, _, _) = get(&c, addr, "/bytes/lots").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // 4 MiB up in 64 KiB chunks without a length, and the same bytes back.
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = (0..64u8)
        .map(|i| Ok(http_body::Frame::data(Bytes::from(vec![i; 64 << 10]))))
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync();
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}/echo"))
        .header(header::CONTENT_TYPE, "application/dicom")
        .body(body)
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/dicom");
    let back = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(back.len(), 4 << 20);
    assert!(back
        .chunks(64 << 10)
        .enumerate()
        .all(|(i, c)| c.iter().all(|&b| b == i as u8)));

    // Keep-alive: the connection pool reused one connection for all of the above; the server
    // still answers after the rest.
    let (s, _, _) = get(&c, addr, "/fhir/metadata").await;
    assert_eq!(s, StatusCode::OK);
    let _ = empty();
}

#[tokio::test]
async fn upstream_stops_when_its_task_is_dropped() {
    let (addr, srv) = start("fhir").await;
    let c = client();
    assert_eq!(get(&c, addr, "/fhir/metadata").await.0, StatusCode::OK);
    drop(srv);
    // Dropping the accept task closes the listener and every connection it spawned.
    let fresh = client();
    let mut refused = false;
    for _ in 0..50 {
        let uri = format!("http://{addr}/fhir/metadata").parse().unwrap();
        if fresh.get(uri).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused);
}

#[test]
fn embedded_demo_config_is_valid_and_matches_the_dev_pki() {
    let c = Config::from_bytes(Path::new("/demo/config/demo.toml"), DEMO_TOML.as_bytes()).unwrap();
    assert_eq!(c.listener.bind, "127.0.0.1:8443".parse().unwrap());
    assert_eq!(c.admin.as_ref().unwrap().bind, "127.0.0.1:9901".parse().unwrap());
    let files = |p: &Path| lexical(p).display().to_string();
    assert_eq!(files(&c.listener.server_cert), "/demo/certs/dev/server.pem");
    assert_eq!(files(&c.listener.server_key), "/demo/certs/dev/server.key");
    assert_eq!(files(&c.listener.client_ca[0]), "/demo/certs/dev/ca.pem");
    assert_eq!(files(&c.listener.crl[0]), "/demo/certs/dev/ca.crl");
    assert_eq!(files(&c.audit.dir), "/demo/audit");
    assert_eq!(
        files(c.audit.signing_key.as_ref().unwrap()),
        "/demo/certs/dev/audit-signing.key"
    );
    assert_eq!(c.endpoints[0].fqdn, crate::pki::SOCIAL_CARE_FQDN);
    let orgs: Vec<&str> = c.organisations.iter().map(|o| o.code.as_str()).collect();
    assert_eq!(orgs, ["A81001", "A81002", "RXC", "8KP42"]);
    assert_eq!(c.endpoints[0].org, "8KP42");
    let ups: Vec<(&str, String)> = c
        .upstreams
        .iter()
        .map(|u| (u.name.as_str(), u.urls[0].to_string()))
        .collect();
    assert_eq!(
        ups,
        [
            ("epr", "http://127.0.0.1:9080/".to_string()),
            ("pacs", "http://127.0.0.1:9081/".to_string())
        ]
    );
    let pacs = c.routes.iter().find(|r| r.path_prefix == "/dicomweb/").unwrap();
    assert_eq!(pacs.class, crate::config::Class::Image);
    assert!(pacs.allow.iter().all(|a| a.groups == ["trust"] && a.orgs.is_empty()));
}

#[test]
fn prepare_makes_the_pki_once_and_loads_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        dir: tmp.path().to_path_buf(),
        ephemeral_ports: true,
    };
    let p = prepare(&opts).unwrap();
    assert!(p.made_pki);
    assert_eq!(p.config.listener.bind, "127.0.0.1:0".parse().unwrap());
    assert_eq!(p.config.admin.as_ref().unwrap().bind.port(), 0);
    // Every file the config names exists.
    let l = &p.config.listener;
    for f in [
        &l.server_cert,
        &l.server_key,
        &l.client_ca[0],
        &l.crl[0],
        p.config.audit.signing_key.as_ref().unwrap(),
    ] {
        assert!(f.is_file(), "{}", f.display());
    }
    let ca = std::fs::read(certs_dir(tmp.path()).join("ca.pem")).unwrap();
    let again = prepare(&opts).unwrap();
    assert!(!again.made_pki);
    assert_eq!(std::fs::read(certs_dir(tmp.path()).join("ca.pem")).unwrap(), ca);

    // A config file in the folder wins over the embedded one.
    std::fs::create_dir_all(tmp.path().join("config")).unwrap();
    let edited = DEMO_TOML.replace("127.0.0.1:8443", "127.0.0.1:18443");
    std::fs::write(tmp.path().join("config/demo.toml"), edited).unwrap();
    let own = prepare(&DemoOptions {
        dir: tmp.path().into(),
        ephemeral_ports: false,
    })
    .unwrap();
    assert_eq!(own.config.listener.bind.port(), 18443);
}

#[test]
fn instructions_are_pasteable_from_the_demo_folder() {
    let gw = "127.0.0.1:8443".parse().unwrap();
    let s = instructions(Path::new("."), gw, None, Path::new("./config/../audit"), true);
    assert!(s.contains(
        "curl --cacert certs/dev/ca.pem --cert certs/dev/a81001.pem --key certs/dev/a81001.key https://localhost:8443/fhir/Patient/9990000018"
    ), "{s}");
    assert!(s.contains("'https://localhost:8443/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000026'"));
    assert!(s.contains("--cert certs/dev/revoked.pem"));
    assert!(s.contains(&format!("https://localhost:8443/dicomweb/studies/{}", STUDIES[0].0)));
    assert!(s.contains("caregate audit verify audit --public-key certs/dev/audit-signing.pub"));
    assert!(!s.contains("cd "));

    let s = instructions(
        Path::new("/tmp/my demo"),
        "127.0.0.1:40000".parse().unwrap(),
        None,
        Path::new("/tmp/my demo/config/../audit"),
        false,
    );
    assert!(s.contains("cd '/tmp/my demo'"), "{s}");
    assert!(s.contains("https://localhost:40000/"));
    assert!(s.contains("caregate audit verify audit "));
}

#[test]
fn lexical_paths() {
    assert_eq!(lexical(Path::new("./config/../audit")), Path::new("audit"));
    assert_eq!(lexical(Path::new("../../x")), Path::new("../../x"));
    assert_eq!(lexical(Path::new("/a/b/../c")), Path::new("/a/c"));
    assert_eq!(
        relative_to(Path::new("/x/config/../audit"), Path::new("/x")),
        Path::new("audit")
    );
    assert_eq!(
        relative_to(Path::new("/elsewhere/audit"), Path::new("/x")),
        Path::new("/elsewhere/audit")
    );
}

#[tokio::test]

async fn demo_starts_end_to_end_with_ephemeral_ports() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = super::start(DemoOptions {
        dir: tmp.path().to_path_buf(),
        ephemeral_ports: true,
    })
    .await
    .unwrap();
    assert!(demo.made_pki);
    assert_ne!(demo.gateway_addr.port(), 0);
    let epr = demo.epr_addr.unwrap();
    assert_eq!(demo.config.upstreams[0].urls[0].to_string(), format!("http://{epr}/"));
    assert!(demo
        .instructions()
        .contains(&format!("https://localhost:{}/", demo.gateway_addr.port())));
    // The console runs too, and the guide says how to open it in a browser.
    let console = demo.console_addr.expect("the demo starts the console");
    assert_ne!(console.port(), 0);
    let guide = demo.instructions();
    assert!(
        guide.contains(&format!("https://localhost:{}/", console.port())),
        "{guide}"
    );
    assert!(
        guide.contains("openssl pkcs12 -export -in certs/dev/rxc.pem -inkey certs/dev/rxc.key"),
        "{guide}"
    );
    demo.shutdown().await.unwrap();
}
