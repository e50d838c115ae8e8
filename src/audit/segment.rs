//! The files of the trail: `audit-<first seq, 12 digits>.jsonl` in one folder (0700, files
//! 0600), and recovery of the chain's head from the newest file when the writer starts.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::chain;
use super::AuditError;

/// The file records are appended to.
#[derive(Debug)]
pub(crate) struct Segment {
    pub file: File,
    pub path: PathBuf,
    /// Bytes known to be written (and, with `fsync`, durable). Everything past this after a
    /// failed write is cut off before the next attempt.
    pub len: u64,
}

/// Where the chain stands after [`recover`].
#[derive(Debug)]
pub(crate) struct Recovered {
    pub segment: Segment,
    pub next_seq: u64,
    pub head: chain::HashHex,
    /// Whether records follow the last checkpoint (so the next interval or close signs them).
    pub unsigned_records: bool,
}

pub(crate) fn file_name(first_seq: u64) -> String {
    format!("audit-{first_seq:012}.jsonl")
}

/// The first seq in a trail file's name; `None` for any other file.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.len() < 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&seq| seq > 0)
}

/// Trail files in `dir`, oldest first.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_name) {
            files.push((seq, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Makes the audit folder (0700) if it does not exist. The writer calls it before it takes the
/// folder's lock, and [`recover`] only after.
pub(crate) fn create_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        let mode = fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "audit folder is readable by others");
        }
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    // The mode above is filtered by the umask; this is not.
    fs::set_permissions(dir, Permissions::from_mode(0o700))?;
    if let Some(parent) = dir.parent() {
        // The new folder's entry must survive a crash too.
        let _ = sync_dir(parent);
    }
    Ok(())
}

/// fsync a folder, so that files created in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn open_existing(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).append(true).open(path)
}

/// Reopens a segment's file, e.g. after a failed write, so that an error latched on the old
/// descriptor cannot hide behind a later successful fsync.
pub(crate) fn reopen(path: &Path) -> io::Result<File> {
    open_existing(path)
}

/// Creates the file whose first record will be `first_seq` (0600) and makes its name durable.
pub(crate) fn create(dir: &Path, first_seq: u64) -> io::Result<Segment> {
    let path = dir.join(file_name(first_seq));
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)?;
    // An empty file of this name is left over from a failed rotation and is safe to reuse;
    // one with contents means the trail and this writer disagree, and nothing is overwritten.
    if file.metadata()?.len() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists and is not empty", path.display()),
        ));
    }
    file.set_permissions(Permissions::from_mode(0o600))?;
    sync_dir(dir)?;
    Ok(Segment { file, path, len: 0 })
}

/// Can the disk under `dir` take a write and a sync? Writes and removes `dir/.probe`.
pub(crate) fn probe(dir: &Path) -> io::Result<()> {
    let path = dir.join(".probe");
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        // About the size of a few records: enough to need fresh blocks on a full disk.
        io::Write::write_all(&mut file, &[0; 4096])?;
        file.sync_data()
    })();
    let _ = fs::remove_file(&path);
    result
}

/// Finds where the trail in `dir` ends: the newest file, cut back to its last complete line,
/// and that line's `seq` and `hash`. Creates the first file for a new trail.
///
/// It may cut files, so the caller must hold the folder's lock (made by [`create_dir`]): on a
/// trail another writer is appending to, its last line may be a write in progress.
pub(crate) fn recover(dir: &Path) -> Result<Recovered, AuditError> {
    let damaged = |path: &Path, why: String| AuditError::Invalid(format!("{}: {why}", path.display()));
    let files = list(dir)?;
    let Some((newest_first, _)) = files.last().cloned() else {
        return Ok(Recovered {
            segment: create(dir, 1)?,
            next_seq: 1,
            head: chain::HashHex::GENESIS,
            unsigned_records: false,
        });
    };
    let newest = files.len() - 1;
    let mut segment = None;
    for (idx, (first, path)) in files.iter().enumerate().rev() {
        let file = open_existing(path)?;
        let len = file.metadata()?.len();
        let (good, last) = tail(&file, len)?;
        if good < len {
            tracing::warn!(
                file = %path.display(),
                bytes = len - good,
                "audit file ends with a partial record (crash while writing); cutting it off"
            );
            file.set_len(good)?;
            file.sync_data()?;
        }
        if idx == newest {
            segment = Some(Segment {
                file,
                path: path.clone(),
                len: good,
            });
        }
        let Some(line) = last else {
            if idx != newest {
                return Err(damaged(path, "empty file in the middle of the trail".into()));
            }
            continue;
        };
        let record = chain::check_line(&line).map_err(|e| {
            damaged(
                path,
                format!("last record is damaged ({e}); move the file aside to continue"),
            )
        })?;
        if record.seq < *first {
            return Err(damaged(path, format!("holds seq {} below its name", record.seq)));
        }
        let next_seq = record.seq + 1;
        if idx != newest && newest_first != next_seq {
            return Err(damaged(
                &files[newest].1,
                format!(
                    "named for seq {newest_first} but the trail before it ends at {}",
                    record.seq
                ),
            ));
        }
        let Some(segment) = segment else {
            return Err(damaged(path, "no writable file".into()));
        };
        return Ok(Recovered {
            segment,
            next_seq,
            head: record.hash,
            unsigned_records: record.event != "checkpoint",
        });
    }
    // Only empty files: a trail that was created but never written.
    match segment {
        Some(segment) if newest_first == 1 => Ok(Recovered {
            segment,
            next_seq: 1,
            head: chain::HashHex::GENESIS,
            unsigned_records: false,
        }),
        _ => Err(damaged(
            &files[newest].1,
            format!("named for seq {newest_first} but no earlier records exist"),
        )),
    }
}

/// The length up to the end of the last complete line, and that line (without `\n`).
/// Reads backwards from the end so that opening a 256 MiB file reads only its tail.
fn tail(file: &File, len: u64) -> io::Result<(u64, Option<Vec<u8>>)> {
    const CHUNK: u64 = 64 * 1024;
    let mut buf = Vec::new(); // the bytes [pos, len)
    let mut pos = len;
    let mut good = None;
    loop {
        if good.is_none() {
            good = buf.iter().rposition(|&b| b == b'\n').map(|i| pos + i as u64 + 1);
        }
        match good {
            Some(good) => {
                let end = (good - pos - 1) as usize;
                if let Some(start) = buf[..end].iter().rposition(|&b| b == b'\n') {
                    return Ok((good, Some(buf[start + 1..end].to_vec())));
                }
                if pos == 0 {
                    return Ok((good, Some(buf[..end].to_vec())));
                }
            }
            None if pos == 0 => return Ok((0, None)),
            None => {}
        }
        let start = pos.saturating_sub(CHUNK);
        let mut chunk = vec![0; (pos - start) as usize];
        file.read_exact_at(&mut chunk, start)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        pos = start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn names_are_zero_padded_and_parsed_back() {
        assert_eq!(file_name(1), "audit-000000000001.jsonl");
        assert_eq!(parse_name("audit-000000000001.jsonl"), Some(1));
        assert_eq!(parse_name("audit-1234567890123.jsonl"), Some(1_234_567_890_123));
        assert_eq!(parse_name("audit-1.jsonl"), None);
        assert_eq!(parse_name("audit-000000000000.jsonl"), None);
        assert_eq!(parse_name("audit-00000000000x.jsonl"), None);
    }

    #[test]
    fn tail_finds_the_last_complete_line_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let long = "x".repeat(200_000);
        let mut f = File::create(&path).unwrap();
        write!(f, "a\n{long}\npartial").unwrap();
        let f = File::open(&path).unwrap();
        let len = f.metadata().unwrap().len();
        let (good, last) = tail(&f, len).unwrap();
        assert_eq!(good, len - "partial".len() as u64);
        assert_eq!(last.unwrap(), long.as_bytes());

        std::fs::write(&path, "only\n").unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(tail(&f, 5).unwrap(), (5, Some(b"only".to_vec())));
        std::fs::write(&path, "no newline").unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(tail(&f, 10).unwrap(), (0, None));
    }
}
