//! The join: access records that match wait for their `complete` record, then leave as rows.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::envelope::{line_hash, Envelope, Wanted};
use super::filters::{matches, Patient};
use super::{Filters, QueryError};
use crate::audit::read::{self, Item, Lines};
use crate::audit::record::{Access, BreakGlass, Client, Clinical, Complete, Request, TlsRejected, Word};

/// Pending rows beyond this are emitted without their completion, oldest first: a ceiling on
/// memory should a trail hold far more unfinished requests than any gateway has in flight.
const MAX_PENDING: usize = 100_000;

/// One request: its access record, joined with its completion when there is one.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub seq: u64,
    pub time: String,
    #[serde(flatten)]
    pub access: Access,
    /// `None` when the trail holds no completion (the gateway stopped mid-request).
    pub complete: Option<Complete>,
    /// Where the row came from, for export: [`for_each_entry`] fills it, [`for_each_row`]
    /// (query) leaves it `None` and spends nothing on it.
    #[serde(skip)]
    pub provenance: Option<Provenance>,
}

/// The records behind a row, as an AuditEvent needs them.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The access record's `hash` (unique in the trail and beyond): the AuditEvent's id.
    pub hash: String,
    /// The `time` of the completion record, when there is one.
    pub completed: Option<String>,
}

/// What `audit export --all-events` reads besides requests.
// Rows pass straight through to the writer: boxing them would cost an allocation per row.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Entry {
    Request(Row),
    /// A record of the gateway itself or of a refused handshake.
    System(SystemRecord),
}

/// A `tls_rejected` or `lifecycle` record.
#[derive(Debug, Clone)]
pub struct SystemRecord {
    pub seq: u64,
    pub time: String,
    pub hash: String,
    pub event: SystemEvent,
}

#[derive(Debug, Clone)]
pub enum SystemEvent {
    TlsRejected(TlsRejected),
    Lifecycle(LifecycleLine),
}

/// A `lifecycle` record as read back: `instance` is written from SPEC §8 on.
#[derive(Debug, Clone, Deserialize)]
pub struct LifecycleLine {
    pub action: String,
    #[serde(default)]
    pub config_sha256: Option<String>,
    #[serde(default)]
    pub instance: Option<String>,
}

/// Streams the trail and calls `emit` once per matching request. Shared by query and export.
pub fn for_each_row(
    dir: &Path,
    filters: &Filters,
    emit: impl FnMut(Row) -> Result<(), QueryError>,
) -> Result<u64, QueryError> {
    stream(dir, filters, &mut Rows(emit))
}

/// Streams the trail and calls `emit` once per matching request (with its [`Provenance`])
/// and, with `system`, once per `tls_rejected` and `lifecycle` record within the time bounds
/// (when no filter but those is given: the others name requests). A `lifecycle` `start`
/// comes after the rows it cut off.
pub fn for_each_entry(
    dir: &Path,
    filters: &Filters,
    system: bool,
    emit: impl FnMut(Entry) -> Result<(), QueryError>,
) -> Result<u64, QueryError> {
    let system = system && !filters.names_requests();
    stream(dir, filters, &mut Entries { emit, system })
}

/// Where the stream goes: rows alone (query, at full speed), or entries (export).
trait Sink {
    /// Whether rows carry their [`Provenance`].
    const PROVENANCE: bool;
    /// Whether `tls_rejected` and `lifecycle` records are wanted.
    fn system(&self) -> bool;
    fn row(&mut self, row: Row) -> Result<(), QueryError>;
    fn record(&mut self, record: SystemRecord) -> Result<(), QueryError>;
}

struct Rows<F>(F);

impl<F: FnMut(Row) -> Result<(), QueryError>> Sink for Rows<F> {
    const PROVENANCE: bool = false;
    fn system(&self) -> bool {
        false
    }
    fn row(&mut self, row: Row) -> Result<(), QueryError> {
        (self.0)(row)
    }
    fn record(&mut self, _: SystemRecord) -> Result<(), QueryError> {
        Ok(())
    }
}

struct Entries<F> {
    emit: F,
    system: bool,
}

impl<F: FnMut(Entry) -> Result<(), QueryError>> Sink for Entries<F> {
    const PROVENANCE: bool = true;
    fn system(&self) -> bool {
        self.system
    }
    fn row(&mut self, row: Row) -> Result<(), QueryError> {
        (self.emit)(Entry::Request(row))
    }
    fn record(&mut self, record: SystemRecord) -> Result<(), QueryError> {
        (self.emit)(Entry::System(record))
    }
}

fn stream<S: Sink>(dir: &Path, filters: &Filters, sink: &mut S) -> Result<u64, QueryError> {
    let patient = filters.patient.as_deref().map(Patient::new);
    let wanted = Wanted {
        patient: patient.as_ref(),
        study: filters.study.as_deref(),
        client_request_id: filters.client_request_id.as_deref(),
    };
    let mut lines = Lines::new(read::list_files(dir)?);
    // request_id → seq, and seq → row: the second orders rows for eviction and flushing.
    let mut pending_ids: HashMap<Arc<str>, u64> = HashMap::new();
    let mut pending: BTreeMap<u64, Row> = BTreeMap::new();
    let mut emitted = 0u64;
    // Emits every pending row, oldest first, without a completion.
    fn flush_all<S: Sink>(
        pending: &mut BTreeMap<u64, Row>,
        ids: &mut HashMap<Arc<str>, u64>,
        emitted: &mut u64,
        sink: &mut S,
    ) -> Result<(), QueryError> {
        ids.clear();
        while let Some((_, row)) = pending.pop_first() {
            *emitted += 1;
            sink.row(row)?;
        }
        Ok(())
    }

    while let Some(item) = lines.next_item()? {
        let Item::Line { pos, bytes, .. } = item else {
            continue;
        };
        let malformed = |why: String| QueryError::Malformed {
            file: pos.file.name.clone(),
            line: pos.line,
            why,
        };
        let env = Envelope::read(bytes, wanted).map_err(|e| malformed(format!("not an audit record: {e}")))?;
        match &*env.event.0 {
            "access" => {
                if !matches(&env, filters).map_err(malformed)? {
                    continue;
                }
                let line: AccessLine =
                    serde_json::from_slice(bytes).map_err(|e| malformed(format!("not an access record: {e}")))?;
                let mut row = line.into_row(env.seq);
                if S::PROVENANCE {
                    row.provenance = Some(Provenance {
                        hash: line_hash(bytes).unwrap_or_default().to_string(),
                        completed: None,
                    });
                }
                // Joined by caregate's own request_id only, never the client's.
                if let Some(old) = pending_ids.insert(row.access.request_id.clone(), row.seq) {
                    // A reused request_id: emit the earlier one rather than lose it.
                    if let Some(old) = pending.remove(&old) {
                        emitted += 1;
                        sink.row(old)?;
                    }
                }
                pending.insert(row.seq, row);
                if pending.len() > MAX_PENDING {
                    if let Some((_, oldest)) = pending.pop_first() {
                        pending_ids.remove(&oldest.access.request_id);
                        emitted += 1;
                        sink.row(oldest)?;
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
                    if let Some(p) = &mut row.provenance {
                        p.completed = Some(String::from(&*env.time));
                    }
                    emitted += 1;
                    sink.row(row)?;
                }
            }
            "lifecycle" | "tls_rejected" => {
                // A gateway (re)start: whatever is pending was cut off by a crash and never completes.
                if env.action.as_deref() == Some("start") {
                    flush_all(&mut pending, &mut pending_ids, &mut emitted, sink)?;
                }
                if sink.system() && matches(&env, filters).map_err(malformed)? {
                    let event = if &*env.event == "lifecycle" {
                        serde_json::from_slice(bytes).map(SystemEvent::Lifecycle)
                    } else {
                        serde_json::from_slice(bytes).map(SystemEvent::TlsRejected)
                    };
                    let event = event.map_err(|e| malformed(format!("not a {} record: {e}", &*env.event)))?;
                    emitted += 1;
                    sink.record(SystemRecord {
                        seq: env.seq,
                        time: String::from(&*env.time),
                        hash: line_hash(bytes).unwrap_or_default().to_string(),
                        event,
                    })?;
                }
            }
            _ => {}
        }
    }
    flush_all(&mut pending, &mut pending_ids, &mut emitted, sink)?;
    Ok(emitted)
}

/// The row of an access line and its completion's line, as [`for_each_row`] makes it (for
/// `audit query --db`, which finds the lines through the index).
pub fn row_from_lines(access: &[u8], seq: u64, complete: Option<&[u8]>) -> Result<Row, String> {
    let line: AccessLine = serde_json::from_slice(access).map_err(|e| format!("not an access record: {e}"))?;
    let mut row = line.into_row(seq);
    if let Some(c) = complete {
        row.complete = Some(serde_json::from_slice(c).map_err(|e| format!("not a complete record: {e}"))?);
    }
    Ok(row)
}

/// A matching access record, owned, as it is kept and emitted. Spelled out rather than
/// `#[serde(flatten)] Access`: flatten buffers the whole record first and is several times slower.
#[derive(Deserialize)]
struct AccessLine {
    time: String,
    request_id: Arc<str>,
    #[serde(default)]
    client_request_id: Option<String>,
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
    break_glass: Option<BreakGlass>,
    #[serde(default)]
    clinical: Clinical,
    #[serde(default)]
    body_inspected: Option<bool>,
}

impl AccessLine {
    fn into_row(self, seq: u64) -> Row {
        Row {
            seq,
            time: self.time,
            access: Access {
                request_id: self.request_id,
                client_request_id: self.client_request_id,
                client: self.client,
                request: self.request,
                route: self.route,
                class: self.class,
                decision: self.decision,
                reason: self.reason,
                rule: self.rule,
                break_glass: self.break_glass,
                clinical: self.clinical,
                body_inspected: self.body_inspected,
            },
            complete: None,
            provenance: None,
        }
    }
}
