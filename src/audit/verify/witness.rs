//! `caregate audit witness DIR`: the trail's newest checkpoint as one JSON line, to be kept
//! where whoever can rewrite the trail cannot (run from cron, written to another machine), and
//! `audit verify DIR --witness FILE`, which proves the trail still holds every checkpoint of
//! such a file: a trail cut before one of them is caught even though it still ends signed.
//!
//! ```json
//! {"seq":48211,"hash":"…","chain_head":"…","time":"2026-11-22T05:08:59.123456Z","next_due":"2026-11-22T05:09:59.123456Z","key_id":"…","signature":"…"}
//! ```
//!
//! The witness reads the trail from its end backwards, up to the newest checkpoint, so that it
//! costs little on a trail of any size and can run beside a live gateway: a last line still
//! being written is passed over. It checks that line's own hash; the chain and the signature
//! are `audit verify`'s to check.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::signature::{UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use super::{key_id, VerifyError};
use crate::audit::chain;
use crate::audit::checkpoint;
use crate::audit::read::{self, ReadError};

/// What proves a checkpoint existed: its `seq` and `hash` name the record (the hash covers all
/// of it), the rest lets the signature be checked without the trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witness {
    pub seq: u64,
    pub hash: String,
    pub chain_head: String,
    pub time: String,
    /// `None` for a v1 checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_due: Option<String>,
    pub key_id: String,
    pub signature: String,
}

impl Witness {
    /// Checks the signature with the raw public key, as `audit verify` checks the record's.
    pub fn check_signature(&self, public_key: &[u8]) -> Result<(), String> {
        let expected = key_id(public_key);
        if self.key_id != expected {
            return Err(format!(
                "signed by key {}, not by the given public key ({expected})",
                self.key_id
            ));
        }
        let signature = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| "its signature is not base64".to_string())?;
        let message = match &self.next_due {
            Some(due) => checkpoint::checkpoint_message(self.seq, &self.chain_head, &self.time, due),
            None => checkpoint::checkpoint_message_v1(self.seq, &self.chain_head),
        };
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(&message, &signature)
            .map_err(|_| "its signature is not valid for the given public key".to_string())
    }
}

/// Why `audit witness` wrote no witness.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(
        "the audit trail in {0} holds no checkpoint to witness (checkpoints are written with [audit] signing_key)"
    )]
    NoCheckpoint(PathBuf),
    #[error("the newest checkpoint, in {file}, is damaged ({why}): run caregate audit verify")]
    Damaged { file: String, why: String },
    #[error("cannot write the witness: {0}")]
    Output(io::Error),
}

impl WitnessError {
    /// 1: the trail has no sound checkpoint to witness; 2: it could not be read, or written out.
    pub fn exit_code(&self) -> u8 {
        match self {
            WitnessError::NoCheckpoint(_) | WitnessError::Damaged { .. } => 1,
            WitnessError::Read(_) | WitnessError::Output(_) => 2,
        }
    }
}

/// The command: writes the newest checkpoint's witness to `out`, one JSON line.
pub fn run(dir: &Path, out: &mut impl Write) -> Result<Witness, WitnessError> {
    let witness = latest(dir)?;
    let mut line = serde_json::to_vec(&witness).map_err(|e| WitnessError::Output(e.into()))?;
    line.push(b'\n');
    out.write_all(&line)
        .and_then(|()| out.flush())
        .map_err(WitnessError::Output)?;
    Ok(witness)
}

/// The newest checkpoint of the trail in `dir`.
pub fn latest(dir: &Path) -> Result<Witness, WitnessError> {
    for file in read::list_files(dir)?.iter().rev() {
        let io = |source| ReadError::Io {
            path: file.path.clone(),
            source,
        };
        let handle = File::open(&file.path).map_err(io)?;
        let len = handle.metadata().map_err(io)?.len();
        let found = last_line_where(&handle, len, is_checkpoint).map_err(io)?;
        if let Some(line) = found {
            return witness_of(&line).map_err(|why| WitnessError::Damaged {
                file: file.name.clone(),
                why,
            });
        }
    }
    Err(WitnessError::NoCheckpoint(dir.to_path_buf()))
}

/// `"event":"checkpoint"` as a member of the line itself: the quotes of a string inside a value
/// would be escaped, so a match is the record's own `event` (or a damaged line, which
/// [`witness_of`] then names).
fn is_checkpoint(line: &[u8]) -> bool {
    const EVENT: &[u8] = br#""event":"checkpoint""#;
    line.windows(EVENT.len()).any(|w| w == EVENT)
}

/// The witness of one checkpoint line, whose own hash must hold.
fn witness_of(line: &[u8]) -> Result<Witness, String> {
    let record = chain::check_line(line)?;
    if record.event != "checkpoint" {
        return Err(format!("seq {} is a {} record", record.seq, record.event));
    }
    let v: serde_json::Value = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let member = |name: &str| {
        v[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("checkpoint seq {} has no {name}", record.seq))
    };
    let chain_head = member("chain_head")?;
    if v["prev"].as_str() != Some(chain_head.as_str()) {
        return Err(format!("checkpoint seq {}: chain_head is not its prev", record.seq));
    }
    Ok(Witness {
        seq: record.seq,
        hash: record.hash.as_str().to_owned(),
        chain_head,
        time: member("time")?,
        next_due: v["next_due"].as_str().map(str::to_owned),
        key_id: member("key_id")?,
        signature: member("signature")?,
    })
}

/// The last complete line of `file`'s first `len` bytes (without its `\n`) that `accept`
/// takes, reading backwards in chunks; a last line without `\n` (a write in progress) is
/// passed over. Memory: one chunk and the line being looked at.
fn last_line_where(file: &File, len: u64, mut accept: impl FnMut(&[u8]) -> bool) -> io::Result<Option<Vec<u8>>> {
    const CHUNK: u64 = 64 * 1024;
    // The file's bytes [pos, pos + buf.len()); once a newline has been seen, `buf` ends with
    // the `\n` of the next line to look at (everything after it has been looked at).
    let mut pos = len;
    let mut buf: Vec<u8> = Vec::new();
    let mut at_line_end = false;
    loop {
        if !at_line_end {
            if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
                buf.truncate(i + 1);
                at_line_end = true;
            }
        }
        while at_line_end && buf.last() == Some(&b'\n') {
            let end = buf.len() - 1;
            let start = match buf[..end].iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if pos == 0 => 0,
                // The line starts before `buf`: read more.
                None => break,
            };
            if accept(&buf[start..end]) {
                return Ok(Some(buf[start..end].to_vec()));
            }
            buf.truncate(start);
        }
        if pos == 0 {
            return Ok(None);
        }
        let from = pos.saturating_sub(CHUNK);
        let mut chunk = vec![0; (pos - from) as usize];
        file.read_exact_at(&mut chunk, from)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        pos = from;
    }
}

/// Reads `--witness FILE`: every non-empty line a witness (`audit witness > FILE` writes one,
/// `>>` keeps a history). With the public key, each one's signature must hold: a witness the
/// key never signed proves nothing. A URL is for a later version.
pub fn read_witnesses(source: &str, public_key: Option<&[u8]>) -> Result<Vec<Witness>, VerifyError> {
    if source.contains("://") {
        return Err(VerifyError::Unusable(format!(
            "--witness {source}: a witness kept at a URL is not supported yet; give a file written by caregate audit witness"
        )));
    }
    let text = std::fs::read_to_string(source)
        .map_err(|e| VerifyError::Unusable(format!("cannot read witness file {source}: {e}")))?;
    let mut witnesses = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |why: String| VerifyError::Unusable(format!("witness file {source} line {}: {why}", i + 1));
        let w: Witness = serde_json::from_str(line)
            .map_err(|e| bad(format!("not a witness written by caregate audit witness ({e})")))?;
        let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if w.seq == 0 || !hex(&w.hash) || !hex(&w.chain_head) {
            return Err(bad("seq, hash or chain_head is not what a checkpoint holds".into()));
        }
        if let Some(key) = public_key {
            w.check_signature(key)
                .map_err(|why| bad(format!("checkpoint seq {}: {why}", w.seq)))?;
        }
        witnesses.push(w);
    }
    if witnesses.is_empty() {
        return Err(VerifyError::Unusable(format!("witness file {source} holds no witness")));
    }
    // The same checkpoint witnessed twice (an idle trail between two cron runs) counts once.
    witnesses.sort_by(|a, b| (a.seq, &a.hash).cmp(&(b.seq, &b.hash)));
    witnesses.dedup();
    Ok(witnesses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_back(text: &str, chunk_test: impl Fn(&[u8]) -> bool) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, text).unwrap();
        let f = File::open(&path).unwrap();
        last_line_where(&f, text.len() as u64, chunk_test)
            .unwrap()
            .map(|l| String::from_utf8(l).unwrap())
    }

    #[test]
    fn backwards_finds_the_last_accepted_complete_line() {
        let long = "y".repeat(200_000);
        let text = format!("x1\n{long}\nx2\nz\npartial x3");
        assert_eq!(lines_back(&text, |l| l.starts_with(b"x")).as_deref(), Some("x2"));
        assert_eq!(lines_back(&text, |l| l.starts_with(b"x1")).as_deref(), Some("x1"));
        assert_eq!(
            lines_back(&text, |l| l.starts_with(b"y")).as_deref(),
            Some(long.as_str())
        );
        // The partial last line is never offered.
        assert_eq!(lines_back(&text, |l| l.starts_with(b"partial")), None);
        assert_eq!(lines_back("no newline", |_| true), None);
        assert_eq!(lines_back("", |_| true), None);
        assert_eq!(lines_back("\nonly\n", |l| !l.is_empty()).as_deref(), Some("only"));
    }

    #[test]
    fn a_url_is_not_supported_yet() {
        let e = read_witnesses("postgres://audit@db/witnesses", None).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("not supported yet"), "{e}");
    }

    #[test]
    fn a_witness_file_must_hold_witnesses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.json");
        std::fs::write(&path, "\n").unwrap();
        let e = read_witnesses(path.to_str().unwrap(), None).unwrap_err();
        assert!(e.to_string().contains("holds no witness"), "{e}");
        std::fs::write(&path, "{\"seq\":1}\n").unwrap();
        let e = read_witnesses(path.to_str().unwrap(), None).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
}
