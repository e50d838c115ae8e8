//! What a row must match: the filters as given on the command line, tested on the borrowed
//! view of each line ([`Envelope`]) before anything is copied.

use std::str::FromStr;

use time::format_description::well_known::Rfc3339;
use time::{Date, Duration, OffsetDateTime};

use super::envelope::{Envelope, Str};
use super::QueryError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

impl FromStr for Decision {
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Decision, QueryError> {
        match s {
            "allow" => Ok(Decision::Allow),
            "deny" => Ok(Decision::Deny),
            _ => Err(QueryError::BadFilter(format!(
                "--decision must be allow or deny, not {s:?}"
            ))),
        }
    }
}

/// The filters of `audit query` and `audit export`; all given ones must match.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// ODS code of the client organisation.
    pub org: Option<String>,
    /// A patient the request named anywhere: an NHS number (spaces are ignored: people write
    /// `999 000 0034`) in `nhs_number` or `nhs_numbers`, or another id in `patient_ids`, whole
    /// (`system|value`) or by its value alone.
    pub patient: Option<String>,
    /// DICOM study instance UID: `study_uid` or any of `study_uids`.
    pub study: Option<String>,
    /// Route name.
    pub route: Option<String>,
    pub decision: Option<Decision>,
    /// Access time ≥ this. Parse with [`parse_since`].
    pub since: Option<OffsetDateTime>,
    /// Access time < this (exclusive). Parse with [`parse_until`], which makes a date mean the
    /// whole of that day and a timestamp inclusive.
    pub until: Option<OffsetDateTime>,
    /// caregate's own request id.
    pub request_id: Option<String>,
    /// The client's own `X-Request-Id` (`client_request_id`): searchable, never a key, so
    /// two requests that sent the same one are two rows.
    pub client_request_id: Option<String>,
}

impl Filters {
    /// Whether any filter but the time bounds is given: records other than requests
    /// (`tls_rejected`, `lifecycle`) match only the time bounds.
    pub fn names_requests(&self) -> bool {
        self.org.is_some()
            || self.patient.is_some()
            || self.study.is_some()
            || self.route.is_some()
            || self.decision.is_some()
            || self.request_id.is_some()
            || self.client_request_id.is_some()
    }
}

/// `--patient` as given and without whitespace, prepared once for the loop.
pub(super) struct Patient {
    raw: String,
    compact: String,
}

impl Patient {
    pub(super) fn new(given: &str) -> Patient {
        Patient {
            raw: given.trim().to_string(),
            compact: given.chars().filter(|c| !c.is_whitespace()).collect(),
        }
    }

    /// An NHS number is compared without spaces; a patient id (`id`) also by the value of its
    /// `system|value` unless the wanted id names a system itself.
    pub(super) fn is(&self, have: &str, id: bool) -> bool {
        if have == self.compact || have == self.raw {
            return true;
        }
        id && !self.raw.contains('|')
            && have
                .rsplit_once('|')
                .is_some_and(|(_, v)| v == self.raw || v == self.compact)
    }
}

/// `--since`: RFC 3339, or a date meaning its first instant (UTC).
pub fn parse_since(s: &str) -> Result<OffsetDateTime, QueryError> {
    parse_bound(s, "--since", false)
}

/// `--until`: RFC 3339 (inclusive), or a date meaning the end of that day (UTC). Returned as an
/// exclusive bound for [`Filters::until`].
pub fn parse_until(s: &str) -> Result<OffsetDateTime, QueryError> {
    parse_bound(s, "--until", true)
}

fn parse_bound(s: &str, flag: &str, until: bool) -> Result<OffsetDateTime, QueryError> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        // Record times have microseconds, so one nanosecond later makes the bound inclusive.
        return Ok(if until { t + Duration::nanoseconds(1) } else { t });
    }
    let date = Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).map_err(|_| {
        QueryError::BadFilter(format!(
            "{flag} must be RFC 3339 (2026-11-22T05:08:59Z) or a date (2026-11-22), not {s:?}"
        ))
    })?;
    let start = date.midnight().assume_utc();
    Ok(if until { start + Duration::days(1) } else { start })
}

/// Whether the record passes every filter given. Patient, study and client request id were
/// matched while the line was read (see [`Envelope::read`]).
pub(super) fn matches(env: &Envelope<'_>, f: &Filters) -> Result<bool, String> {
    fn eq(want: &Option<String>, have: Option<&Str<'_>>) -> bool {
        want.as_deref().is_none_or(|w| have.is_some_and(|h| **h == *w))
    }
    let ok = env.named_all()
        && eq(&f.org, env.org.as_ref())
        && eq(&f.route, env.route.as_ref())
        && eq(&f.request_id, env.request_id.as_ref())
        && f.decision
            .is_none_or(|d| env.decision.as_ref().is_some_and(|h| **h == *d.as_str()));
    if !ok || (f.since.is_none() && f.until.is_none()) {
        return Ok(ok);
    }
    let time = OffsetDateTime::parse(&env.time, &Rfc3339).map_err(|e| format!("bad time {:?}: {e}", &*env.time))?;
    Ok(f.since.is_none_or(|s| time >= s) && f.until.is_none_or(|u| time < u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_parse_dates_and_timestamps() {
        let since = parse_since("2026-11-22").unwrap();
        assert_eq!(since, time::macros::datetime!(2026-11-22 0:00 UTC));
        let until = parse_until("2026-11-22").unwrap();
        assert_eq!(until, time::macros::datetime!(2026-11-23 0:00 UTC));
        let t = parse_until("2026-11-22T05:08:59.123456Z").unwrap();
        assert!(t > time::macros::datetime!(2026-11-22 05:08:59.123456 UTC));
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("2026-13-01").is_err());
    }
}
