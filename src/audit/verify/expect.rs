//! What the auditor knows from outside the trail (issue 19, "a trail cut at a checkpoint").
//!
//! Every rotated file ends with a signed checkpoint, so a trail whose newest files were deleted
//! still ends sealed: the chain and the signatures alone cannot tell it was cut. Two things from
//! outside can:
//!
//! - `--expect-until TIME`: the auditor knows the gateway ran until TIME. The writer signs a
//!   checkpoint at least every `checkpoint_interval`, and each checkpoint's signed `next_due`
//!   says by when the next one was due. If the last checkpoint's `next_due` is before TIME, the
//!   trail stops earlier than the gateway ran: its newest records are gone (or the gateway was
//!   stopped, which its `lifecycle` `stop` record says). A v1 checkpoint (an older trail) has
//!   no `next_due`; its `time` stands in, unsigned.
//! - `--witness FILE`: checkpoints seen earlier by `caregate audit witness` and kept elsewhere
//!   (`witness`). The trail must still hold each, byte for byte: the same `seq` and `hash`.

use std::fmt;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::witness::Witness;
use super::VerifyError;

/// What `audit verify` is told besides the trail: see the module's comment.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Checkpoints the trail must still hold (`--witness`).
    pub witnesses: Vec<Witness>,
    /// The trail must show the gateway ran until at least this time (`--expect-until`).
    pub until: Option<OffsetDateTime>,
}

/// `--expect-until`: RFC 3339, or a date meaning its first instant (UTC): a gateway known to
/// have run on that day ran at least into it.
pub fn parse_until(s: &str) -> Result<OffsetDateTime, VerifyError> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let date = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).map_err(|_| {
        VerifyError::Unusable(format!(
            "--expect-until must be RFC 3339 (2026-11-22T05:08:59Z) or a date (2026-11-22), not {s:?}"
        ))
    })?;
    Ok(date.midnight().assume_utc())
}

/// A time as record times are written (RFC 3339 UTC, microseconds), for messages.
pub(super) fn show(t: OffsetDateTime) -> String {
    let micros = (t.unix_timestamp_nanos() / 1000).max(0);
    crate::audit::chain::format_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

/// The trail's last checkpoint, as `audit verify` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastCheckpoint {
    pub seq: u64,
    /// Its record's `time`.
    pub time: String,
    /// By when the next checkpoint was due; `None` for a v1 checkpoint.
    pub next_due: Option<String>,
    /// Where it is.
    pub file: String,
    pub line: u64,
}

impl LastCheckpoint {
    /// Overwrites `self` in place (no allocation once the strings have grown).
    pub(super) fn set(&mut self, seq: u64, time: &str, next_due: Option<&str>, file: &str, line: u64) {
        self.seq = seq;
        self.line = line;
        for (to, from) in [(&mut self.time, time), (&mut self.file, file)] {
            if to != from {
                to.clear();
                to.push_str(from);
            }
        }
        match (&mut self.next_due, next_due) {
            (Some(to), Some(from)) => {
                to.clear();
                to.push_str(from);
            }
            (to, from) => *to = from.map(str::to_owned),
        }
    }

    /// Until when the trail shows the gateway ran: `next_due`, or a v1 checkpoint's `time`.
    pub fn shows_until(&self) -> &str {
        self.next_due.as_deref().unwrap_or(&self.time)
    }
}

impl fmt::Display for LastCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {} at {}", self.seq, self.time)?;
        match &self.next_due {
            Some(due) => write!(f, ", the next due by {due}"),
            None => write!(f, " (v1: no next_due, and its time is not signed)"),
        }
    }
}

/// The record at a witness's `seq` has been read: it must be the witnessed checkpoint.
pub(super) fn check_witnessed(w: &Witness, event: &str, hash: &[u8; 64]) -> Result<(), String> {
    if event != "checkpoint" {
        return Err(format!(
            "the witness saw a checkpoint at seq {} ({}), but this is a {event} record: the trail was rewritten after the witness was taken",
            w.seq, w.time
        ));
    }
    if w.hash.as_bytes() != hash {
        return Err(format!(
            "the witness saw checkpoint seq {} ({}) with hash {}…, but this one's differs: the trail was rewritten after the witness was taken",
            w.seq,
            w.time,
            &w.hash[..16]
        ));
    }
    Ok(())
}

/// At the end of a whole trail: the lowest witness it never reached.
pub(super) fn check_reached(unreached: Option<&Witness>, last_seq: u64) -> Result<(), VerifyError> {
    match unreached {
        Some(w) => Err(VerifyError::Cut(format!(
            "the trail ends at seq {last_seq}, before checkpoint seq {} that the witness saw at {}: it was cut short after the witness was taken (files deleted?)",
            w.seq, w.time
        ))),
        None => Ok(()),
    }
}

/// At the end of a whole trail: does its last checkpoint show the gateway ran until `until`?
pub(super) fn check_until(until: Option<OffsetDateTime>, last: Option<&LastCheckpoint>) -> Result<(), VerifyError> {
    let Some(until) = until else {
        return Ok(());
    };
    let Some(last) = last else {
        return Err(VerifyError::Cut(format!(
            "the trail holds no checkpoint, so nothing shows it ran until {} (--expect-until)",
            show(until)
        )));
    };
    let shows = OffsetDateTime::parse(last.shows_until(), &Rfc3339).map_err(|_| {
        VerifyError::Cut(format!(
            "the last checkpoint (seq {}, {}) has a time that is not RFC 3339: {:?}",
            last.seq,
            last.file,
            last.shows_until()
        ))
    })?;
    if shows >= until {
        return Ok(());
    }
    let promise = match &last.next_due {
        Some(due) => format!("promised the next by {due}"),
        None => format!("was written at {} (v1: no next_due)", last.time),
    };
    Err(VerifyError::Cut(format!(
        "the trail stops before {} (--expect-until): its last checkpoint, seq {} in {} line {}, {promise} and no later one exists, so its newest records are missing (files deleted?) or the gateway stopped then",
        show(until),
        last.seq,
        last.file,
        last.line
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(next_due: Option<&str>) -> LastCheckpoint {
        let mut c = LastCheckpoint::default();
        c.set(
            7,
            "2026-11-22T05:00:00.000000Z",
            next_due,
            "audit-000000000001.jsonl",
            7,
        );
        c
    }

    fn until(s: &str) -> Option<OffsetDateTime> {
        Some(parse_until(s).unwrap())
    }

    #[test]
    fn until_is_rfc3339_or_the_first_instant_of_a_date() {
        assert_eq!(show(parse_until("2026-11-22").unwrap()), "2026-11-22T00:00:00.000000Z");
        assert_eq!(
            show(parse_until("2026-11-22T06:00:00.5+01:00").unwrap()),
            "2026-11-22T05:00:00.500000Z"
        );
        let e = parse_until("yesterday").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--expect-until"), "{e}");
    }

    #[test]
    fn next_due_before_the_expected_time_is_a_cut() {
        let v2 = last(Some("2026-11-22T05:01:00.000000Z"));
        assert!(check_until(None, Some(&v2)).is_ok());
        assert!(check_until(until("2026-11-22T05:01:00Z"), Some(&v2)).is_ok());
        let e = check_until(until("2026-11-22T05:01:00.000001Z"), Some(&v2)).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        let text = e.to_string();
        assert!(
            text.starts_with("cut short: the trail stops before 2026-11-22T05:01:00.000001Z"),
            "{text}"
        );
        assert!(text.contains("seq 7 in audit-000000000001.jsonl line 7"), "{text}");
        assert!(
            text.contains("promised the next by 2026-11-22T05:01:00.000000Z"),
            "{text}"
        );
    }

    #[test]
    fn a_v1_checkpoint_stands_for_its_time() {
        let v1 = last(None);
        assert_eq!(v1.shows_until(), "2026-11-22T05:00:00.000000Z");
        assert!(check_until(until("2026-11-22T05:00:00Z"), Some(&v1)).is_ok());
        let e = check_until(until("2026-11-22T05:00:01Z"), Some(&v1)).unwrap_err();
        assert!(e.to_string().contains("(v1: no next_due)"), "{e}");
        assert!(v1.to_string().contains("v1"));
    }

    #[test]
    fn no_checkpoint_shows_nothing() {
        assert!(check_until(None, None).is_ok());
        let e = check_until(until("2026-11-22"), None).unwrap_err();
        assert!(e.to_string().contains("holds no checkpoint"), "{e}");
    }

    #[test]
    fn set_reuses_and_replaces() {
        let mut c = last(Some("2026-11-22T05:01:00.000000Z"));
        c.set(9, "2026-11-22T05:00:09.000000Z", None, "audit-000000000008.jsonl", 2);
        assert_eq!(
            c,
            LastCheckpoint {
                seq: 9,
                time: "2026-11-22T05:00:09.000000Z".into(),
                next_due: None,
                file: "audit-000000000008.jsonl".into(),
                line: 2,
            }
        );
    }
}
