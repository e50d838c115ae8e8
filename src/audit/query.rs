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
//!
//! `filters` holds what a row must match, `envelope` the borrowed view of a line it is matched
//! on, `join` the streaming join, `output` the table, JSON and CSV writers.

mod envelope;
mod filters;
mod join;
mod output;

pub use filters::{parse_since, parse_until, Decision, Filters};
pub use join::{
    for_each_entry, for_each_row, row_from_lines, Entry, LifecycleLine, Provenance, Row, SystemEvent, SystemRecord,
};
pub use output::{query, write_rows, Format};

use std::io::Write;
use std::path::PathBuf;

use super::read::ReadError;

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

/// The command: writes the matching rows to `out` in `args.format`; returns how many.
pub fn run(args: &QueryArgs, out: &mut impl Write) -> Result<u64, QueryError> {
    query(&args.dir, &args.filters, args.format, out)
}
