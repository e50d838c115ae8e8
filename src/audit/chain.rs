//! One record line and the SHA-256 chain that links it to the one before (SPEC §5).
//!
//! A line is `{"seq":N,"time":"…","event":"…",<event fields>,"prev":"<hex>","hash":"<hex>"}\n`.
//! `body` is the line without its final `,"hash":"…"` member, and
//! `hash = SHA-256(prev ‖ "\n" ‖ body)`. The writer and the recovery on open both go through
//! here so that there is exactly one definition of the bytes that get hashed.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::digest;

use super::{AuditError, Event};

/// The `prev` of record 1.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_MEMBER: &[u8] = b",\"hash\":\"";

/// A record's SHA-256 as 64 lowercase hex digits, by value: the chain's head moves with every
/// record, and this keeps it off the heap.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct HashHex([u8; 64]);

impl HashHex {
    pub(crate) const GENESIS: HashHex = HashHex([b'0'; 64]);

    fn of(digest: &[u8]) -> HashHex {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (pair, b) in out.chunks_exact_mut(2).zip(digest) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 15)];
        }
        HashHex(out)
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ever hex digits (see `of`).
        std::str::from_utf8(&self.0).unwrap_or(GENESIS)
    }
}

impl std::fmt::Debug for HashHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The event's own members as serde_json writes them, without the surrounding braces, cut so
/// that the whole line takes at most `max_record_bytes` (see `cut`).
///
/// Done by the caller, not the writer thread, so serialisation runs in parallel on the
/// runtime's workers and the one thread that owns the files only splices bytes and hashes.
pub(crate) fn event_fields(event: &Event, max_record_bytes: u64) -> Result<Vec<u8>, AuditError> {
    thread_local! {
        /// Serialisation happens here and only the result is copied out, at its exact size:
        /// no regrowth, and a small allocation that the allocator's per-thread cache serves.
        /// (A buffer of 1 KiB or more bypasses that cache, and its free, which is often on
        /// another thread, then takes the arena's lock.)
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(|json| {
        json.clear();
        serde_json::to_writer(&mut *json, event)
            .map_err(|e| AuditError::Invalid(format!("cannot serialise {} record: {e}", event.name())))?;
        match json.as_slice() {
            [b'{', members @ .., b'}'] => {
                let budget = usize::try_from(max_record_bytes)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(super::cut::envelope(event.name()));
                Ok(super::cut::fit(members, budget))
            }
            _ => Err(AuditError::Invalid(format!(
                "{} record is not a JSON object",
                event.name()
            ))),
        }
    })
}

/// Appends one complete line (with its `\n`) to `out` and returns its hash (lowercase hex).
///
/// `fields` are JSON members without braces (may be empty); `prev` is the previous hash.
pub(crate) fn encode(out: &mut Vec<u8>, seq: u64, time: &str, event: &str, fields: &[u8], prev: &str) -> HashHex {
    let start = out.len();
    // Writes into a Vec cannot fail.
    let _ = write!(out, "{{\"seq\":{seq},\"time\":\"{time}\",\"event\":\"{event}\"");
    if !fields.is_empty() {
        out.push(b',');
        out.extend_from_slice(fields);
    }
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(prev.as_bytes());
    out.extend_from_slice(b"\"}");
    let hash = chain_hash(prev, &out[start..]);
    out.pop();
    out.extend_from_slice(HASH_MEMBER);
    out.extend_from_slice(&hash.0);
    out.extend_from_slice(b"\"}\n");
    hash
}

/// Serialises `event` and appends it to `out` as record `seq` after `prev`, exactly as the
/// writer does minus the I/O; returns its hash. For the benchmark, not a stable interface.
#[doc(hidden)]
pub fn encode_event(out: &mut Vec<u8>, seq: u64, event: &Event, prev: &str) -> Result<String, AuditError> {
    let fields = event_fields(event, crate::config::DEFAULT_MAX_RECORD_BYTES)?;
    let time = Clock::default().next();
    Ok(encode(out, seq, time.as_str(), event.name(), &fields, prev)
        .as_str()
        .to_string())
}

/// `SHA-256(prev ‖ "\n" ‖ body)` as lowercase hex.
pub(crate) fn chain_hash(prev: &str, body: &[u8]) -> HashHex {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev.as_bytes());
    ctx.update(b"\n");
    ctx.update(body);
    HashHex::of(ctx.finish().as_ref())
}

/// What recovery needs from the last line of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LastRecord {
    pub seq: u64,
    pub hash: HashHex,
    pub event: String,
}

/// Parses one line (without `\n`) and checks that its `hash` matches its own body and `prev`.
///
/// This cannot prove the line belongs to the chain (that needs the record before it), only
/// that it is whole: enough to continue the chain after it.
pub(crate) fn check_line(line: &[u8]) -> Result<LastRecord, String> {
    let at = line
        .windows(HASH_MEMBER.len())
        .rposition(|w| w == HASH_MEMBER)
        .ok_or("no \"hash\" member")?;
    let tail = &line[at + HASH_MEMBER.len()..];
    if tail.len() != 64 + 2 || !tail.ends_with(b"\"}") {
        return Err("\"hash\" is not the last member or not 64 hex digits".into());
    }
    let hash = std::str::from_utf8(&tail[..64]).map_err(|_| "\"hash\" is not hex")?;
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let seq = value["seq"].as_u64().ok_or("no numeric \"seq\"")?;
    let prev = value["prev"].as_str().ok_or("no \"prev\"")?;
    let event = value["event"].as_str().ok_or("no \"event\"")?;
    let mut body = line[..at].to_vec();
    body.push(b'}');
    let computed = chain_hash(prev, &body);
    if computed.as_str() != hash {
        return Err(format!("record {seq}: hash does not match its contents"));
    }
    Ok(LastRecord {
        seq,
        hash: computed,
        event: event.to_string(),
    })
}

// === impl Clock ===

/// Record times: microseconds, UTC, never going backwards within one writer, so that the
/// order of `seq` is also the order of `time` even if the system clock steps back.
#[derive(Debug, Clone, Default)]
pub(crate) struct Clock {
    last_micros: u64,
    /// The formatted time of `last_micros` without its fraction (`…T05:08:59.`), reused for
    /// every record within the same second: formatting the date is most of the cost.
    second: Option<(u64, String)>,
}

impl Clock {
    /// The next record time as `2026-11-22T05:08:59.123456Z`.
    pub(crate) fn next(&mut self) -> Stamp {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.last_micros = self.last_micros.max(now);
        self.format(self.last_micros)
    }

    /// `format_micros(micros)`, with the date and time of day formatted once per second.
    fn format(&mut self, micros: u64) -> Stamp {
        let (secs, mut frac) = (micros / 1_000_000, micros % 1_000_000);
        let prefix = match &self.second {
            Some((s, prefix)) if *s == secs => prefix,
            _ => {
                let mut full = format_micros(secs * 1_000_000);
                full.truncate(full.len() - "000000Z".len());
                &self.second.insert((secs, full)).1
            }
        };
        let mut digits = *b"000000Z";
        for d in digits[..6].iter_mut().rev() {
            *d = b'0' + (frac % 10) as u8;
            frac /= 10;
        }
        let mut out = Stamp {
            bytes: [0; STAMP_MAX],
            len: 0,
        };
        for part in [prefix.as_bytes(), &digits] {
            let end = (out.len + part.len()).min(STAMP_MAX);
            out.bytes[out.len..end].copy_from_slice(&part[..end - out.len]);
            out.len = end;
        }
        out
    }
}

/// Room for any RFC 3339 time `format_micros` writes (27 bytes until the year 10000).
const STAMP_MAX: usize = 32;

/// One record's time, by value (one is made for every record).
#[derive(Clone, Copy)]
pub(crate) struct Stamp {
    bytes: [u8; STAMP_MAX],
    len: usize,
}

impl Stamp {
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

/// RFC 3339 UTC with exactly six fractional digits.
pub(crate) fn format_micros(micros: u64) -> String {
    let secs = (micros / 1_000_000) as i64;
    let frac = micros % 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{frac:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        // Only reachable for times past year 9999, which SystemTime cannot produce here.
        Err(_) => format!("9999-12-31T23:59:59.{frac:06}Z"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_check_line_round_trips() {
        let mut out = Vec::new();
        let h1 = encode(
            &mut out,
            1,
            "2026-11-22T05:08:59.123456Z",
            "lifecycle",
            br#""action":"start""#,
            GENESIS,
        );
        let line = &out[..out.len() - 1];
        assert_eq!(*out.last().unwrap(), b'\n');
        let last = check_line(line).unwrap();
        assert_eq!(
            last,
            LastRecord {
                seq: 1,
                hash: h1,
                event: "lifecycle".into()
            }
        );
        assert!(std::str::from_utf8(line).unwrap().starts_with(
            r#"{"seq":1,"time":"2026-11-22T05:08:59.123456Z","event":"lifecycle","action":"start","prev":"0000"#
        ));

        let mut tampered = line.to_vec();
        let pos = tampered.windows(5).position(|w| w == b"start").unwrap();
        tampered[pos] = b'S';
        assert!(check_line(&tampered).is_err());
    }

    #[test]
    fn empty_fields_make_valid_json() {
        let mut out = Vec::new();
        encode(&mut out, 7, "2026-01-01T00:00:00.000000Z", "x", b"", GENESIS);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["seq"], 7);
    }

    #[test]
    fn time_has_microseconds_and_parses_as_rfc3339() {
        assert_eq!(format_micros(1_795_324_139_123_456), "2026-11-22T05:08:59.123456Z");
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
        let mut clock = Clock::default();
        // Within a second, across seconds, back to an earlier second: as format_micros says.
        for micros in [
            1_795_324_139_123_456,
            1_795_324_139_000_001,
            1_795_324_139_999_999,
            1_795_324_140_000_000,
            1_795_324_140_000_070,
            0,
        ] {
            assert_eq!(clock.format(micros).as_str(), format_micros(micros));
        }
        let (a, b) = (clock.next(), clock.next());
        assert!(a.as_str() <= b.as_str());
        let parsed = time::OffsetDateTime::parse(a.as_str(), &time::format_description::well_known::Rfc3339);
        assert!(parsed.is_ok(), "{}", a.as_str());
    }

    #[test]
    fn chain_hash_is_the_lowercase_hex_of_the_sha256() {
        let expected = digest::digest(&digest::SHA256, format!("{GENESIS}\nbody").as_bytes());
        assert_eq!(chain_hash(GENESIS, b"body").as_str(), crate::hex(expected.as_ref()));
        assert_eq!(HashHex::GENESIS.as_str(), GENESIS);
    }
}
