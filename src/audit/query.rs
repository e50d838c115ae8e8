//! `caregate audit query`: "who saw patient X", "what did org Y do" — one row per request, the
//! `access` record joined with its `complete` record.
//!
//! The trail is streamed once. A matching access record waits in a pending map until its
//! completion arrives (usually a few records later) and is emitted then, so rows come out in
//! completion order and memory holds only matching requests still in flight, however long the
//! trail. Access records that never complete (a crash) are emitted without a status when the
//! gateway's next `lifecycle` `start` shows they never will, or at the end of the trail.
//!
//! Query reads records; it does not check the chain — that is `audit verify`'s job.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Date, Duration, OffsetDateTime};

use super::read::{self, Item, Lines, ReadError};
use super::record::{Access, Client, Clinical, Complete, Request, Word};

/// Pending rows beyond this are emitted without their completion, oldest first: a ceiling on
/// memory should a trail hold far more unfinished requests than any gateway has in flight.
const MAX_PENDING: usize = 100_000;

/// Rows buffered to size the table's columns before streaming the rest at those widths.
const TABLE_SAMPLE: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

impl FromStr for Format {
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Format, QueryError> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            _ => Err(QueryError::BadFilter(format!(
                "--format must be table, json or csv, not {s:?}"
            ))),
        }
    }
}

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
    /// NHS number (spaces are ignored: people write `999 000 0034`).
    pub patient: Option<String>,
    /// DICOM study instance UID.
    pub study: Option<String>,
    /// Route name.
    pub route: Option<String>,
    pub decision: Option<Decision>,
    /// Access time ≥ this. Parse with [`parse_since`].
    pub since: Option<OffsetDateTime>,
    /// Access time < this (exclusive). Parse with [`parse_until`], which makes a date mean the
    /// whole of that day and a timestamp inclusive.
    pub until: Option<OffsetDateTime>,
    pub request_id: Option<String>,
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

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{0}")]
    BadFilter(String),
    #[error("{file} line {line}: {why}")]
    Malformed { file: String, line: u64, why: String },
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl QueryError {
    /// 2 for input that could not be used (folder, filters), 1 for a trail that cannot be read
    /// as records or output that cannot be written.
    pub fn exit_code(&self) -> u8 {
        match self {
            QueryError::Read(_) | QueryError::BadFilter(_) => 2,
            QueryError::Malformed { .. } | QueryError::Output(_) => 1,
        }
    }
}

/// What `caregate audit query DIR [filters] [--format …]` needs.
#[derive(Debug, Clone)]
pub struct QueryArgs {
    pub dir: PathBuf,
    pub filters: Filters,
    pub format: Format,
}

/// One request: its access record, joined with its completion when there is one.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub seq: u64,
    pub time: String,
    #[serde(flatten)]
    pub access: Access,
    /// `None` when the trail holds no completion (the gateway stopped mid-request).
    pub complete: Option<Complete>,
}

/// The command: writes the matching rows to `out` in `args.format`; returns how many.
pub fn run(args: &QueryArgs, out: &mut impl Write) -> Result<u64, QueryError> {
    query(&args.dir, &args.filters, args.format, out)
}

pub fn query(dir: &Path, filters: &Filters, format: Format, out: &mut impl Write) -> Result<u64, QueryError> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let n = match format {
        Format::Json => for_each_row(dir, filters, |row| {
            serde_json::to_writer(&mut out, &row).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            Ok(())
        })?,
        Format::Csv => {
            write_csv_record(&mut out, CSV_COLUMNS.iter().map(|c| Cow::Borrowed(c.0)))?;
            for_each_row(dir, filters, |row| {
                write_csv_record(&mut out, CSV_COLUMNS.iter().map(|c| (c.1)(&row)))?;
                Ok(())
            })?
        }
        Format::Table => {
            let mut table = Table::default();
            let n = for_each_row(dir, filters, |row| table.push(&mut out, row))?;
            table.finish(&mut out)?;
            n
        }
    };
    out.flush()?;
    Ok(n)
}

// === the join ===

/// Streams the trail and calls `emit` once per matching request. Shared by query and export.
pub fn for_each_row(
    dir: &Path,
    filters: &Filters,
    mut emit: impl FnMut(Row) -> Result<(), QueryError>,
) -> Result<u64, QueryError> {
    let patient: Option<String> = filters
        .patient
        .as_ref()
        .map(|p| p.chars().filter(|c| !c.is_whitespace()).collect());
    let mut lines = Lines::new(read::list_files(dir)?);
    // request_id → seq, and seq → row: the second orders rows for eviction and flushing.
    let mut pending_ids: HashMap<Arc<str>, u64> = HashMap::new();
    let mut pending: BTreeMap<u64, Row> = BTreeMap::new();
    let mut emitted = 0u64;
    // Emits every pending row, oldest first, without a completion.
    let flush_all = |pending: &mut BTreeMap<u64, Row>,
                     ids: &mut HashMap<Arc<str>, u64>,
                     emitted: &mut u64,
                     emit: &mut dyn FnMut(Row) -> Result<(), QueryError>|
     -> Result<(), QueryError> {
        ids.clear();
        while let Some((_, row)) = pending.pop_first() {
            *emitted += 1;
            emit(row)?;
        }
        Ok(())
    };

    while let Some(item) = lines.next_item()? {
        let Item::Line { pos, bytes, .. } = item else {
            continue;
        };
        let malformed = |why: String| QueryError::Malformed {
            file: pos.file.name.clone(),
            line: pos.line,
            why,
        };
        let env: Envelope<'_> =
            serde_json::from_slice(bytes).map_err(|e| malformed(format!("not an audit record: {e}")))?;
        match &*env.event.0 {
            "access" => {
                if !matches(&env, filters, patient.as_deref()).map_err(malformed)? {
                    continue;
                }
                let line: AccessLine =
                    serde_json::from_slice(bytes).map_err(|e| malformed(format!("not an access record: {e}")))?;
                let row = line.into_row(env.seq);
                if let Some(old) = pending_ids.insert(row.access.request_id.clone(), row.seq) {
                    // A reused request_id: emit the earlier one rather than lose it.
                    if let Some(old) = pending.remove(&old) {
                        emitted += 1;
                        emit(old)?;
                    }
                }
                pending.insert(row.seq, row);
                if pending.len() > MAX_PENDING {
                    if let Some((_, oldest)) = pending.pop_first() {
                        pending_ids.remove(&oldest.access.request_id);
                        emitted += 1;
                        emit(oldest)?;
                    }
                }
            }
            "complete" => {
                let Some(id) = &env.request_id else {
                    return Err(malformed("complete record without request_id".into()));
                };
                let Some(seq) = pending_ids.remove(&*id.0) else {
                    continue;
                };
                let complete: Complete =
                    serde_json::from_slice(bytes).map_err(|e| malformed(format!("not a complete record: {e}")))?;
                if let Some(mut row) = pending.remove(&seq) {
                    row.complete = Some(complete);
                    emitted += 1;
                    emit(row)?;
                }
            }
            // A gateway (re)start: whatever is pending was cut off by a crash and never completes.
            "lifecycle" if env.action.as_deref() == Some("start") => {
                flush_all(&mut pending, &mut pending_ids, &mut emitted, &mut emit)?
            }
            _ => {}
        }
    }
    flush_all(&mut pending, &mut pending_ids, &mut emitted, &mut emit)?;
    Ok(emitted)
}

fn matches(env: &Envelope<'_>, f: &Filters, patient: Option<&str>) -> Result<bool, String> {
    fn eq(want: &Option<String>, have: Option<&Str<'_>>) -> bool {
        want.as_deref().is_none_or(|w| have.is_some_and(|h| *h.0 == *w))
    }
    let client_org = env.client.as_ref().and_then(|c| c.org.as_ref());
    let clinical = env.clinical.as_ref();
    let ok = eq(&f.org, client_org)
        && eq(&f.route, env.route.as_ref())
        && eq(&f.request_id, env.request_id.as_ref())
        && eq(&f.study, clinical.and_then(|c| c.study_uid.as_ref()))
        && patient.is_none_or(|p| clinical.and_then(|c| c.nhs_number.as_ref()).is_some_and(|n| *n.0 == *p))
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
struct Str<'a>(Cow<'a, str>);

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
struct Envelope<'a> {
    seq: u64,
    #[serde(borrow)]
    time: Str<'a>,
    #[serde(borrow)]
    event: Str<'a>,
    #[serde(borrow, default)]
    request_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    route: Option<Str<'a>>,
    #[serde(borrow, default)]
    decision: Option<Str<'a>>,
    #[serde(borrow, default)]
    action: Option<Str<'a>>,
    #[serde(borrow, default)]
    client: Option<EnvClient<'a>>,
    #[serde(borrow, default)]
    clinical: Option<EnvClinical<'a>>,
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
    study_uid: Option<Str<'a>>,
}

/// A matching access record, owned, as it is kept and emitted. Spelled out rather than
/// `#[serde(flatten)] Access`: flatten buffers the whole record first and is several times slower.
#[derive(Deserialize)]
struct AccessLine {
    time: String,
    request_id: Arc<str>,
    client: Client,
    request: Request,
    #[serde(default)]
    route: Option<Arc<str>>,
    #[serde(default)]
    class: Option<Word>,
    decision: Word,
    reason: Word,
    #[serde(default)]
    rule: Option<Arc<str>>,
    #[serde(default)]
    clinical: Clinical,
}

impl AccessLine {
    fn into_row(self, seq: u64) -> Row {
        Row {
            seq,
            time: self.time,
            access: Access {
                request_id: self.request_id,
                client: self.client,
                request: self.request,
                route: self.route,
                class: self.class,
                decision: self.decision,
                reason: self.reason,
                rule: self.rule,
                clinical: self.clinical,
            },
            complete: None,
        }
    }
}

// === output ===

type Column = (&'static str, fn(&Row) -> Cow<'_, str>);

fn opt<T: AsRef<str>>(s: &Option<T>) -> Cow<'_, str> {
    Cow::Borrowed(s.as_ref().map_or("", |s| s.as_ref()))
}

fn num(n: Option<impl ToString>) -> Cow<'static, str> {
    n.map_or(Cow::Borrowed(""), |n| Cow::Owned(n.to_string()))
}

/// The table's columns: what an auditor scans for.
const TABLE_COLUMNS: &[Column] = &[
    ("time", |r| Cow::Borrowed(&r.time)),
    ("request_id", |r| Cow::Borrowed(&r.access.request_id)),
    ("org", |r| opt(&r.access.client.org)),
    ("org_name", |r| opt(&r.access.client.org_name)),
    ("method", |r| Cow::Borrowed(&r.access.request.method)),
    ("path", |r| Cow::Borrowed(&r.access.request.path)),
    ("route", |r| opt(&r.access.route)),
    ("decision", |r| Cow::Borrowed(&r.access.decision)),
    ("reason", |r| Cow::Borrowed(&r.access.reason)),
    ("status", |r| num(r.complete.as_ref().map(|c| c.status))),
    ("outcome", |r| {
        Cow::Borrowed(r.complete.as_ref().map_or("", |c| &c.outcome))
    }),
    ("nhs_number", |r| opt(&r.access.clinical.nhs_number)),
    ("study_uid", |r| opt(&r.access.clinical.study_uid)),
];

/// CSV is for spreadsheets and scripts: the table's columns and the rest of the record.
const CSV_COLUMNS: &[Column] = &[
    ("time", |r| Cow::Borrowed(&r.time)),
    ("seq", |r| Cow::Owned(r.seq.to_string())),
    ("request_id", |r| Cow::Borrowed(&r.access.request_id)),
    ("org", |r| opt(&r.access.client.org)),
    ("org_name", |r| opt(&r.access.client.org_name)),
    ("subject", |r| opt(&r.access.client.subject)),
    ("ip", |r| Cow::Borrowed(&r.access.client.ip)),
    ("method", |r| Cow::Borrowed(&r.access.request.method)),
    ("host", |r| opt(&r.access.request.host)),
    ("path", |r| Cow::Borrowed(&r.access.request.path)),
    ("query", |r| opt(&r.access.request.query)),
    ("route", |r| opt(&r.access.route)),
    ("class", |r| opt(&r.access.class)),
    ("decision", |r| Cow::Borrowed(&r.access.decision)),
    ("reason", |r| Cow::Borrowed(&r.access.reason)),
    ("rule", |r| opt(&r.access.rule)),
    ("status", |r| num(r.complete.as_ref().map(|c| c.status))),
    ("outcome", |r| {
        Cow::Borrowed(r.complete.as_ref().map_or("", |c| &c.outcome))
    }),
    ("bytes_in", |r| num(r.complete.as_ref().map(|c| c.bytes_in))),
    ("bytes_out", |r| num(r.complete.as_ref().map(|c| c.bytes_out))),
    ("duration_ms", |r| num(r.complete.as_ref().map(|c| c.duration_ms))),
    ("nhs_number", |r| opt(&r.access.clinical.nhs_number)),
    ("study_uid", |r| opt(&r.access.clinical.study_uid)),
    ("fhir_type", |r| opt(&r.access.clinical.fhir_type)),
    ("fhir_id", |r| opt(&r.access.clinical.fhir_id)),
    ("interaction", |r| opt(&r.access.clinical.interaction)),
];

/// One RFC 4180 record: fields with a comma, quote, CR or LF are quoted, quotes doubled; CRLF
/// line ends as the RFC says.
fn write_csv_record<'a>(out: &mut impl Write, fields: impl Iterator<Item = Cow<'a, str>>) -> std::io::Result<()> {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        if field.contains([',', '"', '\r', '\n']) {
            out.write_all(b"\"")?;
            out.write_all(field.replace('"', "\"\"").as_bytes())?;
            out.write_all(b"\"")?;
        } else {
            out.write_all(field.as_bytes())?;
        }
    }
    out.write_all(b"\r\n")
}

/// Aligned columns without holding the whole result: widths come from the first
/// [`TABLE_SAMPLE`] rows; a longer value later just pushes its line out.
#[derive(Default)]
struct Table {
    sample: Vec<Vec<String>>,
    widths: Option<Vec<usize>>,
}

/// No column wider than this from the sample: one long path should not push every line wide.
const MAX_WIDTH: usize = 48;

impl Table {
    fn push(&mut self, out: &mut impl Write, row: Row) -> Result<(), QueryError> {
        let cells: Vec<String> = TABLE_COLUMNS.iter().map(|c| clean((c.1)(&row))).collect();
        match &self.widths {
            Some(w) => write_table_line(out, w, &cells)?,
            None => {
                self.sample.push(cells);
                if self.sample.len() >= TABLE_SAMPLE {
                    self.finish(out)?;
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if self.widths.is_some() {
            return Ok(());
        }
        let mut widths: Vec<usize> = TABLE_COLUMNS.iter().map(|c| c.0.len()).collect();
        for cells in &self.sample {
            for (w, cell) in widths.iter_mut().zip(cells) {
                *w = (*w).max(cell.chars().count().min(MAX_WIDTH));
            }
        }
        let header: Vec<String> = TABLE_COLUMNS.iter().map(|c| c.0.to_string()).collect();
        write_table_line(out, &widths, &header)?;
        for cells in self.sample.drain(..) {
            write_table_line(out, &widths, &cells)?;
        }
        self.widths = Some(widths);
        Ok(())
    }
}

/// Control characters would break the layout (and could forge lines on a terminal).
fn clean(s: Cow<'_, str>) -> String {
    let s = if s.is_empty() { Cow::Borrowed("-") } else { s };
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn write_table_line(out: &mut impl Write, widths: &[usize], cells: &[String]) -> std::io::Result<()> {
    let last = cells.len().saturating_sub(1);
    for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
        if i == last {
            writeln!(out, "{cell}")?;
        } else {
            write!(out, "{cell:<w$}  ")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_per_rfc4180() {
        let mut out = Vec::new();
        let fields = ["a", "b,c", "say \"hi\"", "x\ny", ""];
        write_csv_record(&mut out, fields.iter().map(|f| Cow::Borrowed(*f))).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a,\"b,c\",\"say \"\"hi\"\"\",\"x\ny\",\r\n"
        );
    }

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
