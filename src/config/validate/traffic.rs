//! The sections that say where requests go and how fast: `[[upstream]]`, `[[route]]` and
//! `[rate_limit]`.

use super::{dur, Base};
use crate::config::raw::{RawAllow, RawBreakGlass, RawLimit, RawRateLimits, RawRoute, RawUpstream};
use crate::config::units::parse_size;
use crate::config::{
    AllowRule, BreakGlass, Class, ClassLimit, KeyError, LimitOverride, RateLimits, RefusalBudget, Route, Upstream,
};
use std::time::Duration;

/// `[[upstream]]`: origins (`http://` or `https://`, no path), TLS files and timeouts.
pub(super) fn upstreams(raw: Vec<RawUpstream>, base: &Base) -> Result<Vec<Upstream>, KeyError> {
    let mut upstreams = Vec::new();
    for (i, u) in raw.into_iter().enumerate() {
        let key = format!("upstream[{i}]");
        if u.urls.is_empty() {
            return Err(KeyError::new(format!("{key}.urls"), "needs at least one URL"));
        }
        let mut urls = Vec::new();
        for (j, s) in u.urls.iter().enumerate() {
            urls.push(origin(&format!("{key}.urls[{j}]"), s)?);
        }
        if u.client_cert.is_some() != u.client_key.is_some() {
            return Err(KeyError::new(
                format!("{key}.client_key"),
                "client_cert and client_key go together",
            ));
        }
        upstreams.push(Upstream {
            name: u.name,
            urls,
            ca: u.ca.map(|p| base.path(p)),
            client_cert: u.client_cert.map(|p| base.path(p)),
            client_key: u.client_key.map(|p| base.path(p)),
            connect_timeout: dur(
                &format!("{key}.connect_timeout"),
                &u.connect_timeout,
                Duration::from_secs(2),
            )?,
            response_timeout: dur(
                &format!("{key}.response_timeout"),
                &u.response_timeout,
                Duration::from_secs(60),
            )?,
        });
    }
    Ok(upstreams)
}

/// An upstream origin: scheme and authority, and no path beyond `/`.
fn origin(key: &str, s: &str) -> Result<http::Uri, KeyError> {
    let bad = || KeyError::new(key, format!("\"{s}\" is not an origin like \"http://127.0.0.1:9080\""));
    let uri: http::Uri = s.parse().map_err(|_| bad())?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) if uri.path() == "/" || uri.path().is_empty() => Ok(uri),
        _ => Err(bad()),
    }
}

/// `[[route]]`: prefixes, classes (read by serde; `other` when absent) and allow rules.
pub(super) fn routes(raw: Vec<RawRoute>) -> Result<Vec<Route>, KeyError> {
    let mut routes = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = format!("route[{i}]");
        if !r.path_prefix.starts_with('/') {
            return Err(KeyError::new(
                format!("{key}.path_prefix"),
                format!("\"{}\" must start with /", r.path_prefix),
            ));
        }
        let mut allow = Vec::new();
        for (j, a) in r.allow.into_iter().enumerate() {
            allow.push(allow_rule(&format!("{key}.allow[{j}]"), a)?);
        }
        let mut break_glass = Vec::new();
        for (j, b) in r.break_glass.into_iter().enumerate() {
            break_glass.push(break_glass_entry(&format!("{key}.break_glass[{j}]"), b)?);
        }
        let class = r.class.unwrap_or(Class::Other);
        let inspect_body_limit = super::size(
            &format!("{key}.inspect_body_limit"),
            &r.inspect_body_limit,
            Route::INSPECT_BODY_LIMIT,
        )?;
        routes.push(Route {
            name: r.name,
            path_prefix: r.path_prefix,
            host: r.host.map(|h| h.to_ascii_lowercase()),
            upstream: r.upstream,
            class,
            provider_host: r.provider_host.map(|h| h.to_ascii_lowercase()),
            require_ssp_headers: r.require_ssp_headers,
            check_token_org: r.check_token_org,
            check_nhs_number: r.check_nhs_number,
            inspect_body: r.inspect_body.unwrap_or(class == Class::Epr),
            inspect_body_limit,
            patient_ids_are_nhs_numbers: r.patient_ids_are_nhs_numbers,
            allow_path_params: r.allow_path_params,
            allow,
            break_glass,
        });
    }
    Ok(routes)
}

/// `[[route.allow]]`: names orgs or groups; methods upper-cased; org codes upper-cased.
fn allow_rule(key: &str, a: RawAllow) -> Result<AllowRule, KeyError> {
    if a.orgs.is_empty() && a.groups.is_empty() {
        return Err(KeyError::new(
            key,
            "names no orgs or groups (use orgs = [\"*\"] for any known organisation)",
        ));
    }
    Ok(AllowRule {
        orgs: a.orgs.iter().map(|o| o.to_ascii_uppercase()).collect(),
        groups: a.groups,
        methods: methods(key, &a.methods)?,
        resources: a.resources,
        interactions: a.interactions,
        spine_interactions: a.spine_interactions,
    })
}

/// `[[route.break_glass]]`: names orgs or groups, never `"*"` (an override open to every
/// organisation would undo the route's rules); methods upper-cased.
fn break_glass_entry(key: &str, b: RawBreakGlass) -> Result<BreakGlass, KeyError> {
    if b.orgs.is_empty() && b.groups.is_empty() {
        return Err(KeyError::new(
            key,
            "names no orgs or groups: break-glass must say who may use it",
        ));
    }
    if b.orgs.iter().any(|o| o == "*") {
        return Err(KeyError::new(
            format!("{key}.orgs"),
            "\"*\" is not allowed here: name the organisations or groups that may break glass",
        ));
    }
    Ok(BreakGlass {
        orgs: b.orgs.iter().map(|o| o.to_ascii_uppercase()).collect(),
        groups: b.groups,
        methods: methods(key, &b.methods)?,
    })
}

/// `<key>.methods`: HTTP method words, upper-cased.
fn methods(key: &str, raw: &[String]) -> Result<Vec<String>, KeyError> {
    let mut methods = Vec::new();
    for m in raw {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(KeyError::new(
                format!("{key}.methods"),
                format!("\"{m}\" is not an HTTP method"),
            ));
        }
        methods.push(m.to_ascii_uppercase());
    }
    Ok(methods)
}

/// `[rate_limit.<class>]` and `[[rate_limit.override]]` (whose class serde read).
pub(super) fn rate_limits(raw: RawRateLimits) -> Result<RateLimits, KeyError> {
    let mut rate_limits = RateLimits::default();
    for (class, raw) in [
        (Class::Epr, &raw.epr),
        (Class::Image, &raw.image),
        (Class::Other, &raw.other),
    ] {
        if let Some(r) = raw {
            let l = limit(&format!("rate_limit.{}", class.as_str()), r)?;
            rate_limits.classes.insert(class, l);
        }
    }
    for (i, o) in raw.overrides.into_iter().enumerate() {
        let l = limit(
            &format!("rate_limit.override[{i}]"),
            &RawLimit {
                requests_per_second: o.requests_per_second,
                burst: o.burst,
                max_concurrent: o.max_concurrent,
                bytes_per_second: o.bytes_per_second,
            },
        )?;
        rate_limits.overrides.push(LimitOverride {
            org: o.org.to_ascii_uppercase(),
            class: o.class,
            limit: l,
        });
    }
    Ok(rate_limits)
}

/// `[rate_limit] refusals_per_second` and `refusal_burst`, or their defaults.
pub(super) fn refusal_budget(raw: &RawRateLimits) -> Result<RefusalBudget, KeyError> {
    let mut budget = RefusalBudget::default();
    if let Some(rps) = raw.refusals_per_second {
        if !(rps > 0.0 && rps.is_finite()) {
            return Err(KeyError::new(
                "rate_limit.refusals_per_second",
                "must be a number above 0 (refused requests past the budget are only counted)",
            ));
        }
        budget.per_second = rps;
    }
    match raw.refusal_burst {
        Some(0) => return Err(KeyError::new("rate_limit.refusal_burst", "must be at least 1")),
        Some(burst) => budget.burst = burst,
        None => {}
    }
    Ok(budget)
}

/// One class's limits (or an override's): every number present must be above 0.
fn limit(key: &str, r: &RawLimit) -> Result<ClassLimit, KeyError> {
    if let Some(rps) = r.requests_per_second {
        if !(rps > 0.0 && rps.is_finite()) {
            return Err(KeyError::new(
                format!("{key}.requests_per_second"),
                "must be a number above 0",
            ));
        }
    }
    if r.burst == Some(0) {
        return Err(KeyError::new(format!("{key}.burst"), "must be at least 1"));
    }
    if r.max_concurrent == Some(0) {
        return Err(KeyError::new(format!("{key}.max_concurrent"), "must be at least 1"));
    }
    let bytes_per_second = match &r.bytes_per_second {
        None => None,
        Some(s) => match parse_size(s) {
            Ok(0) => return Err(KeyError::new(format!("{key}.bytes_per_second"), "must be above 0")),
            Ok(n) => Some(n),
            Err(m) => return Err(KeyError::new(format!("{key}.bytes_per_second"), m)),
        },
    };
    Ok(ClassLimit {
        requests_per_second: r.requests_per_second,
        burst: r.burst,
        max_concurrent: r.max_concurrent,
        bytes_per_second,
    })
}
