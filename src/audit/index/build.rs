//! Building the index: the trail read in order from where the index stopped, each record's
//! place in the chain checked as `audit verify` checks it (seq, prev, its own hash, the file's
//! name, a checkpoint's chain_head), turned into rows, and written in batches of one transaction
//! each with the position after them, so a stop at any moment resumes without a gap or a
//! duplicate. Following, it polls the newest file for growth and moves to the next file when
//! the writer rotates.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::parse::Parser;
use super::{Broken, IndexError, IndexStore, Location};
use crate::audit::read::{self, TrailFile};

/// Records per transaction: large enough that SQLite's per-commit cost vanishes, small enough
/// that a follower's rows appear promptly.
const BATCH_RECORDS: usize = 20_000;

/// Tells a follower to stop (Ctrl-C, SIGTERM, a gateway shutting down). Cloned freely.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// How often the newest file is looked at for new records.
    pub poll: Duration,
}

impl Default for FollowOptions {
    fn default() -> FollowOptions {
        FollowOptions {
            poll: Duration::from_millis(200),
        }
    }
}

/// What a run indexed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildReport {
    /// Records indexed by this run.
    pub records: u64,
    /// The last record in the index.
    pub last_seq: u64,
}

/// Indexes the trail in `dir` to its end and returns. A break in the chain stops indexing at
/// that record: it is kept in the index's position and returned as [`IndexError::Broken`].
pub fn build(dir: &Path, store: &mut dyn IndexStore) -> Result<BuildReport, IndexError> {
    run(dir, store, None, &FollowOptions::default())
}

/// Indexes the trail in `dir` and keeps following it until `stop`.
pub fn follow(
    dir: &Path,
    store: &mut dyn IndexStore,
    stop: &Stop,
    opts: &FollowOptions,
) -> Result<BuildReport, IndexError> {
    run(dir, store, Some(stop), opts)
}

/// Follows the trail in `dir` into the SQLite index at `db` on a thread of its own, until
/// `stop`: for a gateway or console that keeps its index up to date in-process.
pub fn spawn_follower(
    dir: PathBuf,
    db: PathBuf,
    stop: Stop,
) -> std::io::Result<std::thread::JoinHandle<Result<BuildReport, IndexError>>> {
    std::thread::Builder::new()
        .name("caregate-index".into())
        .spawn(move || {
            let mut store = super::open(&db)?;
            let result = follow(&dir, &mut store, &stop, &FollowOptions::default());
            if let Err(e) = &result {
                // Never a patient identifier here: the chain's problems name records, not people.
                tracing::error!(dir = %dir.display(), "audit index stopped: {e}");
            }
            result
        })
}

fn run(
    dir: &Path,
    store: &mut dyn IndexStore,
    stop: Option<&Stop>,
    opts: &FollowOptions,
) -> Result<BuildReport, IndexError> {
    let start = store.position()?;
    let was_broken = start.as_ref().is_some_and(|p| p.broken.is_some());
    let start = start.unwrap_or_default();
    let mut parser = Parser::resume(&start, store.open_requests()?);
    let mut reader = loop {
        match Reader::open(dir, start.next) {
            // A follower started with a gateway that has not written its first file yet.
            Err(IndexError::Read(read::ReadError::Empty(_))) if stop.is_some_and(|s| !s.is_stopped()) => {
                std::thread::sleep(opts.poll)
            }
            r => break r?,
        }
    };
    let mut report = BuildReport {
        records: 0,
        last_seq: start.last_seq,
    };
    // A position marked broken is cleared once the records after it check out (the trail was
    // restored); until then every run finds the break again.
    let mut dirty = was_broken;
    loop {
        match reader.next_line()? {
            Some(line) => {
                if let Err(problem) = parser.line(line.at, &line.file.name, line.line_no, line.bytes) {
                    return Err(stop_at(store, &mut parser, problem));
                }
                report.records += 1;
                if parser.batch_len() >= BATCH_RECORDS {
                    flush(store, &mut parser)?;
                    dirty = false;
                }
            }
            None => {
                if parser.batch_len() > 0 || dirty {
                    flush(store, &mut parser)?;
                    dirty = false;
                }
                report.last_seq = parser.position().last_seq;
                match stop {
                    Some(stop) if !stop.is_stopped() => std::thread::sleep(opts.poll),
                    _ => return Ok(report),
                }
            }
        }
    }
}

fn flush(store: &mut dyn IndexStore, parser: &mut Parser) -> Result<(), IndexError> {
    store.write(&parser.take_batch())?;
    // Only `--check` looks at these.
    parser.abandoned.clear();
    Ok(())
}

/// Writes what was indexed before the break, then the break itself.
fn stop_at(store: &mut dyn IndexStore, parser: &mut Parser, broken: Broken) -> IndexError {
    let written = store
        .write(&parser.take_batch())
        .and_then(|()| store.set_broken(&broken));
    match written {
        Ok(()) => IndexError::Broken(broken),
        Err(e) => e,
    }
}

/// One line as read, with where it starts.
pub(super) struct Line<'a> {
    pub file: &'a TrailFile,
    pub at: Location,
    /// 1-based within its file.
    pub line_no: u64,
    pub bytes: &'a [u8],
}

/// Reads whole lines from a position in the trail onward: the current file to its end, then the
/// next by its name's seq once one exists. A last line without its `\n` (being written, or cut
/// by a crash) is left for the next look.
pub(super) struct Reader {
    dir: PathBuf,
    file: Option<(TrailFile, BufReader<File>)>,
    at: Location,
    line_no: u64,
    buf: Vec<u8>,
    /// Whether the current file was read to its end once after a later file was seen.
    drained: bool,
}

impl Reader {
    /// Starts at `at`; a zero location means the trail's first file.
    pub(super) fn open(dir: &Path, at: Location) -> Result<Reader, IndexError> {
        let mut reader = Reader {
            dir: dir.to_path_buf(),
            file: None,
            at,
            line_no: 0,
            buf: Vec::with_capacity(4096),
            drained: false,
        };
        let files = read::list_files(dir)?;
        let file = if at.file == 0 {
            files.into_iter().next()
        } else {
            files.into_iter().find(|f| f.first_seq == at.file)
        };
        let Some(file) = file else {
            return Err(IndexError::Other(format!(
                "the index stopped in audit-{:012}.jsonl, which is no longer in {}",
                at.file,
                dir.display()
            )));
        };
        reader.enter(file, at.offset)?;
        Ok(reader)
    }

    fn enter(&mut self, file: TrailFile, offset: u64) -> Result<(), IndexError> {
        let io = |source| read::ReadError::Io {
            path: file.path.clone(),
            source,
        };
        let mut handle = File::open(&file.path).map_err(io)?;
        handle.seek(SeekFrom::Start(offset)).map_err(io)?;
        self.at = Location {
            file: file.first_seq,
            offset,
        };
        // Lines are named by number in messages: count those before a resumed offset once.
        self.line_no = if offset == 0 {
            0
        } else {
            count_lines(&file.path, offset).map_err(io)?
        };
        self.drained = false;
        self.file = Some((file, BufReader::with_capacity(1 << 18, handle)));
        Ok(())
    }

    /// The next whole line, or `None` when there is none yet.
    pub(super) fn next_line(&mut self) -> Result<Option<Line<'_>>, IndexError> {
        loop {
            let Some((file, reader)) = &mut self.file else {
                return Ok(None);
            };
            let start = reader.stream_position().unwrap_or(self.at.offset);
            self.buf.clear();
            let n = reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| read::ReadError::Io {
                    path: file.path.clone(),
                    source,
                })?;
            if n > 0 && self.buf.last() == Some(&b'\n') {
                self.at.offset = start + n as u64;
                self.line_no += 1;
                let (file, _) = self.file.as_ref().expect("a file is open");
                return Ok(Some(Line {
                    file,
                    at: Location {
                        file: file.first_seq,
                        offset: start,
                    },
                    line_no: self.line_no,
                    bytes: &self.buf[..n - 1],
                }));
            }
            // Not a whole line: back to its start, to be read whole later.
            let _ = reader.seek(SeekFrom::Start(start));
            if n > 0 {
                return Ok(None);
            }
            // At the end of this file: move on only once a later file exists and this one was
            // read to its end after that was seen (the writer finishes a file before the next).
            let current = file.first_seq;
            let next = read::list_files(&self.dir)?.into_iter().find(|f| f.first_seq > current);
            match next {
                None => return Ok(None),
                Some(_) if !self.drained => self.drained = true,
                Some(next) => self.enter(next, 0)?,
            }
        }
    }

    /// Where the next line starts.
    #[allow(dead_code)]
    pub(super) fn at(&self) -> Location {
        self.at
    }
}

fn count_lines(path: &Path, upto: u64) -> std::io::Result<u64> {
    use std::io::Read as _;
    let mut f = BufReader::with_capacity(1 << 18, File::open(path)?.take(upto));
    let mut n = 0;
    loop {
        let buf = f.fill_buf()?;
        if buf.is_empty() {
            return Ok(n);
        }
        n += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        let len = buf.len();
        f.consume(len);
    }
}
