//! Checks across sections, once each section is valid on its own: names are unique, and every
//! name one section uses is defined in another (an upstream, an organisation, a group).

use crate::config::{Config, Endpoint, KeyError, LimitOverride, Organisation, Route, Upstream};
use std::collections::HashSet;

/// Checks names are unique and references resolve; the first problem names its key.
pub(super) fn check(c: &Config) -> Result<(), KeyError> {
    let upstreams = upstream_names(&c.upstreams)?;
    routes(&c.routes, &upstreams)?;
    break_glass_fits(c)?;
    let known = Known::new(&c.organisations)?;
    // With an ODS CSV the organisation list is only known once the file is read: the runtime
    // state checks references to CSV organisations then.
    if c.identity.organisations_csv.is_some() {
        return Ok(());
    }
    endpoint_orgs(&c.endpoints, &known)?;
    allow_rules(&c.routes, &known)?;
    override_orgs(&c.rate_limits.overrides, &known)?;
    console_auditors(c.console.as_ref(), &known)
}

/// `[[upstream]]` names are unique; answers them.
fn upstream_names(upstreams: &[Upstream]) -> Result<HashSet<&str>, KeyError> {
    let mut seen = HashSet::new();
    for (i, u) in upstreams.iter().enumerate() {
        if !seen.insert(u.name.as_str()) {
            return Err(KeyError::new(
                format!("upstream[{i}].name"),
                format!("\"{}\" is used twice", u.name),
            ));
        }
    }
    Ok(seen)
}

/// `[[route]]` names are unique and each names an `[[upstream]]`.
fn routes(routes: &[Route], upstreams: &HashSet<&str>) -> Result<(), KeyError> {
    let mut names = HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        if !names.insert(r.name.as_str()) {
            return Err(KeyError::new(
                format!("route[{i}].name"),
                format!("\"{}\" is used twice", r.name),
            ));
        }
        if !upstreams.contains(r.upstream.as_str()) {
            return Err(KeyError::new(
                format!("route[{i}].upstream"),
                format!("no [[upstream]] named \"{}\"", r.upstream),
            ));
        }
    }
    Ok(())
}

/// A break-glass access record must keep its reason: under 4 KiB, a record with many long
/// fields can be cut to its summary, which would hide the use from its reviewers.
fn break_glass_fits(c: &Config) -> Result<(), KeyError> {
    const MIN: u64 = 4 << 10;
    if c.audit.max_record_bytes < MIN && c.routes.iter().any(|r| !r.break_glass.is_empty()) {
        return Err(KeyError::new(
            "audit.max_record_bytes",
            "must be at least 4KiB when a route has [[route.break_glass]], so every break-glass record keeps its reason",
        ));
    }
    Ok(())
}

/// The organisation codes and groups the config defines.
struct Known<'a> {
    orgs: HashSet<&'a str>,
    groups: HashSet<&'a str>,
}

impl<'a> Known<'a> {
    /// Collects them, refusing a code listed twice.
    fn new(organisations: &'a [Organisation]) -> Result<Known<'a>, KeyError> {
        let mut known = Known {
            orgs: HashSet::new(),
            groups: HashSet::new(),
        };
        for (i, o) in organisations.iter().enumerate() {
            if !known.orgs.insert(o.code.as_str()) {
                return Err(KeyError::new(
                    format!("organisation[{i}].code"),
                    format!("\"{}\" is listed twice", o.code),
                ));
            }
            known.groups.extend(o.groups.iter().map(String::as_str));
        }
        Ok(known)
    }

    fn org(&self, key: String, code: &str) -> Result<(), KeyError> {
        if self.orgs.contains(code) {
            Ok(())
        } else {
            Err(KeyError::new(key, format!("no [[organisation]] with code \"{code}\"")))
        }
    }
}

/// Each `[[endpoint]]` belongs to a known organisation.
fn endpoint_orgs(endpoints: &[Endpoint], known: &Known) -> Result<(), KeyError> {
    for (i, e) in endpoints.iter().enumerate() {
        known.org(format!("endpoint[{i}].org"), &e.org)?;
    }
    Ok(())
}

/// Each `[[route.allow]]` and `[[route.break_glass]]` names known organisations (or, for
/// `allow`, `"*"`) and groups someone is in.
fn allow_rules(routes: &[Route], known: &Known) -> Result<(), KeyError> {
    for (i, r) in routes.iter().enumerate() {
        let allow = r.allow.iter().map(|a| (&a.orgs, &a.groups));
        let glass = r.break_glass.iter().map(|b| (&b.orgs, &b.groups));
        let entries = allow
            .enumerate()
            .map(|(j, w)| (format!("route[{i}].allow[{j}]"), w))
            .chain(
                glass
                    .enumerate()
                    .map(|(j, w)| (format!("route[{i}].break_glass[{j}]"), w)),
            );
        for (key, (orgs, groups)) in entries {
            for org in orgs.iter().filter(|o| *o != "*") {
                known.org(format!("{key}.orgs"), org)?;
            }
            for g in groups {
                if !known.groups.contains(g.as_str()) {
                    return Err(KeyError::new(
                        format!("{key}.groups"),
                        format!("no [[organisation]] is in group \"{g}\""),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Each `[[rate_limit.override]]` is for a known organisation.
fn override_orgs(overrides: &[LimitOverride], known: &Known) -> Result<(), KeyError> {
    for (i, o) in overrides.iter().enumerate() {
        known.org(format!("rate_limit.override[{i}].org"), &o.org)?;
    }
    Ok(())
}

/// `console.auditors` names known organisations and groups someone is in.
fn console_auditors(console: Option<&crate::config::Console>, known: &Known) -> Result<(), KeyError> {
    let Some(c) = console else { return Ok(()) };
    for o in &c.auditor_orgs {
        known.org("console.auditors".into(), o)?;
    }
    for g in &c.auditor_groups {
        if !known.groups.contains(g.as_str()) {
            return Err(KeyError::new(
                "console.auditors",
                format!("no [[organisation]] is in group \"{g}\""),
            ));
        }
    }
    Ok(())
}
