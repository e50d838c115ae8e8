//! `caregate audit verify`: proves the trail is whole (SPEC §5), or names the first record that
//! is not — file, line, seq.
//!
//! Checks, per line, in this order (so that each kind of tampering is named by its cause):
//! the line ends in `,"hash":"<64 hex>"}` and is JSON; its `seq` is the next one (deleted,
//! inserted, reordered lines, a missing file); the first record of a file has the `seq` its name
//! says; its `hash` is SHA-256 over `prev ‖ "\n" ‖ body` (a changed byte); `prev` is the previous
//! record's hash; a checkpoint's `chain_head`, `key_id` and Ed25519 signature (over the v2 message,
//! or v1 for a checkpoint without `next_due`: see `checkpoint`). With a public key a
//! trail must end in a checkpoint: a running gateway seals its trail periodically and at shutdown,
//! so records after the last checkpoint may have been cut off or rewritten unseen.
//!
//! That cannot tell a trail cut right after an earlier checkpoint (its newest files deleted):
//! it ends sealed too. What the auditor knows from outside can (`expect`): a witness of a later
//! checkpoint (`witness`, `--witness`), or a time the gateway is known to have run until
//! (`--expect-until`), against the last checkpoint's signed `next_due`. `audit verify` prints
//! the last checkpoint's seq and time either way.
//!
//! Speed matters (trails of hundreds of millions of records): nothing is allocated per line
//! beyond the reader's line buffer, fields are borrowed, and the hash is fed from the line in
//! place.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::digest;
use ring::signature::{UnparsedPublicKey, ED25519};
use serde::Deserialize;

use super::checkpoint;
use super::read::{self, Item, Lines, Position, ReadError};

mod command;
pub mod expect;
mod key;
pub mod witness;

pub use command::{run, run_expecting};
pub use expect::{Expected, LastCheckpoint};
pub use key::{key_id, parse_public_key_pem, read_public_key};
pub use witness::Witness;

/// `,"hash":"` + 64 hex + `"}`: the fixed-length end of every line.
const HASH_TAIL: usize = 9 + 64 + 2;
const HASH_KEY: &[u8] = br#","hash":""#;
/// `prev` of seq 1.
const GENESIS: [u8; 64] = [b'0'; 64];

/// Options of `caregate audit verify`.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Accept a trail whose last records are not sealed by a checkpoint (e.g. a copy taken from
    /// a running gateway between checkpoints). Only matters with a public key.
    pub allow_unsealed_tail: bool,
}

/// What `caregate audit verify DIR [--public-key FILE]` needs, as main.rs parses it.
#[derive(Debug, Clone)]
pub struct VerifyArgs {
    pub dir: PathBuf,
    pub public_key: Option<PathBuf>,
    pub options: VerifyOptions,
}

/// `[--witness FILE|URL] [--expect-until TIME]`, as given on the command line (see `expect`).
#[derive(Debug, Clone, Default)]
pub struct ExpectArgs {
    pub witness: Option<String>,
    pub expect_until: Option<String>,
}

/// An intact trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub records: u64,
    pub files: usize,
    /// Checkpoint records seen; their signatures were checked iff `signatures_checked`.
    pub checkpoints: u64,
    pub signatures_checked: bool,
    pub last_seq: u64,
    /// Records after the last checkpoint, when accepted by `allow_unsealed_tail`.
    pub unsealed_tail: Option<u64>,
    /// Where the trail shows the gateway ran until (see `expect`).
    pub last_checkpoint: Option<LastCheckpoint>,
    /// Witnessed checkpoints found in the trail, unchanged.
    pub witnessed: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "intact: {} records, {} files, ", self.records, self.files)?;
        if self.signatures_checked {
            write!(f, "{} checkpoints verified", self.checkpoints)?;
        } else {
            write!(
                f,
                "{} checkpoints (signatures not checked: no public key)",
                self.checkpoints
            )?;
        }
        write!(f, ", last seq {}", self.last_seq)?;
        if let Some(n) = self.unsealed_tail {
            write!(f, " ({n} records after the last checkpoint, accepted)")?;
        }
        Ok(())
    }
}

/// The first bad record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub file: String,
    /// 1-based line number in `file`.
    pub line: u64,
    /// The record's `seq` when it could be read.
    pub seq: Option<u64>,
    pub problem: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "broken: {} line {}", self.file, self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The trail reads but is not whole: exit 1.
    #[error("{0}")]
    Broken(Broken),
    /// The trail is whole, but ends before a witnessed checkpoint or before the time it was
    /// expected to run until: exit 1.
    #[error("cut short: {0}")]
    Cut(String),
    /// The trail or the key could not be read at all: exit 2.
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{0}")]
    BadKey(String),
    /// A witness or `--expect-until` that cannot be used: exit 2.
    #[error("{0}")]
    Unusable(String),
}

impl VerifyError {
    /// SPEC §2: 1 names a bad record (or a cut); 2 is input that could not be checked at all.
    pub fn exit_code(&self) -> u8 {
        match self {
            VerifyError::Broken(_) | VerifyError::Cut(_) => 1,
            VerifyError::Read(_) | VerifyError::BadKey(_) | VerifyError::Unusable(_) => 2,
        }
    }
}

/// The fields verification needs, borrowed from the line. Unknown fields are skipped (but still
/// parsed, so the line is checked to be JSON); a duplicated one is an error, as it should be.
#[derive(Deserialize)]
struct Head<'a> {
    seq: u64,
    #[serde(borrow)]
    event: &'a str,
    #[serde(borrow)]
    prev: &'a str,
    /// Every record's; a checkpoint (v2) signs it.
    #[serde(borrow, default)]
    time: Option<&'a str>,
    #[serde(borrow, default)]
    chain_head: Option<&'a str>,
    /// A v2 checkpoint's; a v1 checkpoint has none.
    #[serde(borrow, default)]
    next_due: Option<&'a str>,
    #[serde(borrow, default)]
    key_id: Option<&'a str>,
    #[serde(borrow, default)]
    signature: Option<&'a str>,
}

/// Verifies the trail in `dir`. `public_key` is the raw 32-byte Ed25519 key; without it the
/// chain is checked but checkpoint signatures cannot be.
pub fn verify(dir: &Path, public_key: Option<&[u8]>, opts: &VerifyOptions) -> Result<Report, VerifyError> {
    verify_expecting(dir, public_key, opts, &Expected::default())
}

/// [`verify`], and then what the auditor knows from outside the trail must hold too: every
/// witnessed checkpoint is in it, unchanged, and its last checkpoint shows the gateway ran
/// until `expected.until` (see `expect`).
pub fn verify_expecting(
    dir: &Path,
    public_key: Option<&[u8]>,
    opts: &VerifyOptions,
    expected: &Expected,
) -> Result<Report, VerifyError> {
    let files = read::list_files(dir)?;
    let file_count = files.len();
    let mut lines = Lines::new(files);
    let mut witnesses: Vec<&Witness> = expected.witnesses.iter().collect();
    witnesses.sort_by_key(|w| w.seq);
    let mut chain = Chain {
        key: public_key.map(|k| (UnparsedPublicKey::new(&ED25519, k), key_id(k))),
        prev_hash: GENESIS,
        next_seq: 1,
        records: 0,
        checkpoints: 0,
        last_checkpoint: None,
        last: None,
        file_first_seq: None,
        witnesses,
        witnessed: 0,
    };
    while let Some(item) = lines.next_item()? {
        match item {
            // An empty file holds no record, so there is nothing to check until the next file
            // starts: a gap then shows as a seq gap there.
            Item::FileStart(file) => chain.file_first_seq = Some(file.first_seq),
            Item::Line { pos, bytes, terminated } => chain.check_line(pos, bytes, terminated)?,
        }
    }
    chain.finish(file_count, opts, expected)
}

// === impl Chain ===

/// The verifier's state between lines.
struct Chain<'k, 'e> {
    key: Option<(UnparsedPublicKey<&'k [u8]>, String)>,
    /// Hex of the previous record's hash (as written in the trail).
    prev_hash: [u8; 64],
    next_seq: u64,
    records: u64,
    checkpoints: u64,
    last_checkpoint: Option<LastCheckpoint>,
    /// (file, line) of the last record, to name it if the tail is unsealed.
    last: Option<(String, u64)>,
    /// The number in the current file's name, until its first record has been checked.
    file_first_seq: Option<u64>,
    /// Witnessed checkpoints by `seq`; those before `witnessed` have been found.
    witnesses: Vec<&'e Witness>,
    witnessed: usize,
}

impl Chain<'_, '_> {
    fn check_line(&mut self, pos: Position<'_>, line: &[u8], terminated: bool) -> Result<(), VerifyError> {
        let broken = |seq: Option<u64>, problem: String| {
            VerifyError::Broken(Broken {
                file: pos.file.name.clone(),
                line: pos.line,
                seq,
                problem,
            })
        };
        let cut = if terminated {
            ""
        } else {
            " (the file ends mid-line: a write cut short?)"
        };
        let Some(body_end) = hash_tail(line) else {
            return Err(broken(None, format!("line does not end with a \"hash\" member{cut}")));
        };
        let stated_hash = &line[body_end + HASH_KEY.len()..line.len() - 2];
        let head: Head<'_> =
            serde_json::from_slice(line).map_err(|e| broken(None, format!("line is not a valid record: {e}{cut}")))?;
        let seq = head.seq;

        if seq != self.next_seq {
            let problem = if seq > self.next_seq && self.file_first_seq.is_some() {
                format!(
                    "expected seq {}, found {seq}: records {}..={} are missing (a file removed?)",
                    self.next_seq,
                    self.next_seq,
                    seq - 1
                )
            } else if seq > self.next_seq {
                format!(
                    "expected seq {}, found {seq}: records are missing or out of order",
                    self.next_seq
                )
            } else {
                format!(
                    "expected seq {}, found {seq}: a record out of order or inserted",
                    self.next_seq
                )
            };
            return Err(broken(Some(seq), problem));
        }
        if let Some(named) = self.file_first_seq.take() {
            if named != seq {
                return Err(broken(
                    Some(seq),
                    format!("the file's name says it starts at seq {named}, but its first record has seq {seq}"),
                ));
            }
        }

        // hash = SHA-256(prev ‖ "\n" ‖ body), body = the line up to the hash member, plus "}".
        // Fed in pieces so the body is never copied.
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&self.prev_hash);
        ctx.update(b"\n");
        ctx.update(&line[..body_end]);
        ctx.update(b"}");
        let mut computed = [0u8; 64];
        hex_into(ctx.finish().as_ref(), &mut computed);
        if computed[..] != *stated_hash {
            return Err(broken(
                Some(seq),
                "hash does not match the record's content: the record was altered".into(),
            ));
        }
        if head.prev.as_bytes() != self.prev_hash {
            return Err(broken(
                Some(seq),
                format!("prev does not match the hash of the record before it (seq {})", seq - 1),
            ));
        }

        if head.event == "checkpoint" {
            self.check_checkpoint(&head).map_err(|p| broken(Some(seq), p))?;
            self.checkpoints += 1;
            let time = head.time.unwrap_or_default();
            let last = self.last_checkpoint.get_or_insert_with(LastCheckpoint::default);
            last.set(seq, time, head.next_due, &pos.file.name, pos.line);
        }
        while let Some(w) = self.witnesses.get(self.witnessed).filter(|w| w.seq == seq) {
            expect::check_witnessed(w, head.event, &computed).map_err(|p| broken(Some(seq), p))?;
            self.witnessed += 1;
        }

        self.prev_hash = computed;
        self.next_seq = seq + 1;
        self.records += 1;
        match &mut self.last {
            // Reuse the name's allocation while in one file: no allocation per line.
            Some((name, line_no)) if *name == pos.file.name => *line_no = pos.line,
            last => *last = Some((pos.file.name.clone(), pos.line)),
        }
        Ok(())
    }

    /// A checkpoint seals the chain up to the record before it. Its `prev` has already been
    /// checked, so `chain_head` must equal it.
    fn check_checkpoint(&self, head: &Head<'_>) -> Result<(), String> {
        let chain_head = head.chain_head.ok_or("checkpoint without chain_head")?;
        if chain_head.as_bytes() != self.prev_hash {
            return Err(format!(
                "checkpoint chain_head is not the hash of the record before it (seq {})",
                head.seq - 1
            ));
        }
        let Some((key, expected_id)) = &self.key else {
            return Ok(());
        };
        let key_id = head.key_id.ok_or("checkpoint without key_id")?;
        if key_id != expected_id {
            return Err(format!(
                "checkpoint signed by key {key_id}, not by the given public key ({expected_id})"
            ));
        }
        let signature = head.signature.ok_or("checkpoint without signature")?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .map_err(|_| "checkpoint signature is not base64")?;
        // v2 signs the time and next_due too; a record without next_due is v1 (an older trail).
        let message = match head.next_due {
            Some(next_due) => {
                let time = head.time.ok_or("checkpoint without time")?;
                checkpoint::checkpoint_message(head.seq, chain_head, time, next_due)
            }
            None => checkpoint::checkpoint_message_v1(head.seq, chain_head),
        };
        key.verify(&message, &signature)
            .map_err(|_| "checkpoint signature is not valid for the given public key".to_string())
    }

    fn finish(self, files: usize, opts: &VerifyOptions, expected: &Expected) -> Result<Report, VerifyError> {
        let last_seq = self.next_seq - 1;
        expect::check_reached(self.witnesses.get(self.witnessed).copied(), last_seq)?;
        let last_checkpoint_seq = self.last_checkpoint.as_ref().map(|c| c.seq);
        let mut unsealed_tail = None;
        if self.key.is_some() {
            let sealed = last_checkpoint_seq.unwrap_or(0);
            if sealed < last_seq {
                let n = last_seq - sealed;
                let problem = match last_checkpoint_seq {
                    Some(at) => {
                        format!("unsealed tail: {n} records after the last checkpoint (seq {at})")
                    }
                    None => format!("unsealed tail: {n} records and no checkpoint"),
                };
                if !opts.allow_unsealed_tail {
                    let (file, line) = self.last.unwrap_or_default();
                    return Err(VerifyError::Broken(Broken {
                        file,
                        line,
                        seq: Some(last_seq),
                        problem: format!(
                            "{problem}; the trail may have been cut short (allow_unsealed_tail accepts this)"
                        ),
                    }));
                }
                unsealed_tail = Some(n);
            }
        }
        expect::check_until(expected.until, self.last_checkpoint.as_ref())?;
        Ok(Report {
            records: self.records,
            files,
            checkpoints: self.checkpoints,
            signatures_checked: self.key.is_some(),
            last_seq,
            unsealed_tail,
            last_checkpoint: self.last_checkpoint,
            witnessed: self.witnessed,
        })
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

fn hex_into(bytes: &[u8], out: &mut [u8; 64]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = DIGITS[(b & 15) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tail_is_found_only_at_the_end() {
        let h = "a".repeat(64);
        let line = format!(r#"{{"seq":1,"prev":"x","hash":"{h}"}}"#);
        assert_eq!(hash_tail(line.as_bytes()), Some(line.len() - HASH_TAIL));
        assert_eq!(hash_tail(format!("{line} ").as_bytes()), None);
        let upper = line.replace('a', "A");
        assert_eq!(hash_tail(upper.as_bytes()), None);
        assert_eq!(hash_tail(b"{}"), None);
    }
}
