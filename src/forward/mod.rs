//! Upstreams: keep-alive connections per `[[upstream]]`, kept by each worker thread
//! ([`pool`]), round robin over its origins with fail-over on connect errors, the headers set
//! and removed both ways ([`headers`]), and bodies streamed as they come.
//!
//! Only a [`Permit`] opens an upstream request: admitted, and its access record durable.

pub mod headers;
mod pool;

use crate::admit::Permit;
use crate::config::{self, KeyError};
use crate::BoxError;
use bytes::Bytes;
use http::{Request, Response, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use pool::Idle;
pub use pool::UpstreamBody;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower_service::Service as _;

/// Request bodies on their way upstream.
pub type UpBody = UnsyncBoxBody<Bytes, BoxError>;

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
    /// What it was built from, to tell whether a reload changed it.
    source: (config::Upstream, [u8; 32]),
}

/// The upstreams of a config. Those of `previous` (the running state's) whose config and TLS
/// files did not change are kept as they are, with their open connections: a reload (a
/// nightly CRL refresh is one) does not start every pool cold.
pub fn upstreams(
    configs: &[config::Upstream],
    workers: usize,
    previous: &[Arc<Upstream>],
) -> Result<Vec<Arc<Upstream>>, KeyError> {
    let mut built = Vec::with_capacity(configs.len());
    for (i, u) in configs.iter().enumerate() {
        let up = Upstream::build(i, u, workers)?;
        let same = previous
            .iter()
            .find(|p| p.source == up.source && p.idle.len() == up.idle.len());
        built.push(match same {
            Some(p) => p.clone(),
            None => Arc::new(up),
        });
    }
    Ok(built)
}

impl Upstream {
    fn build(i: usize, u: &config::Upstream, workers: usize) -> Result<Upstream, KeyError> {
        let tls = crate::tls::upstream::build(i, u)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(u.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.config)
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
            source: (u.clone(), tls.files_sha256),
        })
    }

    /// Sends the request to the next origin, failing over to the others on connect errors
    /// (a request is only handed to a connection once it is open, so fail-over never loses
    /// its body). `parts.uri` is the origin-form target.
    pub async fn send(
        &self,
        _permit: Permit,
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
                Ok(resp) => return Ok(resp.map(|body| UpstreamBody::new(body, sender, pool.clone()))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::AtomicUsize;

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

    fn config_to(addr: std::net::SocketAddr) -> config::Upstream {
        config::Upstream {
            name: "test".into(),
            urls: vec![format!("http://{addr}").parse().unwrap()],
            ca: None,
            client_cert: None,
            client_key: None,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(20),
        }
    }

    fn upstream_to(addr: std::net::SocketAddr) -> Upstream {
        Upstream::build(0, &config_to(addr), 1).unwrap()
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
        // The pool under test, without the Permit that `send` takes: only `admit` and the
        // audit log together make one.
        up.send_to_an_origin(Request::from_parts(parts, body)).await
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

    /// A reload (a nightly CRL refresh is one) keeps an upstream whose config did not change,
    /// with its open connections; a changed one starts afresh.
    #[test]
    fn a_reload_keeps_an_unchanged_upstream_and_its_connections() {
        let raw = raw_upstream(Closes::Never);
        let cfg = config_to(raw.addr);
        runtime().block_on(async {
            let first = upstreams(std::slice::from_ref(&cfg), 1, &[]).unwrap();
            let resp = get(&first[0]).await.unwrap();
            assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");

            let reloaded = upstreams(std::slice::from_ref(&cfg), 1, &first).unwrap();
            assert!(Arc::ptr_eq(&first[0], &reloaded[0]));
            let resp = get(&reloaded[0]).await.unwrap();
            assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
            assert_eq!(raw.accepted.load(Ordering::SeqCst), 1, "the open connection was reused");

            let slower = config::Upstream {
                response_timeout: Duration::from_secs(30),
                ..cfg.clone()
            };
            let changed = upstreams(&[slower], 1, &reloaded).unwrap();
            assert!(!Arc::ptr_eq(&reloaded[0], &changed[0]));
            let resp = get(&changed[0]).await.unwrap();
            assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        });
        assert_eq!(raw.accepted.load(Ordering::SeqCst), 2);
    }
}
