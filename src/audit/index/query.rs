//! `audit query DIR --db PATH`: the rows found through the index, then read from the trail at
//! the places the index keeps, so they print exactly as `audit query` prints them (every member
//! of the record, not only the index's columns). Each line read must still carry the hash the
//! index holds for it: a trail changed since indexing is reported, never printed as if whole.
//! Rows come in the order of their access records.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{Hash, IndexError, IndexStore, Location, Search};
use crate::audit::query::{row_from_lines, write_rows, Filters, Format, Provenance, QueryError, Row};
use crate::audit::read;

/// Writes the requests matching `filters` to `out` in `format`, found through the index at `db`
/// and read from the trail in `dir`; returns how many.
pub fn query(
    dir: &Path,
    db: &Path,
    filters: &Filters,
    format: Format,
    out: &mut impl Write,
) -> Result<u64, QueryError> {
    let store = super::open(db).map_err(bad_index)?;
    let search = Search {
        filters: filters.clone(),
        ..Search::default()
    };
    write_rows(format, out, |emit| for_each_row(dir, &store, &search, emit))
}

/// Calls `emit` with each request matching `search`, found through `store` and read from the
/// trail in `dir` as `audit query` reads it, with its [`Provenance`] (for `audit export`, the
/// console's exports); returns how many.
pub fn for_each_row(
    dir: &Path,
    store: &dyn IndexStore,
    search: &Search,
    mut emit: impl FnMut(Row) -> Result<(), QueryError>,
) -> Result<u64, QueryError> {
    let found = store.search(search).map_err(bad_index)?;
    let mut lines = LineReader::new(dir)?;
    let mut n = 0;
    for r in found {
        let access = lines.read(r.at, r.hash, r.seq)?;
        let complete = match &r.complete {
            Some(c) => Some(lines.read(c.at, c.hash, c.seq)?),
            None => None,
        };
        let mut row = row_from_lines(&access, r.seq, complete.as_deref()).map_err(|why| QueryError::Malformed {
            file: read_name(r.at),
            line: 0,
            why,
        })?;
        row.provenance = Some(Provenance {
            hash: r.hash.to_hex(),
            completed: r
                .complete
                .as_ref()
                .map(|c| crate::audit::chain::format_micros(c.time.max(0) as u64)),
        });
        emit(row)?;
        n += 1;
    }
    Ok(n)
}

/// `audit export DIR --db PATH`: the requests matching `filters` as FHIR AuditEvent NDJSON.
pub fn export(dir: &Path, db: &Path, filters: &Filters, out: &mut impl Write) -> Result<u64, QueryError> {
    let store = super::open(db).map_err(bad_index)?;
    let search = Search {
        filters: filters.clone(),
        ..Search::default()
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let n = for_each_row(dir, &store, &search, |row| {
        serde_json::to_writer(&mut out, &crate::audit::export::audit_event(&row)).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        Ok(())
    })?;
    out.flush()?;
    Ok(n)
}

fn bad_index(e: IndexError) -> QueryError {
    QueryError::BadFilter(format!("cannot use the index: {e}"))
}

fn read_name(at: Location) -> String {
    format!("audit-{:012}.jsonl", at.file)
}

/// Reads single lines of the trail by place, keeping each file open.
struct LineReader {
    paths: HashMap<u64, PathBuf>,
    open: HashMap<u64, BufReader<File>>,
}

impl LineReader {
    fn new(dir: &Path) -> Result<LineReader, QueryError> {
        let paths = read::list_files(dir)?
            .into_iter()
            .map(|f| (f.first_seq, f.path))
            .collect();
        Ok(LineReader {
            paths,
            open: HashMap::new(),
        })
    }

    /// The line at `at`, which must be record `seq` with `hash`.
    fn read(&mut self, at: Location, hash: Hash, seq: u64) -> Result<Vec<u8>, QueryError> {
        let changed = |why: &str| QueryError::Malformed {
            file: read_name(at),
            line: 0,
            why: format!(
                "record seq {seq} at byte {}: {why}; run `audit index --check`",
                at.offset
            ),
        };
        let Some(path) = self.paths.get(&at.file) else {
            return Err(changed("the file is no longer in the trail"));
        };
        let reader = match self.open.entry(at.file) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let f = File::open(path).map_err(|source| read::ReadError::Io {
                    path: path.clone(),
                    source,
                })?;
                e.insert(BufReader::with_capacity(16 * 1024, f))
            }
        };
        reader.seek(SeekFrom::Start(at.offset))?;
        let mut line = Vec::with_capacity(1024);
        reader.read_until(b'\n', &mut line)?;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        // The line's own hash, recomputed from its content, must be the one indexed.
        let whole = crate::audit::chain::check_line(&line).map_err(|e| changed(&e))?;
        if whole.seq != seq || Hash::from_hex(whole.hash.as_str().as_bytes()) != Some(hash) {
            return Err(changed("the line there is not the record the index holds"));
        }
        Ok(line)
    }
}
