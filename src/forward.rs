//! Upstreams: pooled keep-alive clients per `[[upstream]]`, round robin over its origins with
//! fail-over on connect errors, header hygiene both ways, and bodies streamed as they come.

use crate::config;
use crate::identity::ClientIdentity;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
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

type PooledClient = Client<HttpsConnector<HttpConnector>, SharedBody>;

/// One `[[upstream]]`: its origins and a pooled client per worker thread.
pub struct Upstream {
    pub name: String,
    origins: Vec<(http::uri::Scheme, http::uri::Authority)>,
    next: AtomicUsize,
    /// One per worker: a pooled connection's task runs on the runtime that opened it, so a
    /// request that used another worker's pool would wake that thread twice per exchange.
    clients: Vec<PooledClient>,
    response_timeout: Duration,
}

impl Upstream {
    pub fn build(i: usize, u: &config::Upstream, workers: usize) -> Result<Upstream, (String, String)> {
        let key = |k: &str| format!("upstream[{i}].{k}");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &u.ca {
            for cert in crate::tls::load_certs(&key("ca"), ca)? {
                roots.add(cert).map_err(|e| {
                    (
                        key("ca"),
                        format!("{} is not a usable CA certificate: {e}", ca.display()),
                    )
                })?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| (key("ca"), e.to_string()))?
            .with_root_certificates(roots);
        let tls = match (&u.client_cert, &u.client_key) {
            (Some(c), Some(k)) => builder
                .with_client_auth_cert(
                    crate::tls::load_certs(&key("client_cert"), c)?,
                    crate::tls::load_key(&key("client_key"), k)?,
                )
                .map_err(|e| (key("client_key"), format!("does not match client_cert: {e}")))?,
            _ => builder.with_no_client_auth(),
        };
        if u.ca.is_none() && u.urls.iter().any(|u| u.scheme_str() == Some("https")) {
            return Err((
                key("ca"),
                "an https upstream needs the CA that signed its certificate".into(),
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
        let clients = (0..workers.max(1))
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_max_idle_per_host(1024)
                    .set_host(false)
                    .build(connector.clone())
            })
            .collect();
        let origins = u
            .urls
            .iter()
            .filter_map(|o| Some((o.scheme()?.clone(), o.authority()?.clone())))
            .collect();
        Ok(Upstream {
            name: u.name.clone(),
            origins,
            next: AtomicUsize::new(0),
            clients,
            response_timeout: u.response_timeout,
        })
    }

    /// Sends the request to the next origin, failing over to the others on connect errors
    /// (the body is only handed on once an origin has taken it, so fail-over never loses it).
    pub async fn send(
        &self,
        _permit: crate::proxy::Permit,
        parts: http::request::Parts,
        body: UpBody,
    ) -> Result<Response<Incoming>, ForwardError> {
        let mut headers = parts.headers;
        let slot = Arc::new(Mutex::new(Some(body)));
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + self.response_timeout;
        let client = &self.clients[crate::worker::index() % self.clients.len()];
        for k in 0..self.origins.len() {
            let (scheme, authority) = &self.origins[(start + k) % self.origins.len()];
            let mut uri = Uri::builder().scheme(scheme.clone()).authority(authority.clone());
            if let Some(pq) = parts.uri.path_and_query() {
                uri = uri.path_and_query(pq.clone());
            }
            let Ok(uri) = uri.build() else {
                return Err(ForwardError::Unavailable);
            };
            let mut req = Request::new(SharedBody {
                slot: slot.clone(),
                body: None,
            });
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = uri;
            *req.version_mut() = Version::HTTP_11;
            // Only a fail-over needs the headers again: the last attempt takes them.
            let last = k + 1 == self.origins.len();
            *req.headers_mut() = if last {
                std::mem::take(&mut headers)
            } else {
                headers.clone()
            };
            match tokio::time::timeout_at(deadline, client.request(req)).await {
                Err(_) => return Err(ForwardError::Timeout),
                Ok(Ok(resp)) => return Ok(resp),
                Ok(Err(e)) if e.is_connect() => {
                    tracing::warn!(upstream = %self.name, origin = %authority, error = %e, "upstream connect failed");
                    // Try the next origin only if this attempt never took the body.
                    let untouched = slot.lock().map(|s| s.is_some()).unwrap_or(false);
                    if !untouched {
                        return Err(ForwardError::Unavailable);
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(upstream = %self.name, origin = %authority, error = %e, "upstream request failed");
                    return Err(ForwardError::Unavailable);
                }
            }
        }
        Err(ForwardError::Unavailable)
    }
}

pin_project_lite::pin_project! {
    /// A request body that stays in a shared slot until an attempt first polls it.
    pub struct SharedBody {
        slot: Arc<Mutex<Option<UpBody>>>,
        body: Option<UpBody>,
    }
}

impl http_body::Body for SharedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if this.body.is_none() {
            *this.body = this.slot.lock().ok().and_then(|mut s| s.take());
        }
        match this.body.as_mut() {
            Some(b) => std::pin::Pin::new(b).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Some(b) => b.is_end_stream(),
            None => self
                .slot
                .lock()
                .map(|s| s.as_ref().is_none_or(|b| b.is_end_stream()))
                .unwrap_or(true),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.body {
            Some(b) => b.size_hint(),
            None => self
                .slot
                .lock()
                .ok()
                .and_then(|s| s.as_ref().map(|b| b.size_hint()))
                .unwrap_or_default(),
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
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
}

/// Prepares request headers for the upstream: hygiene, then the identity headers of SPEC §4.
pub fn request_headers(
    headers: &mut HeaderMap,
    who: &ClientIdentity,
    ip: &str,
    request_id: &HeaderValue,
    host: Option<&str>,
) {
    strip_hop_by_hop(headers);
    for h in IDENTITY_HEADERS {
        headers.remove(h);
    }
    let set = |headers: &mut HeaderMap, name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    let prebuilt = [
        (X_CLIENT_ORG, &who.headers.org),
        (X_CLIENT_CERT_SUBJECT, &who.headers.subject),
        (X_CLIENT_CERT_FINGERPRINT, &who.headers.fingerprint),
        (CLIENT_CERT, &who.headers.client_cert),
    ];
    for (name, value) in prebuilt {
        if let Some(v) = value {
            headers.insert(name, v.clone());
        }
    }
    set(headers, X_FORWARDED_FOR, ip);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    // RFC 7239: an IPv6 address is quoted and bracketed.
    let for_ = if ip.contains(':') {
        format!("\"[{ip}]\"")
    } else {
        ip.to_string()
    };
    let forwarded = match host {
        Some(h) if h.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') => {
            format!("for={for_};host=\"{h}\";proto=https")
        }
        _ => format!("for={for_};proto=https"),
    };
    set(headers, header::FORWARDED, &forwarded);
    headers.insert(X_REQUEST_ID, request_id.clone());
}
