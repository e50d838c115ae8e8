//! One record line → its place in the chain checked → its rows. Shared by the indexer and by
//! `--check`, so the rows it compares are made exactly as they were written.

use std::collections::HashMap;

use ring::digest;
use serde::Deserialize;

use super::{Batch, Broken, Completion, EventRow, Hash, Location, Micros, Position, RequestRow};

const HASH_KEY: &[u8] = b",\"hash\":\"";
/// `,"hash":"` + 64 hex + `"}`.
const HASH_TAIL: usize = HASH_KEY.len() + 64 + 2;

/// A request waiting for its completion: in the batch being built, or already written.
#[derive(Debug, Clone, Copy)]
enum Pending {
    InBatch(usize),
    Stored(u64),
}

pub(super) struct Parser {
    position: Position,
    /// By caregate's own request id (never the client's), as `audit query` joins.
    pending: HashMap<String, Pending>,
    batch: Batch,
    records: usize,
    /// Requests written without a completion that never comes (a gateway restart cut them off).
    pub(super) abandoned: Vec<u64>,
}

impl Parser {
    /// Continues after `position`, with the requests still waiting for their completion.
    pub(super) fn resume(position: &Position, open: Vec<(String, u64)>) -> Parser {
        Parser {
            position: Position {
                broken: None,
                ..position.clone()
            },
            pending: open.into_iter().map(|(id, seq)| (id, Pending::Stored(seq))).collect(),
            batch: Batch::default(),
            records: 0,
            abandoned: Vec::new(),
        }
    }

    pub(super) fn position(&self) -> &Position {
        &self.position
    }

    /// Records in the batch being built.
    pub(super) fn batch_len(&self) -> usize {
        self.records
    }

    /// The batch built so far, with the position after it; the next starts empty.
    pub(super) fn take_batch(&mut self) -> Batch {
        for p in self.pending.values_mut() {
            if let Pending::InBatch(i) = *p {
                *p = Pending::Stored(self.batch.requests[i].seq);
            }
        }
        self.records = 0;
        let mut batch = std::mem::take(&mut self.batch);
        batch.position = self.position.clone();
        batch
    }

    /// Takes one line (without its `\n`) that starts at `at`. A line that does not continue the
    /// chain is returned as the break, and nothing of it is taken.
    pub(super) fn line(&mut self, at: Location, file: &str, line_no: u64, bytes: &[u8]) -> Result<(), Broken> {
        let expected = self.position.last_seq + 1;
        let broken = |seq: u64, message: String| Broken {
            seq,
            file: file.to_string(),
            line: line_no,
            message,
        };
        let Some(body_end) = hash_tail(bytes) else {
            return Err(broken(expected, "line does not end with a \"hash\" member".into()));
        };
        // A record whose members are not what this version expects (a later writer's) is still
        // in the chain: it is checked and kept as an event, read generically.
        let (rec, typed) = match serde_json::from_slice::<Rec<'_>>(bytes) {
            Ok(r) => (r, true),
            Err(e) => match serde_json::from_slice::<Head<'_>>(bytes) {
                Ok(h) => (h.into_rec(), false),
                Err(_) => return Err(broken(expected, format!("line is not a valid record: {e}"))),
            },
        };
        let seq = rec.seq;
        if seq != expected {
            return Err(broken(
                seq,
                format!("expected seq {expected}, found {seq}: records missing, out of order or inserted"),
            ));
        }
        if at.offset == 0 && at.file != seq {
            return Err(broken(
                seq,
                format!(
                    "the file's name says it starts at seq {}, but its first record has seq {seq}",
                    at.file
                ),
            ));
        }
        let last_hex = self.position.last_hash.to_hex();
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(last_hex.as_bytes());
        ctx.update(b"\n");
        ctx.update(&bytes[..body_end]);
        ctx.update(b"}");
        let computed = ctx.finish();
        let stated = Hash::from_hex(&bytes[body_end + HASH_KEY.len()..bytes.len() - 2]);
        if stated.map(|h| h.0) != Some(computed.as_ref().try_into().unwrap_or([0; 32])) {
            return Err(broken(
                seq,
                "hash does not match the record's content: the record was altered".into(),
            ));
        }
        let hash = stated.unwrap_or_default();
        if rec.prev.as_bytes() != last_hex.as_bytes() {
            return Err(broken(
                seq,
                format!("prev does not match the hash of the record before it (seq {})", seq - 1),
            ));
        }
        if rec.event == "checkpoint" && rec.chain_head != Some(last_hex.as_str()) {
            return Err(broken(
                seq,
                "checkpoint chain_head is not the hash of the record before it".into(),
            ));
        }
        let time = parse_time(rec.time).ok_or_else(|| broken(seq, format!("bad time {:?}", rec.time)))?;

        if typed {
            self.rows(rec, bytes, hash, time, at);
        } else {
            let row = event_row(rec.event, bytes, seq, hash, time, at, None);
            self.batch.events.push(row);
        }
        self.records += 1;
        self.position.last_seq = seq;
        self.position.last_hash = hash;
        self.position.last_time = time;
        self.position.next = Location {
            file: at.file,
            offset: at.offset + bytes.len() as u64 + 1,
        };
        Ok(())
    }

    fn rows(&mut self, rec: Rec<'_>, bytes: &[u8], hash: Hash, time: Micros, at: Location) {
        let seq = rec.seq;
        match rec.event {
            "access" => {
                let client = rec.client.unwrap_or_default();
                let request = rec.request.unwrap_or_default();
                let clinical = rec.clinical.unwrap_or_default();
                let mut nhs_numbers = clinical.nhs_numbers;
                if nhs_numbers.is_empty() {
                    nhs_numbers.extend(clinical.nhs_number);
                }
                let mut study_uids = clinical.study_uids;
                if study_uids.is_empty() {
                    study_uids.extend(clinical.study_uid.clone());
                }
                let row = RequestRow {
                    seq,
                    hash,
                    time,
                    at,
                    request_id: rec.request_id.unwrap_or_default(),
                    client_request_id: rec.client_request_id,
                    org: client.org,
                    org_name: client.org_name,
                    fingerprint: client.fingerprint,
                    ip: client.ip.unwrap_or_default(),
                    method: request.method.unwrap_or_default(),
                    host: request.host,
                    path: request.path.unwrap_or_default(),
                    query: request.query,
                    route: rec.route,
                    class: rec.class,
                    decision: rec.decision.unwrap_or_default(),
                    reason: rec.reason.unwrap_or_default(),
                    rule: rec.rule,
                    fhir_type: clinical.fhir_type,
                    study_uid: study_uids.first().cloned(),
                    break_glass_reason: rec.break_glass.and_then(|b| b.reason),
                    nhs_numbers,
                    patient_ids: clinical.patient_ids,
                    study_uids,
                    complete: None,
                };
                let index = self.batch.requests.len();
                if let Some(old) = self.pending.insert(row.request_id.clone(), Pending::InBatch(index)) {
                    // A reused request_id: the earlier request keeps no completion.
                    self.abandon(old);
                }
                self.batch.requests.push(row);
            }
            "complete" if rec.request_id.as_ref().is_some_and(|id| self.pending.contains_key(id)) => {
                let id = rec.request_id.unwrap_or_default();
                let completion = Completion {
                    seq,
                    hash,
                    time,
                    at,
                    status: rec.status.unwrap_or(0),
                    outcome: rec.outcome.unwrap_or_default(),
                    bytes_in: rec.bytes_in.unwrap_or(0),
                    bytes_out: rec.bytes_out.unwrap_or(0),
                    duration_ms: rec.duration_ms.unwrap_or(0),
                };
                match self.pending.remove(&id) {
                    Some(Pending::InBatch(i)) => self.batch.requests[i].complete = Some(completion),
                    Some(Pending::Stored(access)) => self.batch.completions.push((access, completion)),
                    None => {}
                }
            }
            event => {
                if event == "lifecycle" && rec.action.as_deref() == Some("start") {
                    // A (re)start: requests still waiting were cut off and never complete.
                    for (_, p) in std::mem::take(&mut self.pending) {
                        self.abandon(p);
                    }
                }
                let row = event_row(event, bytes, seq, hash, time, at, rec.request_id);
                self.batch.events.push(row);
            }
        }
    }

    fn abandon(&mut self, p: Pending) {
        let seq = match p {
            Pending::InBatch(i) => self.batch.requests[i].seq,
            Pending::Stored(s) => s,
        };
        self.abandoned.push(seq);
    }

    /// Requests still waiting for a completion, by access seq (for `--check`).
    pub(super) fn waiting(&self) -> impl Iterator<Item = u64> + '_ {
        self.pending.values().filter_map(|p| match p {
            Pending::Stored(s) => Some(*s),
            Pending::InBatch(_) => None,
        })
    }
}

/// The columns of any record other than an access and its completion. Read generically: these
/// are rare, and their kinds grow (`audit_access`, ...).
fn event_row(
    event: &str,
    bytes: &[u8],
    seq: u64,
    hash: Hash,
    time: Micros,
    at: Location,
    request_id: Option<String>,
) -> EventRow {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let detail = if event == "complete" {
        request_id
    } else {
        ["reasons", "filters"]
            .iter()
            .find_map(|k| v.get(*k))
            .map(|d| d.to_string())
    };
    EventRow {
        seq,
        hash,
        time,
        at,
        event: event.to_string(),
        org: text(&v["org"]).or_else(|| text(&v["client"]["org"])),
        ip: text(&v["ip"]).or_else(|| text(&v["client"]["ip"])),
        reason: text(&v["reason"]),
        count: v["count"].as_u64().or_else(|| v["rows"].as_u64()),
        action: text(&v["action"]),
        next_due: v["next_due"].as_str().and_then(parse_time),
        detail,
    }
}

/// Index where `,"hash":"<64 lowercase hex>"}` starts, if the line ends so.
fn hash_tail(line: &[u8]) -> Option<usize> {
    if line.len() < HASH_TAIL + 2 || !line.ends_with(b"\"}") {
        return None;
    }
    let start = line.len() - HASH_TAIL;
    let hex = &line[start + HASH_KEY.len()..line.len() - 2];
    let ok = line[start..].starts_with(HASH_KEY) && hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then_some(start)
}

/// A record time (`2026-11-22T05:08:59.123456Z`, as the writer writes them) in microseconds;
/// any other RFC 3339 form through the `time` crate.
pub(super) fn parse_time(s: &str) -> Option<Micros> {
    let b = s.as_bytes();
    let fixed = b.len() == 27
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[26] == b'Z';
    if fixed {
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            b[r].iter()
                .try_fold(0i64, |n, &d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0')))
        };
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hh, mm, ss, us) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?);
        if (1..=12).contains(&m) && (1..=31).contains(&d) && hh < 24 && mm < 60 && ss < 61 {
            let days = days_from_civil(y, m, d);
            return Some(((days * 24 + hh) * 60 + mm) * 60_000_000 + ss * 1_000_000 + us);
        }
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1000)).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What the index reads of a record. Unknown members are skipped; the other kinds' members are
/// read by [`event_row`].
#[derive(Deserialize)]
struct Rec<'a> {
    seq: u64,
    #[serde(borrow)]
    time: &'a str,
    #[serde(borrow)]
    event: &'a str,
    #[serde(borrow)]
    prev: &'a str,
    #[serde(borrow, default)]
    chain_head: Option<&'a str>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    client_request_id: Option<String>,
    #[serde(default)]
    client: Option<RecClient>,
    #[serde(default)]
    request: Option<RecRequest>,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    class: Option<String>,
    #[serde(default)]
    decision: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    clinical: Option<RecClinical>,
    #[serde(default)]
    break_glass: Option<RecBreakGlass>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    bytes_in: Option<u64>,
    #[serde(default)]
    bytes_out: Option<u64>,
    #[serde(default)]
    duration_ms: Option<u64>,
    #[serde(default)]
    outcome: Option<String>,
}

/// What every record has: enough to check the chain.
#[derive(Deserialize)]
struct Head<'a> {
    seq: u64,
    #[serde(borrow)]
    time: &'a str,
    #[serde(borrow)]
    event: &'a str,
    #[serde(borrow)]
    prev: &'a str,
    #[serde(borrow, default)]
    chain_head: Option<&'a str>,
}

impl<'a> Head<'a> {
    fn into_rec(self) -> Rec<'a> {
        Rec {
            seq: self.seq,
            time: self.time,
            event: self.event,
            prev: self.prev,
            chain_head: self.chain_head,
            action: None,
            request_id: None,
            client_request_id: None,
            client: None,
            request: None,
            route: None,
            class: None,
            decision: None,
            reason: None,
            rule: None,
            clinical: None,
            break_glass: None,
            status: None,
            bytes_in: None,
            bytes_out: None,
            duration_ms: None,
            outcome: None,
        }
    }
}

#[derive(Deserialize, Default)]
struct RecClient {
    #[serde(default)]
    org: Option<String>,
    #[serde(default)]
    org_name: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
    #[serde(default)]
    ip: Option<String>,
}

#[derive(Deserialize, Default)]
struct RecRequest {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    query: Option<String>,
}

#[derive(Deserialize, Default)]
struct RecClinical {
    #[serde(default)]
    fhir_type: Option<String>,
    #[serde(default)]
    nhs_number: Option<String>,
    #[serde(default)]
    nhs_numbers: Vec<String>,
    #[serde(default)]
    patient_ids: Vec<String>,
    #[serde(default)]
    study_uid: Option<String>,
    #[serde(default)]
    study_uids: Vec<String>,
}

#[derive(Deserialize, Default)]
struct RecBreakGlass {
    #[serde(default)]
    reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_records_keep_what_their_kind_needs() {
        let row = |line: &str| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let event = v["event"].as_str().unwrap().to_string();
            event_row(
                &event,
                line.as_bytes(),
                1,
                Hash::default(),
                0,
                Location::default(),
                None,
            )
        };
        let r = row(
            r#"{"event":"refusals_coalesced","org":"A81001","count":41,"since":"s","until":"u","reasons":{"not_allowed":41}}"#,
        );
        assert_eq!((r.org.as_deref(), r.count), (Some("A81001"), Some(41)));
        assert_eq!(r.detail.as_deref(), Some(r#"{"not_allowed":41}"#));
        let r = row(r#"{"event":"tls_rejected","client":{"ip":"127.0.0.9","port":1},"reason":"expired"}"#);
        assert_eq!(
            (r.ip.as_deref(), r.reason.as_deref()),
            (Some("127.0.0.9"), Some("expired"))
        );
        let r = row(r#"{"event":"checkpoint","next_due":"1970-01-01T00:01:00.000000Z"}"#);
        assert_eq!(r.next_due, Some(60_000_000));
        let r = row(r#"{"event":"audit_access","client":{"org":"X26"},"filters":{"patient":"p"},"rows":3}"#);
        assert_eq!((r.org.as_deref(), r.count), (Some("X26"), Some(3)));
        assert_eq!(r.detail.as_deref(), Some(r#"{"patient":"p"}"#));
    }

    #[test]
    fn record_times_parse_to_microseconds() {
        assert_eq!(parse_time("1970-01-01T00:00:00.000000Z"), Some(0));
        assert_eq!(parse_time("2026-11-22T05:08:59.123456Z"), Some(1_795_324_139_123_456));
        assert_eq!(parse_time("2026-11-22T05:08:59Z"), Some(1_795_324_139_000_000));
        assert_eq!(parse_time("2024-02-29T00:00:00.000001Z"), Some(1_709_164_800_000_001));
        assert_eq!(parse_time("yesterday"), None);
    }
}
