//! The recording upstream: a plain-HTTP origin on loopback port 0 that keeps what it received.

use super::trail::audit_records;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body_len: usize,
    pub body_sha: String,
    /// The body arrived whole (false when it failed part-way, and for `/echo`, which streams
    /// it back unread).
    pub body_complete: bool,
    /// The request's trailers, if it had any.
    pub trailers: Option<http::HeaderMap>,
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
    pub connections: Arc<AtomicUsize>,
    /// Request heads received (a request is in `seen` only once its body is over).
    pub heads: Arc<AtomicUsize>,
}

impl Upstream {
    /// An upstream that records what it got. Paths (after an optional `/files`): `/slow…` never
    /// answers; `/bytes/<n>` answers n [`pattern`] bytes; `/echo` echoes the body; anything
    /// else `200 upstream ok` with `x-upstream: yes`.
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = Upstream {
            addr: Some(listener.local_addr().unwrap()),
            ..Default::default()
        };
        let (seen, audit_dir, connections) = (up.seen.clone(), up.audit_dir.clone(), up.connections.clone());
        let heads = up.heads.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                connections.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                let audit_dir = audit_dir.clone();
                let heads = heads.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        heads.fetch_add(1, Ordering::SeqCst);
                        let seen = seen.clone();
                        let dir = audit_dir.lock().unwrap().clone();
                        async move { Ok::<_, Infallible>(answer(req, seen, dir).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        up
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.unwrap())
    }

    /// Request heads the upstream has received.
    pub fn heads(&self) -> usize {
        self.heads.load(Ordering::SeqCst)
    }

    /// Connections the upstream has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Has the upstream check, for each request, that its `access` record is already in this
    /// trail (`Seen::access_on_disk`).
    pub fn check_audit_in(&self, dir: PathBuf) {
        *self.audit_dir.lock().unwrap() = Some(dir);
    }
}

/// An address nothing listens on: bound, its port learnt, closed.
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn sha(b: &[u8]) -> String {
    caregate::hex(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
}

/// Deterministic bytes for large-body tests: byte i is i % 251.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// SHA-256 of [`pattern`]`(n)` (the upstream's `/bytes/<n>` body), made in blocks.
pub fn pattern_sha(n: usize) -> String {
    let block = pattern(251 * 4096);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut left = n;
    while left > 0 {
        let k = left.min(block.len());
        ctx.update(&block[..k]);
        left -= k;
    }
    caregate::hex(ctx.finish().as_ref())
}

async fn answer(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    audit_dir: Option<PathBuf>,
) -> Response<BoxBody<Bytes, std::io::Error>> {
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
    let record = |body_len, body_sha, trailers, body_complete| Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body_len,
        body_sha,
        body_complete,
        trailers,
        access_on_disk,
    };
    if path == "/echo" {
        seen.lock().unwrap().push(record(0, String::new(), None, false));
        return Response::new(body.map_err(std::io::Error::other).boxed());
    }
    let (bytes, trailers, whole) = match body.collect().await {
        Ok(c) => {
            let trailers = c.trailers().cloned();
            (c.to_bytes(), trailers, true)
        }
        Err(_) => (Bytes::new(), None, false),
    };
    seen.lock()
        .unwrap()
        .push(record(bytes.len(), sha(&bytes), trailers, whole));
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
