//! The join: access records that match wait for their `complete` record, then leave as rows.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::filters::{matches, Envelope};
use super::{Filters, QueryError};
use crate::audit::read::{self, Item, Lines};
use crate::audit::record::{Access, Client, Clinical, Complete, Request, Word};

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
}

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
                client_request_id: None,
                client: self.client,
                request: self.request,
                route: self.route,
                class: self.class,
                decision: self.decision,
                reason: self.reason,
                rule: self.rule,
                clinical: self.clinical,
                body_inspected: None,
            },
            complete: None,
        }
    }
}
