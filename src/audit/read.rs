//! Reading the trail as the auditor sees it: the files of one folder in `seq` order, and their
//! lines streamed one at a time with the file name and line number, so that a trail of any size
//! is read in constant memory and every problem can point at `file:line`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// One `audit-<first seq>.jsonl` file.
#[derive(Debug, Clone)]
pub struct TrailFile {
    pub path: PathBuf,
    /// The file name alone, as problems name it.
    pub name: String,
    /// The number in the name: the `seq` its first record must carry.
    pub first_seq: u64,
}

/// Why the trail could not be read at all (as opposed to a trail that reads but is broken).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("audit folder {0} does not exist")]
    Missing(PathBuf),
    #[error("{0} is not a folder")]
    NotADir(PathBuf),
    #[error("audit folder {0} holds no audit-<seq>.jsonl files")]
    Empty(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The trail's files, ordered by the number in their names. Ordering by number, not by name,
/// keeps a trail correct even if a writer ever used a different zero padding.
pub fn list_files(dir: &Path) -> Result<Vec<TrailFile>, ReadError> {
    let io = |source| ReadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadError::Missing(dir.to_path_buf())),
        Err(e) => return Err(io(e)),
    };
    if !meta.is_dir() {
        return Err(ReadError::NotADir(dir.to_path_buf()));
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(first_seq) = parse_name(&name) {
            files.push(TrailFile {
                path: entry.path(),
                name,
                first_seq,
            });
        }
    }
    if files.is_empty() {
        return Err(ReadError::Empty(dir.to_path_buf()));
    }
    files.sort_by_key(|f| f.first_seq);
    Ok(files)
}

/// `audit-000000000042.jsonl` → 42. Anything else in the folder (temporary files, a README an
/// operator left) is not part of the trail.
fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Where a line is, for messages.
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    pub file: &'a TrailFile,
    /// Index of `file` in the listing.
    pub file_index: usize,
    /// 1-based.
    pub line: u64,
}

/// What [`Lines::next_line`] hands out.
pub enum Item<'a> {
    /// A file is about to start (emitted even for an empty file, so readers can check names).
    FileStart(&'a TrailFile),
    /// One line without its `\n`; `terminated` is false for a last line cut short by a crash.
    Line {
        pos: Position<'a>,
        bytes: &'a [u8],
        terminated: bool,
    },
}

/// Streams every line of every file through one reused buffer: the only per-line memory.
pub struct Lines {
    files: Vec<TrailFile>,
    next_file: usize,
    current: Option<(usize, BufReader<File>, u64)>,
    buf: Vec<u8>,
}

/// Large reads: the trail is read front to back once, so fewer syscalls is all that matters.
const READ_BUFFER: usize = 1 << 18;

impl Lines {
    pub fn new(files: Vec<TrailFile>) -> Lines {
        Lines {
            files,
            next_file: 0,
            current: None,
            buf: Vec::with_capacity(4096),
        }
    }

    pub fn files(&self) -> &[TrailFile] {
        &self.files
    }

    /// The next file boundary or line; `None` at the end of the last file.
    pub fn next_item(&mut self) -> Result<Option<Item<'_>>, ReadError> {
        if let Some((index, reader, line_no)) = &mut self.current {
            self.buf.clear();
            let n = reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| ReadError::Io {
                    path: self.files[*index].path.clone(),
                    source,
                })?;
            if n > 0 {
                *line_no += 1;
                let terminated = self.buf.last() == Some(&b'\n');
                let end = self.buf.len() - usize::from(terminated);
                let pos = Position {
                    file: &self.files[*index],
                    file_index: *index,
                    line: *line_no,
                };
                return Ok(Some(Item::Line {
                    pos,
                    bytes: &self.buf[..end],
                    terminated,
                }));
            }
            self.current = None;
        }
        let Some(file) = self.files.get(self.next_file) else {
            return Ok(None);
        };
        let handle = File::open(&file.path).map_err(|source| ReadError::Io {
            path: file.path.clone(),
            source,
        })?;
        self.current = Some((self.next_file, BufReader::with_capacity(READ_BUFFER, handle), 0));
        self.next_file += 1;
        Ok(Some(Item::FileStart(file)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_sort_by_number() {
        assert_eq!(parse_name("audit-000000000001.jsonl"), Some(1));
        assert_eq!(parse_name("audit-42.jsonl"), Some(42));
        assert_eq!(parse_name("audit-.jsonl"), None);
        assert_eq!(parse_name("audit-1.jsonl.tmp"), None);
        assert_eq!(parse_name("audit-+1.jsonl"), None);
        let dir = tempfile::tempdir().unwrap();
        for n in ["audit-100.jsonl", "audit-000000000001.jsonl", "audit-20.jsonl", "x.txt"] {
            std::fs::write(dir.path().join(n), "").unwrap();
        }
        let seqs: Vec<u64> = list_files(dir.path()).unwrap().iter().map(|f| f.first_seq).collect();
        assert_eq!(seqs, [1, 20, 100]);
    }

    #[test]
    fn lines_carry_positions_and_unterminated_tail() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("audit-1.jsonl"), "a\nbb\n").unwrap();
        std::fs::write(dir.path().join("audit-3.jsonl"), "c\ndd").unwrap();
        let mut lines = Lines::new(list_files(dir.path()).unwrap());
        let mut seen = Vec::new();
        while let Some(item) = lines.next_item().unwrap() {
            match item {
                Item::FileStart(f) => seen.push(format!("start {}", f.name)),
                Item::Line { pos, bytes, terminated } => seen.push(format!(
                    "{}:{} {} {}",
                    pos.file.name,
                    pos.line,
                    String::from_utf8_lossy(bytes),
                    terminated
                )),
            }
        }
        assert_eq!(
            seen,
            [
                "start audit-1.jsonl",
                "audit-1.jsonl:1 a true",
                "audit-1.jsonl:2 bb true",
                "start audit-3.jsonl",
                "audit-3.jsonl:1 c true",
                "audit-3.jsonl:2 dd false",
            ]
        );
    }
}
