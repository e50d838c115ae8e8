//! Upstreams: keep-alive connections per `[[upstream]]`, kept by each worker thread, round robin
//! over its origins with fail-over on connect errors, header hygiene both ways, and bodies
//! streamed as they come.
//!
//! The pool is ours rather than hyper-util's general client: a worker's connections are only
//! ever used by that worker, so its pool needs no waiters, no background tasks and no
//! connection racing, only a stack of idle senders. A connection goes back on the stack when
//! its response body has been read to the end; one the upstream closed while idle is found
//! out by hyper, which hands the unsent request back to try the next.

use crate::config::{self, KeyError};
use crate::identity::ClientIdentity;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower_service::Service as _;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Request bodies on their way upstream.
pub type UpBody = UnsyncBoxBody<Bytes, BoxError>;

/// An idle connection older than this is closed rather than used.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most idle connections a worker keeps to one origin.
const MAX_IDLE: usize = 1024;

/// Why forwarding failed.
#[derive(Debug)]
pub enum ForwardError {
    /// No origin accepted a connection (or the request failed before a response head).
    Unavailable,
    /// No response head within `response_timeout`.
    Timeout,
}

/// One `[[upstream]]`: its origins and the idle connections each worker keeps to them.
pub struct Upstream {
    pub name: String,
    /// Each origin as the connector takes it: scheme and authority.
    origins: Vec<Uri>,
    next: AtomicUsize,
    connector: HttpsConnector<HttpConnector>,
    /// By worker, then by origin. A connection's task runs on the worker that opened it, so a
    /// request sent on another worker's connection would wake that thread twice per exchange.
    idle: Vec<Vec<Arc<Idle>>>,
    response_timeout: Duration,
}

/// Idle connections to one origin, most recently used last.
#[derive(Default)]
struct Idle(Mutex<Vec<(SendRequest<UpBody>, Instant)>>);

impl Upstream {
    pub fn build(i: usize, u: &config::Upstream, workers: usize) -> Result<Upstream, KeyError> {
        let key = |k: &str| format!("upstream[{i}].{k}");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &u.ca {
            for cert in crate::tls::load_certs(&key("ca"), ca)? {
                roots.add(cert).map_err(|e| {
                    KeyError::new(
                        key("ca"),
                        format!("{} is not a usable CA certificate: {e}", ca.display()),
                    )
                })?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| KeyError::new(key("ca"), e.to_string()))?
            .with_root_certificates(roots);
        let tls = match (&u.client_cert, &u.client_key) {
            (Some(c), Some(k)) => builder
                .with_client_auth_cert(
                    crate::tls::load_certs(&key("client_cert"), c)?,
                    crate::tls::load_key(&key("client_key"), k)?,
                )
                .map_err(|e| KeyError::new(key("client_key"), format!("does not match client_cert: {e}")))?,
            _ => builder.with_no_client_auth(),
        };
        if u.ca.is_none() && u.urls.iter().any(|u| u.scheme_str() == Some("https")) {
            return Err(KeyError::new(
                key("ca"),
                "an https upstream needs the CA that signed its certificate",
            ));
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(u.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let origins: Vec<Uri> = u
            .urls
            .iter()
            .filter_map(|o| {
                let (scheme, authority) = (o.scheme()?.clone(), o.authority()?.clone());
                Uri::builder()
                    .scheme(scheme)
                    .authority(authority)
                    .path_and_query("/")
                    .build()
                    .ok()
            })
            .collect();
        let idle = (0..workers.max(1))
            .map(|_| origins.iter().map(|_| Arc::default()).collect())
            .collect();
        Ok(Upstream {
            name: u.name.clone(),
            origins,
            next: AtomicUsize::new(0),
            connector,
            idle,
            response_timeout: u.response_timeout,
        })
    }

    /// Sends the request to the next origin, failing over to the others on connect errors
    /// (a request is only handed to a connection once it is open, so fail-over never loses
    /// its body). `parts.uri` is the origin-form target.
    pub async fn send(
        &self,
        _permit: crate::proxy::Permit,
        parts: http::request::Parts,
        body: UpBody,
    ) -> Result<Response<UpstreamBody>, ForwardError> {
        let mut req = Request::from_parts(parts, body);
        *req.version_mut() = Version::HTTP_11;
        let deadline = tokio::time::Instant::now() + self.response_timeout;
        tokio::time::timeout_at(deadline, self.send_to_an_origin(req))
            .await
            .unwrap_or(Err(ForwardError::Timeout))
    }

    async fn send_to_an_origin(&self, mut req: Request<UpBody>) -> Result<Response<UpstreamBody>, ForwardError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let pools = &self.idle[crate::worker::index() % self.idle.len()];
        let n = self.origins.len();
        let mut k = 0;
        while k < n {
            let o = (start + k) % n;
            let (origin, pool) = (&self.origins[o], &pools[o]);
            let (mut sender, reused) = match pool.take().await {
                Some(sender) => (sender, true),
                // Boxed: the connect future holds a whole TLS stream, and kept inline it would
                // make every request's future (moved several times per request) kilobytes larger.
                None => match Box::pin(self.connect(origin)).await {
                    Ok(sender) => (sender, false),
                    Err(e) => {
                        tracing::warn!(upstream = %self.name, origin = %authority(origin), error = %e, "upstream connect failed");
                        k += 1;
                        continue;
                    }
                },
            };
            // The upstream may close an idle connection while a request is on its way to it;
            // the request is then lost, sent or not (RFC 9112 §9.3.1). One that has no body and
            // may be repeated (RFC 9110 §9.2.2) keeps its head to go again on another connection.
            let again = (reused && replayable(&req)).then(|| head_again(&req));
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let home = Home {
                        sender,
                        pool: pool.clone(),
                    };
                    return Ok(resp.map(|body| UpstreamBody { body, home: Some(home) }));
                }
                Err(mut e) => match e.take_message() {
                    // Never sent: an idle connection the upstream had just closed. Another one.
                    Some(unsent) if reused => req = unsent,
                    // Never sent on a new connection: the next origin.
                    Some(unsent) => {
                        tracing::warn!(upstream = %self.name, origin = %authority(origin), error = %e.error(), "upstream connection failed");
                        req = unsent;
                        k += 1;
                    }
                    None => match again {
                        Some(head) => {
                            tracing::debug!(upstream = %self.name, origin = %authority(origin), error = %e.error(), "a reused upstream connection failed; sending the request again");
                            req = head;
                        }
                        None => {
                            tracing::warn!(upstream = %self.name, origin = %authority(origin), error = %e.error(), "upstream request failed");
                            return Err(ForwardError::Unavailable);
                        }
                    },
                },
            }
        }
        Err(ForwardError::Unavailable)
    }

    /// A new connection to `origin`, its task running on this thread's runtime.
    async fn connect(&self, origin: &Uri) -> Result<SendRequest<UpBody>, BoxError> {
        let io = self.connector.clone().call(origin.clone()).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// A request that may be sent again as it is: an idempotent method, and no body.
fn replayable(req: &Request<UpBody>) -> bool {
    use http::Method;
    let idempotent = [Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT, Method::DELETE];
    idempotent.contains(req.method()) && http_body::Body::is_end_stream(req.body())
}

/// The same request, head only.
fn head_again(req: &Request<UpBody>) -> Request<UpBody> {
    use http_body_util::BodyExt as _;
    let empty = http_body_util::Empty::new().map_err(|never| match never {});
    let mut again = Request::new(empty.boxed_unsync());
    *again.method_mut() = req.method().clone();
    *again.uri_mut() = req.uri().clone();
    *again.version_mut() = req.version();
    *again.headers_mut() = req.headers().clone();
    again
}

fn authority(origin: &Uri) -> &str {
    origin.authority().map_or("", |a| a.as_str())
}

impl Idle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(SendRequest<UpBody>, Instant)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection that is still open, once it is ready (at once,
    /// unless the end of its last response is still on its way through its task).
    async fn take(&self) -> Option<SendRequest<UpBody>> {
        loop {
            let mut sender = {
                let mut idle = self.lock();
                let now = Instant::now();
                loop {
                    let (sender, since) = idle.pop()?;
                    if !sender.is_closed() && now.duration_since(since) < IDLE_TIMEOUT {
                        break sender;
                    }
                }
            };
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// Keeps `sender` for the next request, dropping connections idle too long.
    fn put(&self, sender: SendRequest<UpBody>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        if idle
            .first()
            .is_some_and(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT)
        {
            idle.retain(|(_, since)| now.duration_since(*since) < IDLE_TIMEOUT);
        }
        if idle.len() < MAX_IDLE {
            idle.push((sender, now));
        }
    }
}

/// Where a response's connection goes back to.
struct Home {
    sender: SendRequest<UpBody>,
    pool: Arc<Idle>,
}

/// A response body from an upstream. Read to its end, it gives its connection back to the
/// pool; dropped before, the connection closes with it (HTTP/1 cannot skip the rest).
pub struct UpstreamBody {
    body: Incoming,
    home: Option<Home>,
}

impl UpstreamBody {
    fn give_back(&mut self) {
        if let Some(home) = self.home.take() {
            home.pool.put(home.sender);
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.home = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if http_body::Body::is_end_stream(&self.body) {
            self.give_back();
        }
    }
}

// === header hygiene ===

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1). Names are
/// constants, not strings, so that the hot path does not parse them once per request.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_CLIENT_ORG: HeaderName = HeaderName::from_static("x-client-org");
const X_CLIENT_CERT_SUBJECT: HeaderName = HeaderName::from_static("x-client-cert-subject");
const X_CLIENT_CERT_FINGERPRINT: HeaderName = HeaderName::from_static("x-client-cert-fingerprint");
const CLIENT_CERT: HeaderName = HeaderName::from_static("client-cert");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The `X-Request-Id` header for `request_id`. Marked sensitive, which HTTP/2 encodes as a
/// literal never indexed: every request's id is new, so indexing it only churns the HPACK
/// table, and every later lookup of the name walks all the ids still in it.
pub fn request_id_header(request_id: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(request_id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    v.set_sensitive(true);
    v
}

/// Headers only caregate may set: any client-sent copy is removed first.
const IDENTITY_HEADERS: [HeaderName; 10] = [
    X_CLIENT_ORG,
    X_CLIENT_CERT_SUBJECT,
    X_CLIENT_CERT_FINGERPRINT,
    CLIENT_CERT,
    HeaderName::from_static("client-cert-chain"),
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    header::FORWARDED,
    X_REQUEST_ID,
    header::PROXY_AUTHORIZATION,
];

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, &[]);
}

/// Removes hop-by-hop headers, those the `Connection` header names, and `also`.
///
/// One look at the names present first: most messages carry none of these, and removing a
/// name that is not there still costs a hash and a probe (sixteen per request, before).
fn strip(headers: &mut HeaderMap, also: &[HeaderName]) {
    let doomed = |n: &HeaderName| HOP_BY_HOP.contains(n) || also.contains(n);
    if !headers.keys().any(doomed) {
        return;
    }
    let mut names: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    names.extend(headers.keys().filter(|n| doomed(n)).cloned());
    for n in names {
        headers.remove(n);
    }
}

/// The forwarding headers of one client connection, made when it opens: its address does not
/// change, and the `Host` its requests name seldom does, so most requests only clone them.
pub struct Forwarding {
    xff: Option<HeaderValue>,
    /// The RFC 7239 node: an IPv6 address is quoted and bracketed.
    node: String,
    without_host: Option<HeaderValue>,
    /// `Forwarded` for the last host seen, and that host.
    with_host: Mutex<Option<(Box<str>, HeaderValue)>>,
}

impl Forwarding {
    pub fn new(ip: &str) -> Forwarding {
        let node = if ip.contains(':') {
            format!("\"[{ip}]\"")
        } else {
            ip.to_string()
        };
        Forwarding {
            xff: HeaderValue::from_str(ip).ok(),
            without_host: HeaderValue::from_str(&format!("for={node};proto=https")).ok(),
            node,
            with_host: Mutex::new(None),
        }
    }

    fn forwarded(&self, host: Option<&str>) -> Option<HeaderValue> {
        let host = match host {
            Some(h) if h.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') => h,
            _ => return self.without_host.clone(),
        };
        let mut last = self.with_host.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((h, v)) = last.as_ref() {
            if **h == *host {
                return Some(v.clone());
            }
        }
        let v = HeaderValue::from_str(&format!("for={};host=\"{host}\";proto=https", self.node)).ok()?;
        *last = Some((host.into(), v.clone()));
        Some(v)
    }
}

/// Prepares request headers for the upstream: hygiene, then the identity headers of SPEC §4.
pub fn request_headers(
    headers: &mut HeaderMap,
    who: &ClientIdentity,
    via: &Forwarding,
    request_id: &HeaderValue,
    host: Option<&str>,
) {
    strip(headers, &IDENTITY_HEADERS);
    let prebuilt = [
        (X_CLIENT_ORG, who.headers.org.clone()),
        (X_CLIENT_CERT_SUBJECT, who.headers.subject.clone()),
        (X_CLIENT_CERT_FINGERPRINT, who.headers.fingerprint.clone()),
        (CLIENT_CERT, who.headers.client_cert.clone()),
        (X_FORWARDED_FOR, via.xff.clone()),
        (header::FORWARDED, via.forwarded(host)),
    ];
    for (name, value) in prebuilt {
        if let Some(v) = value {
            headers.insert(name, v);
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    headers.insert(X_REQUEST_ID, request_id.clone());
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::AtomicUsize;

    /// The names present, sorted (removal reorders a `HeaderMap`).
    fn names(headers: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn forwarded_follows_the_host_each_request_names() {
        let via = Forwarding::new("127.0.0.1");
        assert_eq!(via.xff.as_ref().unwrap(), "127.0.0.1");
        let f = |host| via.forwarded(host).unwrap();
        assert_eq!(f(Some("a.example")), "for=127.0.0.1;host=\"a.example\";proto=https");
        assert_eq!(f(Some("a.example")), "for=127.0.0.1;host=\"a.example\";proto=https");
        assert_eq!(f(Some("b.example")), "for=127.0.0.1;host=\"b.example\";proto=https");
        // A host that cannot go in a quoted string is left out, not escaped.
        assert_eq!(f(Some("a\"b")), "for=127.0.0.1;proto=https");
        assert_eq!(f(None), "for=127.0.0.1;proto=https");
        assert_eq!(f(Some("a.example")), "for=127.0.0.1;host=\"a.example\";proto=https");
        let v6 = Forwarding::new("::1");
        assert_eq!(v6.forwarded(None).unwrap(), "for=\"[::1]\";proto=https");
        assert_eq!(v6.xff.as_ref().unwrap(), "::1");
    }

    #[test]
    fn hygiene_removes_hop_by_hop_connection_named_and_identity_headers_only() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Trace-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-trace-hop", "1"),
            ("te", "trailers"),
            ("x-client-org", "RXC"),
            ("forwarded", "for=10.0.0.1"),
            ("accept", "application/fhir+json"),
        ] {
            h.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let mut response = h.clone();
        strip(&mut h, &IDENTITY_HEADERS);
        assert_eq!(names(&h), ["accept"]);
        // A response keeps what is only an identity header in a request.
        strip_hop_by_hop(&mut response);
        assert_eq!(names(&response), ["accept", "forwarded", "x-client-org"]);
        // Without any of them, nothing changes.
        let mut plain = HeaderMap::new();
        plain.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        plain.insert(header::HOST, HeaderValue::from_static("localhost"));
        strip(&mut plain, &IDENTITY_HEADERS);
        assert_eq!(names(&plain), ["accept", "host"]);
    }

    /// When a raw upstream closes a connection, without saying so (no `Connection: close`).
    #[derive(Clone, Copy, PartialEq)]
    enum Closes {
        Never,
        /// After each answer, as an upstream whose idle timeout just ran out would; then it
        /// tells `closed`.
        AfterEachAnswer,
        /// On reading a connection's second request, unanswered: the request was sent and lost.
        OnSecondRequest,
    }

    /// A plain HTTP/1.1 upstream on its own thread that answers `ok` to each request.
    struct RawUpstream {
        addr: std::net::SocketAddr,
        accepted: Arc<AtomicUsize>,
        closed: std::sync::mpsc::Receiver<()>,
    }

    fn raw_upstream(closes: Closes) -> RawUpstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (tx, closed) = std::sync::mpsc::channel();
        let count = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    for n in 1.. {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        if closes == Closes::OnSecondRequest && n == 2 {
                            return;
                        }
                        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                        if closes == Closes::AfterEachAnswer {
                            drop(conn);
                            let _ = tx.send(());
                            return;
                        }
                    }
                });
            }
        });
        RawUpstream { addr, accepted, closed }
    }

    fn upstream_to(addr: std::net::SocketAddr) -> Upstream {
        let cfg = config::Upstream {
            name: "test".into(),
            urls: vec![format!("http://{addr}").parse().unwrap()],
            ca: None,
            client_cert: None,
            client_key: None,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(20),
        };
        Upstream::build(0, &cfg, 1).unwrap()
    }

    async fn get(up: &Upstream) -> Result<Response<UpstreamBody>, ForwardError> {
        let body = http_body_util::Empty::new().map_err(|e| match e {}).boxed_unsync();
        send(up, http::Method::GET, body).await
    }

    async fn send(up: &Upstream, method: http::Method, body: UpBody) -> Result<Response<UpstreamBody>, ForwardError> {
        let (mut parts, ()) = Request::builder()
            .method(method)
            .uri("/ok")
            .header("host", "upstream")
            .body(())
            .unwrap()
            .into_parts();
        parts.uri = "/ok".parse().unwrap();
        up.send(crate::proxy::Permit::for_tests(), parts, body).await
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_connection_is_reused_once_its_response_was_read() {
        let raw = raw_upstream(Closes::Never);
        runtime().block_on(async {
            let up = upstream_to(raw.addr);
            for _ in 0..3 {
                let resp = get(&up).await.unwrap();
                assert_eq!(resp.status(), 200);
                assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
            }
        });
        assert_eq!(raw.accepted.load(Ordering::SeqCst), 1);
    }

    /// A response dropped before its end takes its connection with it: the next request
    /// opens another rather than reading the rest of someone else's body.
    #[test]
    fn a_connection_whose_response_was_not_read_is_not_reused() {
        let raw = raw_upstream(Closes::Never);
        runtime().block_on(async {
            let up = upstream_to(raw.addr);
            drop(get(&up).await.unwrap());
            let resp = get(&up).await.unwrap();
            assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        });
        assert_eq!(raw.accepted.load(Ordering::SeqCst), 2);
    }

    /// The keep-alive race: the upstream closes an idle connection just as a request is sent on
    /// it. Whether hyper hands the request back unsent or writes it first depends on whether the
    /// connection's task saw the close in time; either way this GET goes on a new connection.
    #[test]
    fn a_request_on_a_connection_the_upstream_just_closed_goes_on_a_new_one() {
        let raw = raw_upstream(Closes::AfterEachAnswer);
        runtime().block_on(async {
            let up = upstream_to(raw.addr);
            let resp = get(&up).await.unwrap();
            assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
            // Blocking on purpose: the connection's task must not run, and see the close,
            // before the next request is handed to it.
            raw.closed.recv_timeout(Duration::from_secs(20)).unwrap();
            let resp = get(&up).await.expect("the unsent request was retried");
            assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        });
        assert_eq!(raw.accepted.load(Ordering::SeqCst), 2);
    }

    /// The same race when the request had already gone: the upstream read it and closed. A
    /// bodyless GET goes again on a new connection; a request with a body is not sent twice.
    #[test]
    fn a_lost_request_goes_again_only_when_it_may_be_repeated() {
        let raw = raw_upstream(Closes::OnSecondRequest);
        runtime().block_on(async {
            let up = upstream_to(raw.addr);
            let resp = get(&up).await.unwrap();
            assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
            let resp = get(&up).await.expect("the lost GET was sent again");
            assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
            // The second connection is now reused, and loses the POST.
            let body = http_body_util::Full::new(Bytes::from_static(b"x"))
                .map_err(|e| match e {})
                .boxed_unsync();
            assert!(matches!(
                send(&up, http::Method::POST, body).await,
                Err(ForwardError::Unavailable)
            ));
        });
        assert_eq!(raw.accepted.load(Ordering::SeqCst), 2);
    }
}
