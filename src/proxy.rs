//! One request, start to end, as straight-line code:
//!
//! ```text
//! admit → access record durable (→ Permit) → forward → stream back → complete record
//! ```
//!
//! [`handle`] takes the state's snapshot, admits, records and renders: every answer, refusal or
//! not, goes through it once, after the access record is durable. [`forward`] is the part that
//! can fail after admission; it returns `Result<_, Rejection>` and leaves rendering to `handle`.

use crate::admit::body::{Bounds, RequestBody};
use crate::admit::{self, Admitted, Inbound, Permit};
use crate::audit::record::Event;
use crate::audit::refusals::{Budget, Requester};
use crate::body::{ClientFault, Completing, Completion, Counted, Delivery, Tally};
use crate::config::Class;
use crate::forward::headers::{self, Forwarding};
use crate::forward::{ForwardError, UpstreamBody};
use crate::framing::h1::Verdicts;
use crate::gateway::Gateway;
use crate::identity::ClientIdentity;
use crate::limit::Grant;
use crate::reject::Rejection;
use crate::state::State;
use crate::BoxError;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

pub type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// One client connection: who it is (verified once, at the handshake) and where from.
pub struct Conn {
    pub peer: SocketAddr,
    /// The peer's address as records write it, made once per connection.
    pub ip: Arc<str>,
    pub identity: Arc<ClientIdentity>,
    /// HTTP/1 only: the framing verdicts of the request heads read on this connection.
    pub framing: Option<Arc<Verdicts>>,
    /// `X-Forwarded-For` and `Forwarded` for this client.
    pub forwarding: Forwarding,
    /// The connection's flushes: each `complete` record waits for its response's last byte.
    pub delivery: Arc<Delivery>,
}

impl Conn {
    pub fn new(
        peer: SocketAddr,
        identity: Arc<ClientIdentity>,
        framing: Option<Arc<Verdicts>>,
        delivery: Arc<Delivery>,
    ) -> Conn {
        let ip: Arc<str> = peer.ip().to_string().into();
        Conn {
            peer,
            forwarding: Forwarding::new(&ip),
            ip,
            identity,
            framing,
            delivery,
        }
    }
}

pub async fn handle(
    gw: Arc<Gateway>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let started = Instant::now();
    let snap = gw.state.load_full();
    let (parts, body) = req.into_parts();
    let request_id = crate::gateway::request_id();
    let host = admit::request_host(&parts);
    let who = &conn.identity;
    let mut access = admit::access_record(who, &conn.ip, conn.peer.port(), &parts, &request_id, host.as_ref());
    access.client_request_id = crate::gateway::client_request_id(&parts.headers);
    let inbound = Inbound {
        parts: &parts,
        host: host.as_deref(),
        identity: who,
        framing: conn.framing.as_deref(),
        draining: gw.draining.load(Ordering::Relaxed),
    };
    // The body, where it may name a patient, is read before the record is made.
    let admitted = match admit::admit(snap.rules(), &inbound, &mut access) {
        Ok(a) if !admit::body::must_read(&parts, &body, &a.route.config, &mut access) => {
            Ok((a, RequestBody::Streaming(body)))
        }
        // The body may name a patient: read it now.
        Ok(mut a) => {
            let l = &snap.config.listener;
            let bounds = Bounds {
                route: &a.route.config,
                held: &gw.inspecting,
                cap: l.max_inspect_bytes,
                deadline: l.header_timeout,
            };
            // Boxed: only the few requests whose body is read carry its state.
            let read = Box::pin(admit::body::read(&parts, body, bounds, &mut a.facts, &mut access)).await;
            read.map(|body| (a, body))
        }
        Err(r) => Err(r),
    };
    admit::decide(&mut access, admitted.as_ref().map(|(a, _)| a));
    let glass = admitted.as_ref().is_ok_and(|(a, _)| a.break_glass);
    // Refusals on FHIR routes are OperationOutcomes; one that found no route (no_route, a
    // refused path, an unknown organisation) is one too when the request itself looks like FHIR.
    let fhir = match access.class.as_deref() {
        Some(class) => class == Class::Epr.as_str(),
        None => crate::clinical::looks_like_fhir(parts.uri.path(), &parts.headers),
    };

    let tally = Arc::new(Tally::default());
    let mut completion = Completion::new(gw.audit.clone(), request_id.clone(), started, tally.clone());
    completion.deliver_on(Some(conn.delivery.clone()));
    // Metrics see the end of every request, however it ends, here and nowhere else.
    gw.metrics.observe_start();
    let (route, class) = (access.route.clone(), access.class.clone());
    let decision = if admitted.is_ok() { "allow" } else { "deny" };
    let m = gw.clone();
    completion.on_complete(move |c| {
        m.metrics.observe_bytes(c.bytes_in, c.bytes_out);
        m.metrics.observe_end(route, class, decision, c.status, started);
    });
    let rid = headers::request_id_header(&request_id);

    // Past its requester's refusal budget, a refusal is only counted: no record of its own.
    if let Err(r) = &admitted {
        if let Some(over) = past_refusal_budget(&gw, &snap, who, r) {
            completion.unrecorded();
            return Ok(refuse(&gw, over, &request_id, fhir, completion, &tally, rid));
        }
    }

    // No answer of any kind before the access record is durable.
    let recorded = gw.audit.append_durable(Event::Access(Box::new(access))).await;
    let forwarded = match (admitted, recorded) {
        (Ok((admitted, body)), Ok(durable)) => {
            if glass {
                break_glass_used(&gw, &conn, &admitted, &request_id);
            }
            let permit = Permit::new(&admitted, durable);
            let host = host.as_deref();
            forward(&gw, &snap, &conn, admitted, permit, (parts, body), &tally, host, &rid).await
        }
        (Err(r), Ok(_)) => Err(r),
        (_, Err(e)) => {
            tracing::error!(request_id = %request_id, error = %e, "audit record could not be made durable");
            // No access record, so no completion record either: an orphan would only confuse
            // auditors.
            completion.unrecorded();
            Err(Rejection::AuditUnavailable)
        }
    };
    let mut resp = match forwarded {
        Ok((resp, grant)) => respond(resp, grant, completion, rid),
        Err(r) => refuse(&gw, r, &request_id, fhir, completion, &tally, rid),
    };
    if glass {
        headers::break_glass_used(resp.headers_mut());
    }
    Ok(resp)
}

/// A break-glass access, recorded and about to be forwarded: counted, and logged for whoever
/// watches the logs (the reason stays in the trail: it may name a patient).
#[cold]
fn break_glass_used(gw: &Gateway, conn: &Conn, admitted: &Admitted, request_id: &str) {
    let org = conn.identity.org.as_deref().unwrap_or("");
    gw.metrics.break_glass(org, &admitted.route.name);
    tracing::warn!(org, route = %admitted.route.name, request_id, "break-glass: a not_allowed refusal was overridden; review the access record");
}

/// Sends an admitted request upstream; answers the response and the grant its body is shaped
/// and counted under.
#[allow(clippy::too_many_arguments)]
async fn forward(
    gw: &Gateway,
    snap: &State,
    conn: &Conn,
    admitted: Admitted,
    permit: Permit,
    (mut parts, body): (http::request::Parts, RequestBody),
    tally: &Arc<Tally>,
    host: Option<&str>,
    rid: &HeaderValue,
) -> Result<(Response<UpstreamBody>, Grant), Rejection> {
    let Admitted {
        route,
        grant,
        path_and_query,
        break_glass,
        ..
    } = admitted;
    let glass_reason = if break_glass {
        headers::break_glass_reason(&parts.headers)
    } else {
        None
    };
    headers::to_upstream(&mut parts, &conn.identity, &conn.forwarding, rid, host);
    if let Some(reason) = glass_reason {
        headers::break_glass_upstream(&mut parts.headers, reason);
    }
    parts.uri = path_and_query
        .parse()
        .map_err(|_| Rejection::BadRequest("the request target is not valid"))?;
    let body = match body {
        RequestBody::Streaming(b) => {
            let idle = Some(snap.config.listener.body_idle_timeout);
            let b = Counted::new(headers::CleanTrailers::new(b), tally.clone(), idle);
            grant.shape(b).boxed_unsync()
        }
        // Read whole already: nothing left to wait for.
        RequestBody::Inspected(b) => grant.shape(Counted::new(b, tally.clone(), None)).boxed_unsync(),
    };
    let upstream = &snap.upstreams[route.upstream];
    match upstream.send(permit, parts, body).await {
        Ok(resp) => Ok((resp, grant)),
        // The upstream request failed because the client's upload did: the client's answer.
        Err(_) if tally.fault() == Some(ClientFault::Idle) => Err(Rejection::ClientTimeout),
        Err(_) if tally.fault() == Some(ClientFault::BadBody) => {
            Err(Rejection::BadRequest("the request body's framing is broken"))
        }
        Err(e) => {
            gw.metrics.upstream_error(&upstream.name);
            Err(match e {
                ForwardError::Timeout => Rejection::UpstreamTimeout,
                ForwardError::Unavailable => Rejection::UpstreamUnavailable,
            })
        }
    }
}

/// The upstream's response on its way to the client: shaped, counted, and completing its
/// record when it ends.
fn respond(
    resp: Response<UpstreamBody>,
    grant: Grant,
    mut completion: Completion,
    rid: HeaderValue,
) -> Response<RespBody> {
    let (mut parts, body) = resp.into_parts();
    headers::to_client(&mut parts.headers, rid);
    completion.set_status(parts.status.as_u16());
    let body = grant.shape(body);
    // Held until the response is over: frees the concurrency slot on drop.
    completion.hold(grant);
    Response::from_parts(parts, Completing::new(body, completion).boxed_unsync())
}

/// Renders a refusal; its record completes once the answer has reached the client.
fn refuse(
    gw: &Gateway,
    r: Rejection,
    request_id: &str,
    fhir: bool,
    mut completion: Completion,
    tally: &Tally,
    rid: HeaderValue,
) -> Response<RespBody> {
    let outcome = match (&r, tally.fault()) {
        (Rejection::RateLimited(_), _) => {
            gw.metrics.rate_limited();
            "ok"
        }
        (Rejection::RefusalBudget { .. }, _) => {
            gw.metrics.refusal_coalesced("request");
            "ok"
        }
        // The upstream request failed because the client's upload did.
        (_, Some(fault)) => fault.outcome(),
        (Rejection::UpstreamTimeout, _) => "timeout",
        (Rejection::UpstreamUnavailable, _) => "upstream_error",
        _ => "ok",
    };
    let resp = r.render(request_id, fhir);
    completion.set_status(resp.status().as_u16());
    completion.set_outcome(outcome);
    let mut resp = resp.map(|b| Completing::new(b, completion).boxed_unsync());
    headers::on_refusal(resp.headers_mut(), rid);
    resp
}

/// A refusal the gateway decided (any 4xx) spends from its requester's refusal budget
/// (`[rate_limit] refusals_per_second`, `refusal_burst`): the organisation if the gateway knows
/// it, else the certificate. Past the budget the refusal is counted into a `refusals_coalesced`
/// record (`audit::refusals`) and answered with this 429 instead. Allowed requests, and the
/// gateway's own failures (5xx), spend nothing.
fn past_refusal_budget(gw: &Gateway, snap: &State, who: &ClientIdentity, r: &Rejection) -> Option<Rejection> {
    if !r.status().is_client_error() {
        return None;
    }
    let known = who
        .org
        .as_ref()
        .filter(|code| snap.directory.organisation(code).is_some());
    let requester = Requester(known.unwrap_or(&who.fingerprint).clone());
    let b = snap.config.refusal_budget;
    let budget = Budget {
        per_second: b.per_second,
        burst: b.burst,
    };
    if gw.refused_requests.spend(&gw.audit, requester, r.reason(), budget) {
        return None;
    }
    Some(Rejection::RefusalBudget {
        // When the bucket has a refusal again.
        retry_after_secs: (1.0 / b.per_second).ceil().max(1.0) as u64,
        close: matches!(r, Rejection::BadRequest(_)),
    })
}
