//! Admission: every check a request must pass before it is recorded, each a named function, in
//! pipeline order (SPEC §4). The first refusal ends it; either way the access record has been
//! filled in with what was learnt (route, class, clinical facts, the rule).
//!
//! ```text
//! framing verdict → draining → framing → organisation → route → Spine headers → policy
//!   → NHS number → Ssp-From/ASID → token organisation → limits  ⇒  Admitted
//! ```
//!
//! An [`Admitted`] request becomes a [`Permit`] only with the audit log's [`Durable`] receipt
//! for its access record, and only a `Permit` opens an upstream request: forwarding before the
//! record is durable does not compile.

pub mod body;
mod request;

pub use request::{access_record, request_host};

use crate::audit::record;
use crate::audit::Durable;
use crate::clinical::Facts;
use crate::config;
use crate::directory::{Directory, Organisation};
use crate::framing::h1::Verdicts;
use crate::identity::ClientIdentity;
use crate::limit::{Grant, Limits};
use crate::policy::{self, Decision};
use crate::reject::Rejection;
use crate::route::{Route, RouteTable};
use http::request::Parts;
use http::Request;
use request::split_provider;
use std::sync::Arc;

/// A request that passed every check, not yet recorded.
// Sealed inside the crate as well as outside it, which `#[non_exhaustive]` would not be:
// only `admit` makes one.
#[allow(clippy::manual_non_exhaustive)]
pub struct Admitted {
    pub route: Arc<Route>,
    pub grant: Grant,
    /// Index of the allow rule that matched.
    pub rule: usize,
    /// The normalised path (and original query) to forward: what was matched.
    pub path_and_query: String,
    /// What the request head names; the body, once inspected, adds to it.
    pub facts: Facts,
    /// A `[[route.break_glass]]` entry overrode a `not_allowed` refusal (`rule` names it).
    pub break_glass: bool,
    _sealed: (),
}

/// Admitted and recorded: what [`crate::forward::Upstream::send`] takes.
pub struct Permit {
    _sealed: (),
}

impl Permit {
    /// The one way to make a `Permit`: an admitted request, and the receipt for its durable
    /// access record.
    pub fn new(_admitted: &Admitted, _recorded: Durable) -> Permit {
        Permit { _sealed: () }
    }
}

/// What admission decides by: the parts of the running state it reads (one snapshot's).
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    pub directory: &'a Directory,
    pub routes: &'a RouteTable,
    pub limits: &'a Limits,
}

/// What admission knows of the request and the connection it came on.
pub struct Inbound<'a> {
    pub parts: &'a Parts,
    /// The request's host, in lower case without a port ([`request_host`]).
    pub host: Option<&'a str>,
    pub identity: &'a ClientIdentity,
    /// HTTP/1 only: the framing verdicts of the heads read on this connection.
    pub framing: Option<&'a Verdicts>,
    /// The gateway is draining: new requests are refused.
    pub draining: bool,
}

/// The checks in pipeline order, filling in `access` as they learn the route, class and
/// clinical facts. `access.decision`, `reason` and `rule` are left to [`decide`].
pub fn admit(rules: Rules<'_>, req: &Inbound<'_>, access: &mut record::Access) -> Result<Admitted, Rejection> {
    framing_verdict(req.framing)?;
    not_draining(req.draining)?;
    crate::framing::check(req.parts).map_err(Rejection::BadRequest)?;
    let org = organisation(rules.directory, req.identity, access)?;
    let (route, path) = route(rules.routes, req, access)?;
    let query = req.parts.uri.query();
    let facts = crate::clinical::parse(
        &req.parts.method,
        &path,
        query,
        &req.parts.headers,
        &(&route.config).into(),
    );
    access.clinical = facts.clinical.clone();
    patients_recordable(&facts)?;
    let cfg = &route.config;
    spine_headers_present(cfg, &req.parts.headers)?;
    spine_interaction_agrees(&facts, &req.parts.method)?;
    let rule = allowed(route, org, req, &facts, access)?;
    access.rule = route.rule_labels.get(rule).cloned();
    nhs_number_valid(cfg, &facts)?;
    ssp_from_matches_asid(&req.parts.headers, req.identity)?;
    token_org_matches(cfg, &facts, org)?;
    // Limits last, so refused requests use no quota.
    let grant = rules
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
        facts,
        break_glass: rule >= route.config.allow.len(),
        _sealed: (),
    })
}

/// Writes the outcome of [`admit`] into the access record: one place for live traffic and for
/// `caregate explain`.
pub fn decide(access: &mut record::Access, admitted: Result<&Admitted, &Rejection>) {
    match admitted {
        Ok(a) => {
            access.decision = "allow".into();
            access.reason = "allowed".into();
            access.rule = a.route.rule_labels.get(a.rule).cloned();
        }
        Err(r) => {
            access.decision = "deny".into();
            access.reason = r.reason().into();
        }
    }
}

// === the checks, in pipeline order ===

/// Every HTTP/1 request takes its framing verdict, refused or not, to stay in step.
fn framing_verdict(framing: Option<&Verdicts>) -> Result<(), Rejection> {
    match framing.and_then(Verdicts::next) {
        Some(why) => Err(Rejection::BadRequest(why)),
        None => Ok(()),
    }
}

fn not_draining(draining: bool) -> Result<(), Rejection> {
    if draining {
        return Err(Rejection::ShuttingDown);
    }
    Ok(())
}

/// An organisation the gateway knows, or nothing goes further.
fn organisation<'s>(
    directory: &'s Directory,
    identity: &ClientIdentity,
    access: &mut record::Access,
) -> Result<&'s Arc<Organisation>, Rejection> {
    let org = identity
        .org
        .as_deref()
        .and_then(|code| directory.organisation(code))
        .ok_or(Rejection::UnknownOrg)?;
    access.client.org_name = Some(org.name.clone());
    Ok(org)
}

/// Spine Secure Proxy-style `/https://<provider>/…` addressing first, then the one
/// normalisation whose result is both matched and forwarded, then the route.
fn route<'s>(
    routes: &'s RouteTable,
    req: &Inbound<'_>,
    access: &mut record::Access,
) -> Result<(&'s Arc<Route>, String), Rejection> {
    let (provider, raw) = split_provider(req.parts.uri.path())?;
    // Matched as a servlet upstream would resolve it: without its matrix parameters.
    let (raw, params) = crate::path::split_params(raw);
    let path = crate::path::normalise(&raw).map_err(|_| Rejection::BadRequest("the request path is not allowed"))?;
    // Into the raw path's buffer, which is seldom shorter: usually no allocation.
    access.request.path.clone_from(&path);
    let route = routes.find_for(req.host, provider, &path).ok_or(Rejection::NoRoute)?;
    access.route = Some(route.name.clone());
    access.class = Some(route.class.as_str().into());
    if !params.is_empty() {
        access.request.path_params = params;
        if !route.config.allow_path_params {
            return Err(Rejection::BadRequest(
                "a path segment carries ;parameters, which upstreams read differently",
            ));
        }
    }
    Ok((route, path))
}

/// A Spine-style route needs the Spine headers whatever its rules say: their absence is a
/// malformed request (400), not a rule that failed to match.
fn spine_headers_present(cfg: &config::Route, headers: &http::HeaderMap) -> Result<(), Rejection> {
    if cfg.require_ssp_headers
        && ["ssp-traceid", "ssp-from", "ssp-to", "ssp-interactionid"]
            .iter()
            .any(|h| headers.get(*h).is_none_or(|v| v.is_empty()))
    {
        return Err(Rejection::BadRequest(
            "Ssp-TraceID, Ssp-From, Ssp-To and Ssp-InteractionID are required",
        ));
    }
    Ok(())
}

/// A request that names more patients than a record can hold (or ids no record should) is
/// refused: recording too little is the one failure the trail must not have.
fn patients_recordable(facts: &Facts) -> Result<(), Rejection> {
    if facts.unrecorded {
        return Err(Rejection::BadRequest(
            "the request names more patients, or longer identifiers, than can be recorded",
        ));
    }
    Ok(())
}

/// An `Ssp-InteractionID` must label the request it comes with: a rule that filters on
/// `spine_interactions` would otherwise trust a header the client chose.
fn spine_interaction_agrees(facts: &Facts, method: &http::Method) -> Result<(), Rejection> {
    crate::clinical::check_spine_interaction(facts, method).map_err(Rejection::BadRequest)
}

/// Deny by default: the route's first matching allow rule, or else a `[[route.break_glass]]`
/// entry for this organisation and method when the request gives a well-formed
/// `X-Break-Glass-Reason` (recorded), or `not_allowed`. Only `not_allowed` is ever overridden:
/// every other check runs as for any request.
fn allowed(
    route: &Route,
    org: &Organisation,
    req: &Inbound<'_>,
    facts: &Facts,
    access: &mut record::Access,
) -> Result<usize, Rejection> {
    if let Decision::Allow { rule } = policy::decide(route, org, &req.parts.method, facts) {
        return Ok(rule);
    }
    let Some(rule) = policy::break_glass(route, org, &req.parts.method) else {
        return Err(Rejection::NotAllowed);
    };
    match break_glass_reason(&req.parts.headers) {
        Ok(Some(reason)) => {
            access.break_glass = Some(record::BreakGlass { reason: reason.into() });
            Ok(rule)
        }
        Ok(None) => Err(Rejection::NotAllowed),
        // Said to a client that may use break-glass and tried: in an emergency, what to fix.
        Err(why) => Err(Rejection::BadRequest(why)),
    }
}

/// The request header that asks for break-glass.
pub const BREAK_GLASS_REASON: &str = "x-break-glass-reason";

/// `X-Break-Glass-Reason`: absent, or one header of 10 to 500 printable ASCII characters
/// (space to `~`) once the whitespace around it is trimmed. ASCII only: header values are not
/// reliably UTF-8, and what a reviewer reads must be what the client sent.
fn break_glass_reason(headers: &http::HeaderMap) -> Result<Option<&str>, &'static str> {
    const BAD: &str = "X-Break-Glass-Reason must be one header of 10 to 500 printable ASCII characters";
    let mut all = headers.get_all(BREAK_GLASS_REASON).iter();
    let Some(value) = all.next() else { return Ok(None) };
    if all.next().is_some() {
        return Err(BAD);
    }
    let reason = value.as_bytes().trim_ascii();
    if !(10..=500).contains(&reason.len()) || !reason.iter().all(|b| (b' '..=b'~').contains(b)) {
        return Err(BAD);
    }
    // All ASCII, checked just above.
    Ok(std::str::from_utf8(reason).ok())
}

fn nhs_number_valid(cfg: &config::Route, facts: &Facts) -> Result<(), Rejection> {
    if cfg.check_nhs_number && facts.invalid_nhs_number.is_some() {
        return Err(Rejection::BadRequest(
            "the NHS number in the request is not valid: its check digit (modulus 11) is wrong",
        ));
    }
    Ok(())
}

/// A certificate registered with an ASID speaks only for that ASID.
fn ssp_from_matches_asid(headers: &http::HeaderMap, identity: &ClientIdentity) -> Result<(), Rejection> {
    if let (Some(from), Some(asid)) = (headers.get("ssp-from"), &identity.asid) {
        if from.as_bytes() != asid.as_bytes() {
            return Err(Rejection::IdentityMismatch(
                "Ssp-From does not match the ASID registered for this certificate",
            ));
        }
    }
    Ok(())
}

/// The token only ever narrows: it is compared with the certificate, never trusted alone.
fn token_org_matches(cfg: &config::Route, facts: &Facts, org: &Organisation) -> Result<(), Rejection> {
    if !cfg.check_token_org {
        return Ok(());
    }
    match facts.clinical.token.as_ref().and_then(|t| t.organisation.as_deref()) {
        Some(code) if code == org.code => Ok(()),
        Some(_) => Err(Rejection::IdentityMismatch(
            "the requesting organisation in the token is not the certificate's organisation",
        )),
        None => Err(Rejection::IdentityMismatch(
            "this route needs a GP Connect token whose requesting_organization is the certificate's organisation",
        )),
    }
}

/// What `caregate explain` reports: the access record the request would get, the refusal if
/// there would be one, and, for a `not_allowed` one, the `[[route.break_glass]]` entry that
/// `X-Break-Glass-Reason` would let it through by. Runs the same [`admit`] and [`decide`] as
/// live traffic.
pub fn explain(
    rules: Rules<'_>,
    identity: &ClientIdentity,
    req: Request<()>,
) -> (record::Access, Option<Rejection>, Option<Arc<str>>) {
    let (mut parts, ()) = req.into_parts();
    let (access, refusal) = explain_parts(rules, identity, &parts);
    let mut glass = None;
    if matches!(refusal, Some(Rejection::NotAllowed)) && !parts.headers.contains_key(BREAK_GLASS_REASON) {
        let reason = http::HeaderValue::from_static("caregate explain: would break-glass allow it?");
        parts.headers.insert(BREAK_GLASS_REASON, reason);
        if let (a, None) = explain_parts(rules, identity, &parts) {
            glass = a.rule;
        }
    }
    (access, refusal, glass)
}

fn explain_parts(rules: Rules<'_>, identity: &ClientIdentity, parts: &Parts) -> (record::Access, Option<Rejection>) {
    let host = request_host(parts);
    let mut access = access_record(
        identity,
        &"127.0.0.1".into(),
        0,
        parts,
        &"explain".into(),
        host.as_ref(),
    );
    let inbound = Inbound {
        parts,
        host: host.as_deref(),
        identity,
        framing: None,
        draining: false,
    };
    let admitted = admit(rules, &inbound, &mut access);
    decide(&mut access, admitted.as_ref());
    (access, admitted.err())
}
