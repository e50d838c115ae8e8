//! Fixtures for end-to-end tests: a PKI minted per run, a recording upstream, the gateway on
//! loopback port 0, and clients that present certificates over real TLS.
#![allow(dead_code)]

use bytes::Bytes;
use caregate::pki::{Ca, Leaf, LeafSpec};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A PKI for one test run: the CA, the gateway's server cert, and files on disk.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub other_ca: Ca,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test CA").unwrap();
        let other_ca = Ca::new("someone else's CA").unwrap();
        let server = ca.issue(&LeafSpec::server(&["localhost", "127.0.0.1"])).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key_pem).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let crl = ca
            .crl(&[], now - time::Duration::hours(1), now + time::Duration::days(7))
            .unwrap();
        std::fs::write(dir.path().join("ca.crl"), crl).unwrap();
        TestPki { dir, ca, other_ca }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A client cert whose URI SAN names `org` (`urn:nhs:ods:<org>`).
    pub fn client(&self, org: &str) -> Leaf {
        let mut spec = LeafSpec::client(&format!("system of {org}"));
        spec.uris = vec![format!("urn:nhs:ods:{org}")];
        self.ca.issue(&spec).unwrap()
    }

    pub fn issue(&self, spec: &LeafSpec) -> Leaf {
        self.ca.issue(spec).unwrap()
    }

    /// Rewrites the CRL to revoke these serials.
    pub fn revoke(&self, serials: &[u64]) {
        let now = time::OffsetDateTime::now_utc();
        let crl = self
            .ca
            .crl(serials, now - time::Duration::hours(1), now + time::Duration::days(7))
            .unwrap();
        std::fs::write(self.path().join("ca.crl"), crl).unwrap();
    }
}

// === the recording upstream ===

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body_len: usize,
    pub body_sha: String,
    /// When the upstream was told an audit dir: whether this request's `access` record was
    /// already on disk when the request arrived.
    pub access_on_disk: Option<bool>,
}

#[derive(Clone, Default)]
pub struct Upstream {
    pub addr: Option<SocketAddr>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Set to have the upstream check the audit trail for each request's access record.
    pub audit_dir: Arc<Mutex<Option<PathBuf>>>,
    /// Connections accepted.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.unwrap())
    }
}

fn sha(b: &[u8]) -> String {
    caregate::hex(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
}

/// Deterministic bytes for large-body tests.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// An upstream that records what it got. Paths: `/slow…` never answers; `/bytes/<n>` answers n
/// pattern bytes; `/echo` echoes the body; anything else `200 upstream ok`.
pub async fn start_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut up = Upstream {
        addr: Some(listener.local_addr().unwrap()),
        ..Default::default()
    };
    let seen = up.seen.clone();
    let audit_dir = up.audit_dir.clone();
    let connections = up.connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let seen = seen.clone();
            let audit_dir = audit_dir.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    let dir = audit_dir.lock().unwrap().clone();
                    async move { Ok::<_, Infallible>(upstream_answer(req, seen, dir).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    up.seen = up.seen.clone();
    up
}

async fn upstream_answer(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    audit_dir: Option<PathBuf>,
) -> Response<http_body_util::combinators::BoxBody<Bytes, std::io::Error>> {
    let (parts, body) = req.into_parts();
    let access_on_disk = audit_dir.map(|dir| {
        let id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        audit_records(&dir)
            .iter()
            .any(|r| r["event"] == "access" && r["request_id"] == id.as_str())
    });
    // Routes may sit under /files/: the fixture's behaviour keys off the rest.
    let path = parts.uri.path().trim_start_matches("/files").to_string();
    if path.starts_with("/slow") {
        std::future::pending::<()>().await;
    }
    if path == "/echo" {
        seen.lock().unwrap().push(Seen {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: parts.headers.clone(),
            body_len: 0,
            body_sha: String::new(),
            access_on_disk,
        });
        let body = body.map_err(std::io::Error::other).boxed();
        return Response::new(body);
    }
    let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body_len: bytes.len(),
        body_sha: sha(&bytes),
        access_on_disk,
    });
    if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse::<usize>().ok()) {
        // Streamed in 64 KiB frames so large bodies never sit in memory.
        let chunks = futures_util::stream::iter((0..n).step_by(65536).map(move |start| {
            let end = (start + 65536).min(n);
            Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(
                (start..end).map(|i| (i % 251) as u8).collect::<Vec<u8>>(),
            )))
        }));
        let mut resp = Response::new(http_body_util::StreamBody::new(chunks).boxed());
        resp.headers_mut().insert("content-length", n.into());
        return resp;
    }
    let mut resp = Response::new(
        Full::new(Bytes::from_static(b"upstream ok"))
            .map_err(|e| match e {})
            .boxed(),
    );
    resp.headers_mut().insert("x-upstream", "yes".parse().unwrap());
    resp
}

// === the gateway ===

pub struct Gw {
    pub running: caregate::server::Running,
    pub config_path: PathBuf,
    pub audit_dir: PathBuf,
    pub work: tempfile::TempDir,
}

impl Gw {
    pub fn addr(&self) -> SocketAddr {
        self.running.addr
    }
}

/// The config for a gateway on loopback port 0, with `rest` appended (routes, orgs, limits).
pub fn config_text(pki: &TestPki, audit_dir: &Path, listener_extra: &str, rest: &str) -> String {
    let p = pki.path().display();
    format!(
        r#"
[listener]
bind = "127.0.0.1:0"
server_cert = "{p}/server.pem"
server_key = "{p}/server.key"
client_ca = ["{p}/ca.pem"]
crl = ["{p}/ca.crl"]
{listener_extra}

[admin]
bind = "127.0.0.1:0"

[audit]
dir = "{audit}"
durability = "flush"

{rest}
"#,
        audit = audit_dir.display()
    )
}

/// Organisations, an upstream and routes most tests share.
pub fn standard_rest(upstream: &Upstream) -> String {
    format!(
        r#"
[identity]
org_from = ["san_uri:urn:nhs:ods:", "subject:OU", "endpoint"]

[[endpoint]]
fqdn = "gpsystem.a81003.example.nhs.uk"
org = "A81003"
asid = "200000000103"

[[organisation]]
code = "A81001"
name = "Example Surgery"
groups = ["gp"]

[[organisation]]
code = "A81002"
name = "Other Surgery"
groups = ["gp"]

[[organisation]]
code = "A81003"
name = "Endpoint Surgery"
groups = ["gp"]

[[organisation]]
code = "RXC"
name = "East Sussex Healthcare NHS Trust"
groups = ["trust"]

[[organisation]]
code = "B99999"
name = "No Rights Practice"

[[upstream]]
name = "epr"
urls = ["{url}"]
connect_timeout = "1s"
response_timeout = "2s"

[[route]]
name = "epr-fhir"
path_prefix = "/fhir/"
upstream = "epr"
class = "epr"
  [[route.allow]]
  groups = ["gp"]
  methods = ["GET"]
  [[route.allow]]
  orgs = ["RXC"]

[[route]]
name = "files"
path_prefix = "/files/"
upstream = "epr"
class = "other"
  [[route.allow]]
  orgs = ["RXC", "A81001"]
"#,
        url = upstream.url()
    )
}

pub async fn start_gateway_with(pki: &TestPki, listener_extra: &str, rest: &str) -> Gw {
    let work = tempfile::tempdir().unwrap();
    let audit_dir = work.path().join("audit");
    let text = config_text(pki, &audit_dir, listener_extra, rest);
    let config_path = work.path().join("caregate.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = caregate::config::Config::load(&config_path).unwrap();
    let running = caregate::server::start(config).await.unwrap();
    Gw {
        running,
        config_path,
        audit_dir,
        work,
    }
}

pub async fn start_gateway(pki: &TestPki, upstream: &Upstream) -> Gw {
    start_gateway_with(pki, "", &standard_rest(upstream)).await
}

// === clients ===

pub fn client_config(pki: &TestPki, leaf: Option<&Leaf>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pki.ca.cert_der())).unwrap();
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut c = match leaf {
        Some(l) => b
            .with_client_auth_cert(
                vec![CertificateDer::from(l.cert_der.clone())],
                PrivateKeyDer::from_pem_slice(l.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to the gateway, or the handshake error.
pub async fn connect(gw: SocketAddr, pki: &TestPki, leaf: Option<&Leaf>, alpn: &[&[u8]]) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(gw).await?;
    let connector = tokio_rustls::TlsConnector::from(client_config(pki, leaf, alpn));
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    // In TLS 1.3 the server's verdict on the client certificate arrives after the client's
    // handshake completes: a read surfaces it (a refused cert reads as an alert/EOF).
    tls.flush().await?;
    Ok(tls)
}

/// True when the gateway refuses this certificate at the handshake.
pub async fn handshake_refused(gw: SocketAddr, pki: &TestPki, leaf: Option<&Leaf>) -> bool {
    let Ok(mut tls) = connect(gw, pki, leaf, &[b"http/1.1"]).await else {
        return true;
    };
    // Send a request; a refused client sees an alert or EOF instead of a response.
    if tls
        .write_all(b"GET /fhir/metadata HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .is_err()
    {
        return true;
    }
    let mut buf = [0u8; 64];
    !matches!(tls.read(&mut buf).await, Ok(n) if n > 0)
}

pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One request over a fresh connection (HTTP/1.1, or HTTP/2 with `h2`).
pub async fn send(gw: SocketAddr, pki: &TestPki, leaf: &Leaf, h2: bool, req: Request<Full<Bytes>>) -> Answer {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let tls = connect(gw, pki, Some(leaf), alpn).await.expect("handshake");
    let io = TokioIo::new(tls);
    let resp = if h2 {
        let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    };
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(format!("https://localhost{path}"))
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Sends raw bytes on a fresh HTTP/1.1 connection and reads until the gateway closes or the
/// first response is complete enough to read its status line.
pub async fn raw(gw: SocketAddr, pki: &TestPki, leaf: &Leaf, bytes: &[u8]) -> String {
    let mut tls = connect(gw, pki, Some(leaf), &[b"http/1.1"]).await.unwrap();
    tls.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Every audit record of the trail, parsed.
pub fn audit_records(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// The first `.jsonl` file of a trail (for tampering tests).
pub fn first_trail_file(dir: &Path) -> PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files.remove(0)
}
