//! `audit index --check`: the trail read again from its first record to the index's last, its
//! chain checked, its rows made again exactly as the indexer made them, and each compared with
//! the row in the index: every column, every record's seq and hash, the patients and studies
//! tables (as a multiset digest: they are keyed for lookup, not by record), and the count of
//! rows, so a row changed, added or deleted in the database is found.

use std::path::Path;

use ring::digest;

use super::build::Reader;
use super::parse::Parser;
use super::{Batch, EventRow, IndexError, IndexStore, Location, Name, Position, RequestRow};

/// Records compared per round trip to the store.
const CHECK_RECORDS: usize = 20_000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckReport {
    /// Records compared.
    pub records: u64,
    pub last_seq: u64,
}

/// Compares the index with the trail in `dir`; the first difference is the error.
pub fn check(dir: &Path, store: &dyn IndexStore) -> Result<CheckReport, IndexError> {
    let Some(indexed) = store.position()? else {
        return Ok(CheckReport::default());
    };
    let mut parser = Parser::resume(&Position::default(), Vec::new());
    let mut reader = Reader::open(dir, Location::default())?;
    let mut names = Digest::default();
    let mut records = 0u64;
    let mut from = 1;
    while parser.position().last_seq < indexed.last_seq {
        let Some(line) = reader.next_line()? else {
            return Err(IndexError::Differs(format!(
                "the index goes to seq {}, the trail only to seq {}",
                indexed.last_seq,
                parser.position().last_seq
            )));
        };
        parser
            .line(line.at, &line.file.name, line.line_no, line.bytes)
            .map_err(|b| {
                IndexError::Differs(format!(
                    "the trail's chain breaks at {b}: it changed after it was indexed"
                ))
            })?;
        records += 1;
        if parser.batch_len() >= CHECK_RECORDS {
            let batch = parser.take_batch();
            compare(store, &batch, from, &mut names)?;
            from = batch.position.last_seq + 1;
            finished(store, &mut parser)?;
        }
    }
    let batch = parser.take_batch();
    compare(store, &batch, from, &mut names)?;
    finished(store, &mut parser)?;
    for seq in parser.waiting().collect::<Vec<_>>() {
        no_completion(store, seq)?;
    }
    let position = Position {
        broken: None,
        ..indexed.clone()
    };
    if *parser.position() != position {
        return Err(IndexError::Differs(format!(
            "the index's position ({:?}) is not where its last record ends in the trail ({:?})",
            position,
            parser.position()
        )));
    }
    let stored = store.record_count()?;
    if stored != records {
        return Err(IndexError::Differs(format!(
            "the index holds {stored} records, the trail {records} up to seq {}",
            indexed.last_seq
        )));
    }
    let mut in_store = Digest::default();
    store.scan_names(&mut |n| in_store.add(&n))?;
    if in_store != names {
        return Err(IndexError::Differs(
            "the patients or studies table does not match the requests' records (a row changed, added or removed)"
                .into(),
        ));
    }
    Ok(CheckReport {
        records,
        last_seq: indexed.last_seq,
    })
}

fn compare(store: &dyn IndexStore, batch: &Batch, from: u64, names: &mut Digest) -> Result<(), IndexError> {
    let to = batch.position.last_seq;
    let stored = store.requests_between(from, to)?;
    if stored.len() != batch.requests.len() {
        let extra = stored
            .iter()
            .find(|s| !batch.requests.iter().any(|r| r.seq == s.seq))
            .map(|s| format!(": seq {} is not a request in the trail", s.seq))
            .unwrap_or_default();
        return Err(IndexError::Differs(format!(
            "seq {from}..={to}: {} requests in the index, {} in the trail{extra}",
            stored.len(),
            batch.requests.len()
        )));
    }
    for (want, have) in batch.requests.iter().zip(&stored) {
        // A completion after this batch is compared when it comes.
        let have_cmp;
        let have = if want.complete.is_none() {
            have_cmp = RequestRow {
                complete: None,
                ..have.clone()
            };
            &have_cmp
        } else {
            have
        };
        if want != have {
            return Err(IndexError::Differs(request_difference(want, have)));
        }
        for n in names_of(want) {
            names.add(&n);
        }
    }
    for (seq, want) in &batch.completions {
        let have = store.request(*seq)?.and_then(|r| r.complete);
        if have.as_ref() != Some(want) {
            return Err(IndexError::Differs(format!(
                "complete record seq {} (of request seq {seq}) differs from the index's",
                want.seq
            )));
        }
    }
    let stored = store.events_between(from, to)?;
    if stored.len() != batch.events.len() {
        return Err(IndexError::Differs(format!(
            "seq {from}..={to}: {} other records in the index, {} in the trail",
            stored.len(),
            batch.events.len()
        )));
    }
    for (want, have) in batch.events.iter().zip(&stored) {
        if want != have {
            return Err(IndexError::Differs(event_difference(want, have)));
        }
    }
    Ok(())
}

/// Requests the trail never completes must have no completion in the index either.
fn finished(store: &dyn IndexStore, parser: &mut Parser) -> Result<(), IndexError> {
    for seq in std::mem::take(&mut parser.abandoned) {
        no_completion(store, seq)?;
    }
    Ok(())
}

fn no_completion(store: &dyn IndexStore, seq: u64) -> Result<(), IndexError> {
    match store.request(seq)? {
        Some(r) if r.complete.is_some() => Err(IndexError::Differs(format!(
            "request seq {seq} has a completion in the index that the trail does not have"
        ))),
        _ => Ok(()),
    }
}

fn request_difference(want: &RequestRow, have: &RequestRow) -> String {
    let field = if want.seq != have.seq {
        "seq"
    } else if want.hash != have.hash {
        "hash"
    } else if want.time != have.time {
        "time"
    } else if want.request_id != have.request_id {
        "request_id"
    } else if want.org != have.org {
        "org"
    } else if want.path != have.path || want.query != have.query {
        "path"
    } else if (&want.decision, &want.reason) != (&have.decision, &have.reason) {
        "decision"
    } else if (&want.nhs_numbers, &want.patient_ids) != (&have.nhs_numbers, &have.patient_ids) {
        "patients"
    } else if want.complete != have.complete {
        "completion"
    } else {
        "a column"
    };
    format!("request seq {}: {field} differs from its record", want.seq)
}

fn event_difference(want: &EventRow, have: &EventRow) -> String {
    let field = if want.seq != have.seq {
        "seq"
    } else if want.hash != have.hash {
        "hash"
    } else {
        "a column"
    };
    format!(
        "{} record seq {}: {field} differs from its record",
        want.event, want.seq
    )
}

/// The rows of `patients` and `studies` a request makes.
fn names_of(r: &RequestRow) -> Vec<Name> {
    let mut out = Vec::new();
    for n in &r.nhs_numbers {
        out.push(Name {
            seq: r.seq,
            time: r.time,
            kind: "nhs".into(),
            system: String::new(),
            value: n.clone(),
            org: r.org.clone(),
        });
    }
    for id in &r.patient_ids {
        let (system, value) = id.rsplit_once('|').unwrap_or(("", id));
        out.push(Name {
            seq: r.seq,
            time: r.time,
            kind: "id".into(),
            system: system.into(),
            value: value.into(),
            org: r.org.clone(),
        });
    }
    for uid in &r.study_uids {
        out.push(Name {
            seq: r.seq,
            time: 0,
            kind: "study".into(),
            system: String::new(),
            value: uid.clone(),
            org: None,
        });
    }
    // The tables keep each name once per request.
    out.sort_by(|a, b| (&a.kind, &a.system, &a.value).cmp(&(&b.kind, &b.system, &b.value)));
    out.dedup();
    out
}

/// An order-free digest of a multiset of rows: the sum of their SHA-256s, lane by lane.
#[derive(Debug, Default, PartialEq, Eq)]
struct Digest([u64; 4], u64);

impl Digest {
    fn add(&mut self, n: &Name) {
        let text = format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            n.seq,
            n.time,
            n.kind,
            n.system,
            n.value,
            n.org.as_deref().unwrap_or("\u{0}")
        );
        let d = digest::digest(&digest::SHA256, text.as_bytes());
        for (lane, chunk) in self.0.iter_mut().zip(d.as_ref().chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *lane = lane.wrapping_add(u64::from_le_bytes(b));
        }
        self.1 += 1;
    }
}
