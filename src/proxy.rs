//! The pipeline for one request, phase by phase, as straight-line code:
//!
//! ```text
//! admit (strictness → identity → path → route → clinical → policy → checks → limits)
//!   → access record durable (→ Permit) → forward → stream back → complete record
//! ```
//!
//! `admit` returns `Result<Admitted, Rejection>`; either way the access record is written
//! before anything is answered, and only a [`Permit`] (admitted and recorded) can forward.

use crate::audit::record::{self, Event};
use crate::audit::AuditLog;
use crate::body::{Completing, Completion, Counted, Tally};
use crate::config::Class;
use crate::forward::{self, BoxError, ForwardError};
use crate::identity::ClientIdentity;
use crate::limit::Grant;
use crate::policy::{self, Decision};
use crate::reject::Rejection;
use crate::route::{self, Route};
use crate::state::State;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, Version};
use http_body::Body as _;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// What every request shares: the reloadable state, the audit trail, drain status.
pub struct Gateway {
    pub state: ArcSwap<State>,
    pub audit: AuditLog,
    pub draining: AtomicBool,
    pub metrics: crate::metrics::Metrics,
    /// The state's generation, for connections that re-check their certificate on reload.
    pub generation: tokio::sync::watch::Sender<u64>,
    ids: RequestIds,
}

/// One client connection: who it is (verified once, at the handshake) and where from.
pub struct Conn {
    pub peer: SocketAddr,
    /// The peer's address as records write it, made once per connection.
    pub ip: Arc<str>,
    pub identity: Arc<ClientIdentity>,
    /// HTTP/1 only: the framing verdicts of the request heads read on this connection.
    pub framing: Option<Arc<crate::h1guard::Verdicts>>,
    /// `X-Forwarded-For` and `Forwarded` for this client.
    pub forwarding: forward::Forwarding,
}

impl Conn {
    pub fn new(
        peer: SocketAddr,
        identity: Arc<ClientIdentity>,
        framing: Option<Arc<crate::h1guard::Verdicts>>,
    ) -> Conn {
        let ip: Arc<str> = peer.ip().to_string().into();
        Conn {
            peer,
            forwarding: forward::Forwarding::new(&ip),
            ip,
            identity,
            framing,
        }
    }
}

impl Gateway {
    pub fn new(state: State, audit: AuditLog) -> Gateway {
        Gateway {
            state: ArcSwap::from_pointee(state),
            audit,
            draining: AtomicBool::new(false),
            metrics: crate::metrics::Metrics::default(),
            generation: tokio::sync::watch::Sender::new(0),
            ids: RequestIds::new(),
        }
    }
}

/// A request that passed policy and limits, not yet recorded.
struct Admitted {
    route: Arc<Route>,
    grant: Grant,
    /// Index of the allow rule that matched.
    rule: usize,
    /// The normalised path (and original query) to forward: what was matched.
    path_and_query: String,
}

/// Admitted and recorded: the only way to open an upstream request.
pub struct Permit {
    _private: (),
}

#[cfg(test)]
impl Permit {
    /// For tests of forwarding alone.
    pub(crate) fn for_tests() -> Permit {
        Permit { _private: () }
    }
}

/// The access record being built as the phases learn things.
fn access_record(
    conn: &Conn,
    req: &http::request::Parts,
    request_id: &Arc<str>,
    host: Option<&Arc<str>>,
) -> record::Access {
    let who = &conn.identity;
    record::Access {
        request_id: request_id.clone(),
        client: record::Client {
            org: who.org.clone(),
            org_name: None,
            subject: Some(who.subject.clone()),
            fingerprint: Some(who.fingerprint.clone()),
            serial: Some(who.serial.clone()),
            ip: conn.ip.clone(),
            port: conn.peer.port(),
        },
        request: record::Request {
            method: method_word(&req.method),
            host: host.cloned(),
            path: req.uri.path().to_string(),
            query: req.uri.query().map(str::to_string),
            version: version_str(req.version).into(),
        },
        route: None,
        class: None,
        decision: "deny".into(),
        reason: "".into(),
        rule: None,
        clinical: Default::default(),
    }
}

pub async fn handle(
    gw: Arc<Gateway>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let started = Instant::now();
    let snap = gw.state.load_full();
    let (mut parts, body) = req.into_parts();
    let request_id = gw.ids.for_request(&parts.headers);
    let host = request_host(&parts);
    let mut access = access_record(&conn, &parts, &request_id, host.as_ref());

    let draining = gw.draining.load(Ordering::Relaxed);
    let admitted = admit(&snap, &conn, &parts, host.as_deref(), draining, &mut access);
    // Refusals on FHIR routes are OperationOutcomes; one that found no route (no_route, a
    // refused path, an unknown organisation) is one too when the request itself looks like FHIR.
    let fhir = match access.class.as_deref() {
        Some(class) => class == Class::Epr.as_str(),
        None => crate::clinical::looks_like_fhir(parts.uri.path(), &parts.headers),
    };
    match &admitted {
        Ok(a) => {
            access.decision = "allow".into();
            access.reason = "allowed".into();
            access.rule = a.route.rule_labels.get(a.rule).cloned();
        }
        Err(r) => access.reason = r.reason().into(),
    }
    let route_name = access.route.clone();
    let class_name = access.class.clone();
    let tally = Arc::new(Tally::default());
    let mut completion = Completion::new(gw.audit.clone(), request_id.clone(), started, tally.clone());
    gw.metrics.observe_start();

    // No answer of any kind before the access record is durable.
    let recorded = gw.audit.append_durable(Event::Access(Box::new(access))).await;
    let (admitted, permit) = match (admitted, recorded) {
        (Ok(a), Ok(_)) => (a, Permit { _private: () }),
        (Err(r), Ok(_)) => {
            return Ok(refuse(
                &gw,
                r,
                &request_id,
                fhir,
                completion,
                (route_name, class_name),
                started,
            ))
        }
        (_, Err(e)) => {
            tracing::error!(request_id = %request_id, error = %e, "audit record could not be made durable");
            // No access record, so no completion either: an orphan would only confuse auditors.
            completion.cancel();
            return Ok(refuse(
                &gw,
                Rejection::AuditUnavailable,
                &request_id,
                fhir,
                completion,
                (route_name, class_name),
                started,
            ));
        }
    };

    // === forward ===
    let Admitted {
        route,
        grant,
        path_and_query,
        ..
    } = admitted;
    let rid = forward::request_id_header(&request_id);
    forward::request_headers(
        &mut parts.headers,
        &conn.identity,
        &conn.forwarding,
        &rid,
        host.as_deref(),
    );
    if parts.headers.get(header::HOST).is_none() {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
        }
    }
    parts.uri = match path_and_query.parse() {
        Ok(u) => u,
        Err(_) => {
            return Ok(refuse(
                &gw,
                Rejection::BadRequest("the request target is not valid"),
                &request_id,
                fhir,
                completion,
                (route_name, class_name),
                started,
            ))
        }
    };
    let up_body = grant.shape(Counted::new(body, tally.clone())).boxed_unsync();
    let upstream = &snap.upstreams[route.upstream];
    let result = upstream.send(permit, parts, up_body).await;
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            let (rejection, outcome) = match e {
                ForwardError::Timeout => (Rejection::UpstreamTimeout, "timeout"),
                ForwardError::Unavailable if tally.client_error.load(Ordering::Relaxed) => {
                    (Rejection::UpstreamUnavailable, "client_aborted")
                }
                ForwardError::Unavailable => (Rejection::UpstreamUnavailable, "upstream_error"),
            };
            gw.metrics.upstream_error(&upstream.name);
            let resp = rejection.render(&request_id, fhir);
            completion.set_status(resp.status().as_u16());
            completion.finish(outcome);
            gw.metrics
                .observe_end(route_name, class_name, "allow", resp.status().as_u16(), started);
            let mut resp = resp.map(|b| b.map_err(|e| match e {}).boxed_unsync());
            resp.headers_mut().insert(forward::X_REQUEST_ID, rid);
            return Ok(resp);
        }
    };
    let (mut rparts, rbody) = resp.into_parts();
    forward::strip_hop_by_hop(&mut rparts.headers);
    rparts.headers.insert(forward::X_REQUEST_ID, rid);
    completion.set_status(rparts.status.as_u16());
    let status = rparts.status.as_u16();
    let m = gw.clone();
    completion.on_complete(move |c| {
        m.metrics.observe_bytes(c.bytes_in, c.bytes_out);
        m.metrics.observe_end(route_name, class_name, "allow", status, started);
    });
    let body = grant.shape(rbody);
    completion.hold(grant);
    Ok(Response::from_parts(
        rparts,
        Completing::new(body, completion).boxed_unsync(),
    ))
}

/// Renders a refusal and completes its record.
fn refuse(
    gw: &Gateway,
    r: Rejection,
    request_id: &str,
    fhir: bool,
    mut completion: Completion,
    (route, class): (Option<Arc<str>>, Option<record::Word>),
    started: Instant,
) -> Response<RespBody> {
    if let Rejection::RateLimited(_) = r {
        gw.metrics.rate_limited();
    }
    let resp = r.render(request_id, fhir);
    completion.add_bytes_out(resp.body().size_hint().exact().unwrap_or(0));
    completion.set_status(resp.status().as_u16());
    completion.finish("ok");
    gw.metrics
        .observe_end(route, class, "deny", resp.status().as_u16(), started);
    let mut resp = resp.map(|b| b.map_err(|e| match e {}).boxed_unsync());
    resp.headers_mut()
        .insert(forward::X_REQUEST_ID, forward::request_id_header(request_id));
    resp
}

/// The phases before anything is recorded, in SPEC order; the first refusal ends it. Fills in
/// the access record as it learns the route, class and clinical facts.
fn admit(
    snap: &State,
    conn: &Conn,
    parts: &http::request::Parts,
    host: Option<&str>,
    draining: bool,
    access: &mut record::Access,
) -> Result<Admitted, Rejection> {
    // Every HTTP/1 request takes its framing verdict, refused or not, to stay in step.
    if let Some(why) = conn.framing.as_ref().and_then(|v| v.next()) {
        return Err(Rejection::BadRequest(why));
    }
    if draining {
        return Err(Rejection::ShuttingDown);
    }
    check_framing(parts)?;

    // Identity: an organisation the gateway knows, or nothing goes further.
    let org = conn
        .identity
        .org
        .as_deref()
        .and_then(|code| snap.directory.organisation(code));
    if let Some(o) = org {
        access.client.org_name = Some(o.name.clone());
    }
    let Some(org) = org else {
        return Err(Rejection::UnknownOrg);
    };

    // Path: Spine Secure Proxy-style `/https://<provider>/…` addressing first, then the one
    // normalisation whose result is both matched and forwarded.
    let raw = parts.uri.path();
    let (provider, raw) = split_provider(raw)?;
    let path = crate::path::normalise(raw).map_err(|_| Rejection::BadRequest("the request path is not allowed"))?;
    // Into the raw path's buffer, which is seldom shorter: usually no allocation.
    access.request.path.clone_from(&path);
    let route = snap.routes.find_for(host, provider, &path).ok_or(Rejection::NoRoute)?;
    access.route = Some(route.name.clone());
    access.class = Some(route.class.as_str().into());

    let query = parts.uri.query();
    let facts = crate::clinical::parse(&parts.method, &path, query, &parts.headers);
    access.clinical = facts.clinical.clone();
    let cfg = &route.config;

    // A Spine-style route needs the Spine headers whatever its rules say: their absence is a
    // malformed request (400), not a rule that failed to match.
    if cfg.require_ssp_headers
        && ["ssp-traceid", "ssp-from", "ssp-to", "ssp-interactionid"]
            .iter()
            .any(|h| parts.headers.get(*h).is_none_or(|v| v.is_empty()))
    {
        return Err(Rejection::BadRequest(
            "Ssp-TraceID, Ssp-From, Ssp-To and Ssp-InteractionID are required",
        ));
    }

    let rule = match policy::decide(route, Some(org), &parts.method, &facts) {
        Decision::Allow { rule } => rule,
        Decision::UnknownOrg => return Err(Rejection::UnknownOrg),
        Decision::NotAllowed => return Err(Rejection::NotAllowed),
    };
    access.rule = route.rule_labels.get(rule).cloned();

    // Clinical checks of an allowed request.
    if cfg.check_nhs_number && facts.invalid_nhs_number.is_some() {
        return Err(Rejection::BadRequest(
            "the NHS number in the request is not valid: its check digit (modulus 11) is wrong",
        ));
    }
    if let (Some(from), Some(asid)) = (parts.headers.get("ssp-from"), &conn.identity.asid) {
        if from.as_bytes() != asid.as_bytes() {
            return Err(Rejection::IdentityMismatch(
                "Ssp-From does not match the ASID registered for this certificate",
            ));
        }
    }
    // The token only ever narrows: it is compared with the certificate, never trusted alone.
    if cfg.check_token_org {
        match facts.clinical.token_org.as_deref() {
            Some(code) if code == org.code => {}
            Some(_) => {
                return Err(Rejection::IdentityMismatch(
                    "the requesting organisation in the token is not the certificate's organisation",
                ))
            }
            None => return Err(Rejection::IdentityMismatch(
                "this route needs a GP Connect token whose requesting_organization is the certificate's organisation",
            )),
        }
    }

    // Limits last, so refused requests use no quota.
    let grant = snap
        .limits
        .check(&org.code, route.class)
        .map_err(Rejection::RateLimited)?;

    let mut path_and_query = path;
    if let Some(q) = query {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    Ok(Admitted {
        route: route.clone(),
        grant,
        rule,
        path_and_query,
    })
}

/// HTTP/1 and HTTP/2 framing that hyper lets through but a boundary proxy must not: a
/// request its upstream might read differently is refused, never forwarded.
fn check_framing(parts: &http::request::Parts) -> Result<(), Rejection> {
    let h = &parts.headers;
    let cl = h.get_all(header::CONTENT_LENGTH).iter().count();
    if cl > 1 {
        return Err(Rejection::BadRequest("the request has more than one Content-Length"));
    }
    match parts.version {
        Version::HTTP_2 | Version::HTTP_3 => {
            for name in [
                "transfer-encoding",
                "connection",
                "keep-alive",
                "proxy-connection",
                "upgrade",
            ] {
                if h.contains_key(name) {
                    return Err(Rejection::BadRequest(
                        "the request carries a connection-specific header",
                    ));
                }
            }
        }
        _ => {
            if cl == 1 && h.contains_key(header::TRANSFER_ENCODING) {
                return Err(Rejection::BadRequest(
                    "the request has both Content-Length and Transfer-Encoding",
                ));
            }
            if h.contains_key(header::UPGRADE) {
                return Err(Rejection::BadRequest("protocol upgrades are not allowed here"));
            }
        }
    }
    if parts.method == http::Method::CONNECT {
        return Err(Rejection::BadRequest("CONNECT is not allowed"));
    }
    // An absolute-form target must agree with Host, or the two could route differently.
    if let (Some(a), Some(hv)) = (parts.uri.authority(), h.get(header::HOST)) {
        if !a.as_str().as_bytes().eq_ignore_ascii_case(hv.as_bytes()) {
            return Err(Rejection::BadRequest("the request target and Host disagree"));
        }
    }
    Ok(())
}

/// `/https://provider.example.nhs.uk/fhir/…` → (Some(provider), `/fhir/…`).
fn split_provider(raw: &str) -> Result<(Option<&str>, &str), Rejection> {
    let rest = match raw.strip_prefix("/https://").or_else(|| raw.strip_prefix("/http://")) {
        Some(r) => r,
        None => return Ok((None, raw)),
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err(Rejection::BadRequest("the provider address in the path is not valid"));
    }
    Ok((Some(host), path))
}

/// The request's host: the URI's authority (HTTP/2, absolute-form) or the Host header.
fn request_host(parts: &http::request::Parts) -> Option<Arc<str>> {
    let raw = match parts.uri.authority() {
        Some(a) => a.as_str(),
        None => parts.headers.get(header::HOST)?.to_str().ok()?,
    };
    let host = route::host_of(raw);
    // One allocation for a host already in lower case, as nearly every client sends it.
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        host.to_ascii_lowercase().into()
    } else {
        host.into()
    })
}

/// The method as records write it: the standard ones without an allocation.
fn method_word(m: &http::Method) -> record::Word {
    const STANDARD: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    match STANDARD.iter().find(|s| **s == m.as_str()) {
        Some(s) => (*s).into(),
        None => m.as_str().to_owned().into(),
    }
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "other",
    }
}

// === request ids ===

/// Request ids: the client's own when it is sane (so a GP system can correlate), else a new
/// one from a random per-process prefix and a counter: unique without a syscall per request.
struct RequestIds {
    prefix: String,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        let mut seed = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
        RequestIds {
            prefix: crate::hex(&seed),
            counter: AtomicU64::new(1),
        }
    }

    fn for_request(&self, headers: &http::HeaderMap) -> Arc<str> {
        if let Some(v) = headers.get(forward::X_REQUEST_ID) {
            let b = v.as_bytes();
            if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c)) {
                // Checked ASCII above.
                return String::from_utf8_lossy(b).into();
            }
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // `{prefix}-{n:08x}`, without the formatting machinery and made on the stack: the one
        // allocation is the shared id itself (once per request).
        let width = (16 - n.leading_zeros() as usize / 4).max(8);
        let (at, len) = (self.prefix.len() + 1, self.prefix.len() + 1 + width);
        let mut id = [0u8; 64];
        if len > id.len() {
            // Not with the prefix `new` makes; kept correct all the same.
            return format!("{}-{n:0width$x}", self.prefix).into();
        }
        id[..at - 1].copy_from_slice(self.prefix.as_bytes());
        id[at - 1] = b'-';
        for (i, d) in id[at..len].iter_mut().rev().enumerate() {
            *d = b"0123456789abcdef"[(n >> (4 * i)) as usize & 15];
        }
        String::from_utf8_lossy(&id[..len]).into()
    }
}

/// What `caregate explain` reports: the access record the request would get, and the refusal
/// if there would be one. Runs the same `admit` as live traffic, against a fresh state.
pub fn explain(snap: &State, identity: ClientIdentity, req: Request<()>) -> (record::Access, Option<Rejection>) {
    let peer = SocketAddr::from(([127, 0, 0, 1], 0));
    let conn = Conn::new(peer, Arc::new(identity), None);
    let (parts, ()) = req.into_parts();
    let host = request_host(&parts);
    let mut access = access_record(&conn, &parts, &"explain".into(), host.as_ref());
    match admit(snap, &conn, &parts, host.as_deref(), false, &mut access) {
        Ok(a) => {
            access.decision = "allow".into();
            access.reason = "allowed".into();
            access.rule = a.route.rule_labels.get(a.rule).cloned();
            (access, None)
        }
        Err(r) => {
            access.reason = r.reason().into();
            (access, Some(r))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_host_is_the_authority_or_host_header_in_lower_case_without_port() {
        let host = |req: Request<()>| request_host(&req.into_parts().0).map(|h| h.to_string());
        let with_header = |v: &'static str| Request::builder().uri("/x").header("host", v).body(()).unwrap();
        assert_eq!(
            host(with_header("epr.example.nhs.uk")).as_deref(),
            Some("epr.example.nhs.uk")
        );
        assert_eq!(
            host(with_header("EPR.Example.NHS.uk:443")).as_deref(),
            Some("epr.example.nhs.uk")
        );
        assert_eq!(host(with_header("[::1]:8443")).as_deref(), Some("::1"));
        let absolute = Request::builder().uri("https://PACS.example/x").body(()).unwrap();
        assert_eq!(host(absolute).as_deref(), Some("pacs.example"));
        assert_eq!(host(Request::builder().uri("/x").body(()).unwrap()), None);
    }

    #[test]
    fn generated_request_ids_are_prefix_dash_counter_in_hex() {
        let ids = RequestIds::new();
        for n in [1u64, 0xabc, 0xffff_ffff, 0x1_0000_0000, u64::MAX] {
            ids.counter.store(n, Ordering::Relaxed);
            let want = format!("{}-{n:08x}", ids.prefix);
            assert_eq!(&*ids.for_request(&http::HeaderMap::new()), want);
        }
        // A sane client id is kept, so that a GP system can correlate.
        let mut h = http::HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("gp-42"));
        assert_eq!(&*ids.for_request(&h), "gp-42");
    }

    /// HTTP/2 sends a sensitive value as a literal never indexed: each id is new, and indexed
    /// ids would only fill the HPACK table that every response's lookup then walks.
    #[test]
    fn request_id_headers_are_never_indexed() {
        let id = RequestIds::new().for_request(&http::HeaderMap::new());
        let v = forward::request_id_header(&id);
        assert_eq!(v.to_str().unwrap(), &*id);
        assert!(v.is_sensitive());
    }
}
