//! What a row must match: the filters as given on the command line, and the borrowed view of
//! each line (`Envelope`) they are tested against before anything is copied.

use std::borrow::Cow;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};
use time::format_description::well_known::Rfc3339;
use time::{Date, Duration, OffsetDateTime};

use super::QueryError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    fn as_str(self) -> &'static str {
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

    /// An NHS number is compared without spaces; a patient id also by the value of its
    /// `system|value` unless the wanted id names a system itself.
    fn is(&self, have: &str, id: bool) -> bool {
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

/// Whether the record passes every filter given; `patient` is [`Filters::patient`] prepared.
pub(super) fn matches(env: &Envelope<'_>, f: &Filters, patient: Option<&Patient>) -> Result<bool, String> {
    fn eq(want: &Option<String>, have: Option<&Str<'_>>) -> bool {
        want.as_deref().is_none_or(|w| have.is_some_and(|h| *h.0 == *w))
    }
    let client_org = env.client.as_ref().and_then(|c| c.org.as_ref());
    let clinical = env.clinical.as_ref();
    let ok = eq(&f.org, client_org)
        && eq(&f.route, env.route.as_ref())
        && eq(&f.request_id, env.request_id.as_ref())
        && eq(&f.client_request_id, env.client_request_id.as_ref())
        && f.study
            .as_deref()
            .is_none_or(|s| clinical.is_some_and(|c| c.names_study(s)))
        && patient.is_none_or(|p| clinical.is_some_and(|c| c.names_patient(p)))
        && f.decision
            .is_none_or(|d| env.decision.as_ref().is_some_and(|h| *h.0 == *d.as_str()));
    if !ok || (f.since.is_none() && f.until.is_none()) {
        return Ok(ok);
    }
    let time = OffsetDateTime::parse(&env.time.0, &Rfc3339).map_err(|e| format!("bad time {:?}: {e}", env.time.0))?;
    Ok(f.since.is_none_or(|s| time >= s) && f.until.is_none_or(|u| time < u))
}

// === borrowed views of a line ===

/// A string borrowed from the line unless it holds JSON escapes. (`Cow<str>` always copies
/// through serde's derive, and `&str` fails on escapes.)
pub(super) struct Str<'a>(pub(super) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Str<'a>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// What every line is filtered on, borrowed: a non-matching record costs a parse and nothing
/// else.
#[derive(Deserialize)]
pub(super) struct Envelope<'a> {
    pub(super) seq: u64,
    #[serde(borrow)]
    pub(super) time: Str<'a>,
    #[serde(borrow)]
    pub(super) event: Str<'a>,
    #[serde(borrow, default)]
    pub(super) request_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    client_request_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    route: Option<Str<'a>>,
    #[serde(borrow, default)]
    decision: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub(super) action: Option<Str<'a>>,
    #[serde(borrow, default)]
    client: Option<EnvClient<'a>>,
    #[serde(borrow, default)]
    clinical: Option<EnvClinical<'a>>,
    /// The record's own hash: the exported AuditEvent's id.
    #[serde(borrow, default)]
    pub(super) hash: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct EnvClient<'a> {
    #[serde(borrow, default)]
    org: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct EnvClinical<'a> {
    #[serde(borrow, default)]
    nhs_number: Option<Str<'a>>,
    #[serde(borrow, default)]
    nhs_numbers: Few<'a>,
    #[serde(borrow, default)]
    patient_ids: Few<'a>,
    #[serde(borrow, default)]
    study_uid: Option<Str<'a>>,
    #[serde(borrow, default)]
    study_uids: Few<'a>,
}

impl EnvClinical<'_> {
    fn names_patient(&self, p: &Patient) -> bool {
        self.nhs_number.as_ref().is_some_and(|n| p.is(n, false))
            || self.nhs_numbers.iter().any(|n| p.is(n, false))
            || self.patient_ids.iter().any(|id| p.is(id, true))
    }

    fn names_study(&self, uid: &str) -> bool {
        self.study_uid.as_deref() == Some(uid) || self.study_uids.iter().any(|s| s == uid)
    }
}

/// Inline room in [`Few`]: requests naming more patients or studies than this are rare.
const FEW: usize = 4;

/// A list of strings borrowed from the line (`nhs_numbers`, `patient_ids`, `study_uids`): the
/// first [`FEW`] inline, so that matching a record allocates nothing in the common case.
#[derive(Default)]
pub(super) struct Few<'a> {
    head: [Option<Str<'a>>; FEW],
    rest: Vec<Str<'a>>,
}

impl Few<'_> {
    fn iter(&self) -> impl Iterator<Item = &str> {
        self.head
            .iter()
            .map_while(|s| s.as_deref())
            .chain(self.rest.iter().map(|s| &**s))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Few<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Few<'a>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Few<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of strings")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Few<'de>, A::Error> {
                let mut few = Few::default();
                let mut i = 0;
                while let Some(s) = seq.next_element::<Str<'de>>()? {
                    match few.head.get_mut(i) {
                        Some(slot) => *slot = Some(s),
                        None => few.rest.push(s),
                    }
                    i += 1;
                }
                Ok(few)
            }
        }
        d.deserialize_seq(V)
    }
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
