//! Clients of a gateway over real TLS: a [`Remote`] knows where the gateway listens and which
//! CA to trust; each request presents a client certificate.
//!
//! ```ignore
//! let a = gw.get(&gp, "/fhir/Patient/9990000018").await;
//! let a = gw.post(&trust, "/files/upload", pattern(100_000)).await;
//! let a = gw.request(&gp).method("PUT").path("/files/echo").header("x-a", "b").body(b).h2().send().await;
//! ```

use bytes::Bytes;
use caregate::pki::Leaf;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::pki::TestPki;

pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;
pub type H1Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
pub type H2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;
/// The task driving a client connection: it ends when the gateway closes the connection.
pub type ConnTask = tokio::task::JoinHandle<Result<(), hyper::Error>>;

/// A gateway seen from outside: its TLS address, its admin listener, the CA its server
/// certificate chains to.
#[derive(Clone)]
pub struct Remote {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    ca: CertificateDer<'static>,
}

impl Remote {
    pub fn new(addr: SocketAddr, admin: Option<SocketAddr>, pki: &TestPki) -> Remote {
        Remote {
            addr,
            admin,
            ca: CertificateDer::from(pki.ca.cert_der()),
        }
    }

    /// A client config trusting the gateway's CA, presenting `leaf` (if any), offering `alpn`.
    pub fn client_config(&self, leaf: Option<&Leaf>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        self.client_config_for(rustls::DEFAULT_VERSIONS, leaf, alpn)
    }

    /// As [`Remote::client_config`], offering only these TLS versions. One config keeps one
    /// session cache: connections made with it resume the sessions of the earlier ones.
    pub fn client_config_for(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        leaf: Option<&Leaf>,
        alpn: &[&[u8]],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
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

    /// A TLS connection to the gateway, or the handshake error.
    pub async fn connect(&self, leaf: Option<&Leaf>, alpn: &[&[u8]]) -> std::io::Result<TlsStream> {
        let tcp = TcpStream::connect(self.addr).await?;
        let connector = tokio_rustls::TlsConnector::from(self.client_config(leaf, alpn));
        let mut tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        // In TLS 1.3 the server's verdict on the client certificate arrives after the client's
        // handshake completes: a read surfaces it (a refused cert reads as an alert/EOF).
        tls.flush().await?;
        Ok(tls)
    }

    /// One `GET /fhir/metadata` on a new connection made with `config` (which may resume a
    /// session of its earlier connections): how the handshake went (`None`: it failed), and
    /// everything the gateway sent back (nothing when it refused the connection).
    pub async fn exchange(&self, config: &Arc<rustls::ClientConfig>) -> (Option<rustls::HandshakeKind>, Vec<u8>) {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let Ok(mut tls) = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await else {
            return (None, Vec::new());
        };
        let kind = tls.get_ref().1.handshake_kind();
        // Reading the answer also reads any TLS 1.3 session tickets sent after the handshake.
        let mut answer = Vec::new();
        if tls
            .write_all(b"GET /fhir/metadata HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .is_ok()
        {
            let _ = tls.read_to_end(&mut answer).await;
        }
        (kind, answer)
    }

    /// True when the gateway refuses this certificate (or none) at the handshake.
    pub async fn handshake_refused(&self, leaf: Option<&Leaf>) -> bool {
        let Ok(mut tls) = self.connect(leaf, &[b"http/1.1"]).await else {
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

    /// A request presenting `leaf`, to be shaped and sent (GET `/` over HTTP/1.1 unless told).
    pub fn request<'a>(&'a self, leaf: &'a Leaf) -> RequestBuilder<'a> {
        RequestBuilder {
            remote: self,
            leaf,
            method: http::Method::GET,
            path: "/".into(),
            headers: Vec::new(),
            body: Bytes::new(),
            h2: false,
        }
    }

    /// `GET path` over a fresh HTTP/1.1 connection.
    pub async fn get(&self, leaf: &Leaf, path: &str) -> Answer {
        self.request(leaf).path(path).send().await
    }

    /// `POST path` with this body over a fresh HTTP/1.1 connection.
    pub async fn post(&self, leaf: &Leaf, path: &str, body: impl Into<Bytes>) -> Answer {
        self.request(leaf).method("POST").path(path).body(body).send().await
    }

    /// Sends raw bytes on a fresh HTTP/1.1 connection and reads until the gateway closes it
    /// (5 s at most).
    pub async fn raw(&self, leaf: &Leaf, bytes: &[u8]) -> String {
        let mut tls = self.connect(Some(leaf), &[b"http/1.1"]).await.unwrap();
        tls.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// As [`Remote::raw`], for a request the gateway must answer and then close the connection
    /// after: `None` if it was still open after 5 s.
    pub async fn raw_then_closed(&self, leaf: &Leaf, bytes: &[u8]) -> Option<String> {
        let mut tls = self.connect(Some(leaf), &[b"http/1.1"]).await.unwrap();
        tls.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
        read.is_ok().then(|| String::from_utf8_lossy(&out).into_owned())
    }

    /// An HTTP/1.1 keep-alive connection: the request sender and the task driving it.
    pub async fn h1(&self, leaf: &Leaf) -> (H1Sender, ConnTask) {
        let tls = self.connect(Some(leaf), &[b"http/1.1"]).await.expect("handshake");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        (sender, tokio::spawn(conn))
    }

    /// An HTTP/2 connection: the request sender and the task driving it.
    pub async fn h2(&self, leaf: &Leaf) -> (H2Sender, ConnTask) {
        let tls = self.connect(Some(leaf), &[b"h2"]).await.expect("handshake");
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
        (sender, tokio::spawn(conn))
    }

    /// `GET /files/bytes/<size>` over a fresh HTTP/1.1 connection: answered 200, its body not
    /// yet read.
    pub async fn download(&self, leaf: &Leaf, size: usize) -> Download {
        let (mut sender, conn) = self.h1(leaf).await;
        let resp = sender.send_request(get(&format!("/files/bytes/{size}"))).await.unwrap();
        assert_eq!(resp.status(), 200);
        let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        Download {
            sender,
            conn,
            request_id,
            body: resp.into_body(),
        }
    }
}

/// A request being shaped; `send` makes it on a fresh connection.
pub struct RequestBuilder<'a> {
    remote: &'a Remote,
    leaf: &'a Leaf,
    method: http::Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    h2: bool,
}

impl RequestBuilder<'_> {
    pub fn method(mut self, method: &str) -> Self {
        self.method = method.parse().unwrap();
        self
    }

    /// The request target: a path, sent as it is over HTTP/1.1 and as
    /// `https://localhost<path>` over HTTP/2; anything not starting with `/` goes as it is.
    pub fn path(mut self, path: &str) -> Self {
        self.path = path.to_string();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn headers<K: AsRef<str>, V: AsRef<str>>(mut self, headers: &[(K, V)]) -> Self {
        for (k, v) in headers {
            self.headers.push((k.as_ref().to_string(), v.as_ref().to_string()));
        }
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Over HTTP/2 (ALPN `h2`).
    pub fn h2(self) -> Self {
        self.http2(true)
    }

    /// Over HTTP/2 when `on`, else HTTP/1.1.
    pub fn http2(mut self, on: bool) -> Self {
        self.h2 = on;
        self
    }

    pub async fn send(self) -> Answer {
        let uri = match self.h2 && self.path.starts_with('/') {
            true => format!("https://localhost{}", self.path),
            false => self.path,
        };
        let mut b = Request::builder()
            .method(self.method)
            .uri(uri)
            .header("host", "localhost");
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        let req = b.body(Full::new(self.body)).unwrap();
        let alpn: &[&[u8]] = if self.h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let tls = self.remote.connect(Some(self.leaf), alpn).await.expect("handshake");
        let io = TokioIo::new(tls);
        let resp = if self.h2 {
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
}

/// A whole response.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The gateway's `x-request-id`.
    pub fn request_id(&self) -> &str {
        self.headers
            .get("x-request-id")
            .unwrap_or_else(|| panic!("no x-request-id in {:?}", self.headers))
            .to_str()
            .unwrap()
    }
}

/// `GET https://localhost<path>` with `host: localhost`, for a sender of [`Remote::h1`] or
/// [`Remote::h2`].
pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(format!("https://localhost{path}"))
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A download answered 200 whose body is still to be read (see [`Remote::download`]).
pub struct Download {
    pub sender: H1Sender,
    pub conn: ConnTask,
    pub request_id: String,
    pub body: Incoming,
}

/// Reads body frames into `hash` until at least `want` more bytes arrived or the body ended;
/// returns how many arrived. Nothing is kept but the hash.
pub async fn read_hashing(body: &mut Incoming, hash: &mut ring::digest::Context, want: u64) -> u64 {
    let mut got = 0;
    while got < want {
        match tokio::time::timeout(Duration::from_secs(60), body.frame())
            .await
            .expect("body stalled")
        {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    hash.update(&data);
                    got += data.len() as u64;
                }
            }
            Some(Err(e)) => panic!("the body failed after {got} bytes: {e}"),
            None => break,
        }
    }
    got
}
