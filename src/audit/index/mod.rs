//! The audit index (`caregate audit index DIR --db PATH`): the trail in an embedded database,
//! so that "who saw this patient" is an indexed lookup rather than a scan of every line.
//!
//! One row per request (its `access` joined with its `complete`), one per patient and study it
//! names, and one per other record (refusals, TLS rejections, lifecycle, checkpoints, uses of the
//! console). Each row keeps its record's `seq` and `hash` and where its line is, so the index can
//! be checked against the chain (`--check`) and the records themselves printed from it
//! (`audit query --db`). The chain is verified as it is indexed: a break stops indexing at that
//! record and is kept in [`Position::broken`], never skipped.
//!
//! Storage sits behind [`IndexStore`] (SQLite now, `sqlite.rs`; PostgreSQL for a fleet later).
//! `build` reads the trail (following it live, across rotation, resuming where it stopped),
//! `check` compares, `query` answers `audit query --db`.

mod build;
mod check;
mod parse;
pub mod query;
mod sqlite;

pub use build::{build, follow, spawn_follower, BuildReport, FollowOptions, Stop};
pub use check::{check, CheckReport};

pub use sqlite::SqliteStore;

use std::path::PathBuf;

use super::query::Filters;

/// Unix time in microseconds (UTC), as every time in the index.
pub type Micros = i64;

/// A record's SHA-256 (the trail writes it as 64 hex digits).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// From the 64 lowercase hex digits of a record's `hash`.
    pub fn from_hex(hex: &[u8]) -> Option<Hash> {
        fn digit(b: u8) -> Option<u8> {
            match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                _ => None,
            }
        }
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            *o = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Hash(out))
    }

    pub fn to_hex(&self) -> String {
        crate::hex(&self.0)
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Where a record's line starts: the trail file (by the first seq in its name) and the byte
/// offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub file: u64,
    pub offset: u64,
}

/// One request: its `access` record, and its `complete` once indexed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestRow {
    pub seq: u64,
    pub hash: Hash,
    pub time: Micros,
    pub at: Location,
    pub request_id: String,
    pub client_request_id: Option<String>,
    pub org: Option<String>,
    pub org_name: Option<String>,
    pub fingerprint: Option<String>,
    pub ip: String,
    pub method: String,
    pub host: Option<String>,
    pub path: String,
    pub query: Option<String>,
    pub route: Option<String>,
    pub class: Option<String>,
    /// `allow` or `deny`.
    pub decision: String,
    /// `allowed`, or the refusal reason.
    pub reason: String,
    pub rule: Option<String>,
    pub fhir_type: Option<String>,
    /// The first study named (`studies` has them all).
    pub study_uid: Option<String>,
    /// The access record's `break_glass.reason`, when break-glass was used.
    pub break_glass_reason: Option<String>,
    /// Every valid NHS number named (`clinical.nhs_numbers`, or `nhs_number` alone).
    pub nhs_numbers: Vec<String>,
    /// Every other patient id named, as recorded (`system|value` when it has a system).
    pub patient_ids: Vec<String>,
    /// Every DICOM study named.
    pub study_uids: Vec<String>,
    pub complete: Option<Completion>,
}

/// A request's `complete` record.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Completion {
    pub seq: u64,
    pub hash: Hash,
    pub time: Micros,
    pub at: Location,
    pub status: u16,
    /// `ok`, `client_aborted`, `upstream_error`, `timeout`.
    pub outcome: String,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: u64,
}

/// Any record that is not an access or its completion.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventRow {
    pub seq: u64,
    pub hash: Hash,
    pub time: Micros,
    pub at: Location,
    /// The record's `event`: `tls_rejected`, `refusals_coalesced`, `lifecycle`, `checkpoint`,
    /// `audit_access`, `complete` (one whose access is not in the trail), or a later kind.
    pub event: String,
    /// `refusals_coalesced`'s org; `audit_access`'s auditor (organisation).
    pub org: Option<String>,
    /// `tls_rejected`'s and `refusals_coalesced`'s client address.
    pub ip: Option<String>,
    /// `tls_rejected`'s reason.
    pub reason: Option<String>,
    /// `refusals_coalesced`'s count; `audit_access`'s rows.
    pub count: Option<u64>,
    /// `lifecycle`'s action (`start`, `reload`, `reload_failed`, `stop`).
    pub action: Option<String>,
    /// `checkpoint`'s `next_due`.
    pub next_due: Option<Micros>,
    /// Compact JSON of what else the kind needs: `refusals_coalesced`'s `reasons`,
    /// `audit_access`'s `filters`, a `complete`'s request_id.
    pub detail: Option<String>,
}

/// A row of the lookup tables: a patient (`kind` `nhs` or `id`) or a study (`study`, with
/// `time` 0 and no `org`) a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub seq: u64,
    pub time: Micros,
    pub kind: String,
    /// An id's system (`''` when none).
    pub system: String,
    pub value: String,
    pub org: Option<String>,
}

/// Where indexing stands.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Position {
    /// Where the next line starts.
    pub next: Location,
    pub last_seq: u64,
    pub last_hash: Hash,
    pub last_time: Micros,
    /// Set when the chain broke: indexing stopped before this record.
    pub broken: Option<Broken>,
}

/// A break in the chain, as found while indexing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The record's seq (or, when its line does not say, the one expected there).
    pub seq: u64,
    pub file: String,
    /// 1-based.
    pub line: u64,
    pub message: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} line {} (seq {}): {}",
            self.file, self.line, self.seq, self.message
        )
    }
}

/// What one transaction writes: the rows of a run of records and the position after them.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// New requests (with their completion when it is in the same batch).
    pub requests: Vec<RequestRow>,
    /// Completions of requests indexed by an earlier batch, by the access record's seq.
    pub completions: Vec<(u64, Completion)>,
    pub events: Vec<EventRow>,
    pub position: Position,
}

/// A search of the requests: the filters of `audit query`, and a few the console adds.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub filters: Filters,
    /// A refusal reason (or `allowed`).
    pub reason: Option<String>,
    /// Only requests that used break-glass.
    pub break_glass: bool,
    /// At most this many rows.
    pub limit: Option<u64>,
    /// Newest first (the console) rather than oldest first (`audit query`).
    pub newest_first: bool,
}

/// One organisation's day.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OrgDay {
    /// The day's first instant (UTC).
    pub day: Micros,
    pub requests: u64,
    pub refused: u64,
    /// Distinct patients named that day.
    pub patients: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A count under a name (a reason, an organisation and class, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Count {
    pub key: String,
    /// A second key where there is one (the class of an organisation's traffic; the day of a
    /// refusal reason as Micros in decimal).
    pub sub: Option<String>,
    pub count: u64,
}

/// The overview of a window: traffic per organisation and class, refusals and TLS rejections
/// by reason.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Overview {
    /// `key` the organisation (empty when unknown), `sub` the class.
    pub traffic: Vec<Count>,
    /// `key` the reason.
    pub refusals: Vec<Count>,
    /// `key` the reason; coalesced refusals count as their `count`.
    pub tls_rejections: Vec<Count>,
}

/// The trail's health as the index sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Health {
    pub position: Option<Position>,
    /// The last checkpoint's seq, time and next_due.
    pub last_checkpoint: Option<(u64, Micros, Option<Micros>)>,
    pub requests: u64,
    pub events: u64,
}

/// Distinct patients one organisation named in one hour.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrgHour {
    pub org: String,
    /// The hour's first instant.
    pub hour: Micros,
    pub patients: u64,
}

/// Why the index could not be built, read or checked.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index database: {0}")]
    Db(String),
    #[error(transparent)]
    Read(#[from] super::read::ReadError),
    /// The chain broke: indexing stopped before this record.
    #[error("the chain breaks at {0}; indexing stopped before it")]
    Broken(Broken),
    /// `--check` found the index and the trail disagree.
    #[error("index differs from the trail: {0}")]
    Differs(String),
    #[error("index database {path}: schema version {found}, this caregate knows up to {known}")]
    Version { path: PathBuf, found: i64, known: i64 },
    #[error("{0}")]
    Other(String),
}

impl IndexError {
    /// 1 for a broken chain or an index that differs; 2 for anything that stopped the work.
    pub fn exit_code(&self) -> u8 {
        match self {
            IndexError::Broken(_) | IndexError::Differs(_) => 1,
            _ => 2,
        }
    }
}

impl From<rusqlite::Error> for IndexError {
    fn from(e: rusqlite::Error) -> IndexError {
        IndexError::Db(e.to_string())
    }
}

/// The index's storage. SQLite ([`SqliteStore`]) now; a fleet's PostgreSQL later, behind the
/// same methods. Writes come from one indexer; reads may come from others, each with its own
/// store.
pub trait IndexStore {
    // --- for the indexer ---

    /// Where indexing stands; `None` for an empty index.
    fn position(&self) -> Result<Option<Position>, IndexError>;
    /// Requests indexed without their completion: (request_id, access seq), oldest first.
    fn open_requests(&self) -> Result<Vec<(String, u64)>, IndexError>;
    /// Writes a batch and its position in one transaction: all of it or none.
    fn write(&mut self, batch: &Batch) -> Result<(), IndexError>;
    /// Records a break in the chain at the current position.
    fn set_broken(&mut self, broken: &Broken) -> Result<(), IndexError>;

    // --- for `--check` ---

    /// Requests whose access seq is in `from..=to`, by seq.
    fn requests_between(&self, from: u64, to: u64) -> Result<Vec<RequestRow>, IndexError>;
    /// Events whose seq is in `from..=to`, by seq.
    fn events_between(&self, from: u64, to: u64) -> Result<Vec<EventRow>, IndexError>;
    /// The request whose access record is `seq`.
    fn request(&self, seq: u64) -> Result<Option<RequestRow>, IndexError>;
    /// How many requests, completions and events are indexed (each one record).
    fn record_count(&self) -> Result<u64, IndexError>;
    /// Every row of the patients and studies tables, in any order.
    fn scan_names(&self, visit: &mut dyn FnMut(Name)) -> Result<(), IndexError>;

    // --- for `audit query --db` and the console ---

    /// Requests matching `search`, in seq order (newest first if asked).
    fn search(&self, search: &Search) -> Result<Vec<RequestRow>, IndexError>;
    /// Per-day figures of one organisation's requests with `since <= time < until`.
    fn org_days(&self, org: &str, since: Micros, until: Micros) -> Result<Vec<OrgDay>, IndexError>;
    /// One organisation's refusals by reason (`key`) and day (`sub`, the day's Micros).
    fn org_refusals(&self, org: &str, since: Micros, until: Micros) -> Result<Vec<Count>, IndexError>;
    /// Traffic, refusals and TLS rejections in a window.
    fn overview(&self, since: Micros, until: Micros) -> Result<Overview, IndexError>;
    /// Events of one kind (or all) in a window, newest first.
    fn events(
        &self,
        event: Option<&str>,
        since: Micros,
        until: Micros,
        limit: u64,
    ) -> Result<Vec<EventRow>, IndexError>;
    /// Last indexed record, last checkpoint, break, counts.
    fn health(&self) -> Result<Health, IndexError>;
    /// Distinct patients per organisation (or only `org`) per hour in a window, by org and hour.
    fn patients_per_hour(&self, org: Option<&str>, since: Micros, until: Micros) -> Result<Vec<OrgHour>, IndexError>;
    /// Refused requests per hour in a window, by who sent them: `key` the organisation (the
    /// client's address when the certificate named none), `sub` the hour's first instant (Micros
    /// in decimal); `refusals_coalesced` records for an organisation count as their `count`.
    /// For the refusal-spike alert.
    fn refusals_per_hour(&self, since: Micros, until: Micros) -> Result<Vec<Count>, IndexError>;
    /// Refused TLS handshakes per hour in a window, by client address (`key`), `sub` as in
    /// [`IndexStore::refusals_per_hour`]; coalesced ones count as their `count`. For the
    /// TLS-rejection-spike alert.
    fn tls_rejections_per_hour(&self, since: Micros, until: Micros) -> Result<Vec<Count>, IndexError>;
}

/// Opens the index at `db` (SQLite file), creating it or migrating it to the current schema.
pub fn open(db: &std::path::Path) -> Result<SqliteStore, IndexError> {
    SqliteStore::open(db)
}
