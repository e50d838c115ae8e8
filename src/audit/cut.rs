//! No record longer than `audit.max_record_bytes` (SPEC §8: "Cut fields keep `<field>_len` and
//! `<field>_sha256`").
//!
//! Done once, where every event is serialised (`chain::event_fields`, on the caller's thread):
//! the writer, the chain and `audit verify` then see an ordinary line, so a cut record is
//! chained and verified like any other, and nothing else needs to know. Checkpoints are made by
//! the writer itself and are short by construction.
//!
//! A record over the limit has its longest fields cut first, until it fits:
//! - a string keeps a prefix of at most [`KEEP`] bytes as written (escapes included, never
//!   splitting a character), and gains `<field>_len` (the original value's length in bytes,
//!   UTF-8, unescaped) and `<field>_sha256` (lowercase hex of those bytes), so anyone holding
//!   the original can show that it is what was sent;
//! - a list keeps its leading items that fit in [`KEEP`] bytes, and `<field>_len` and
//!   `<field>_sha256` are of the whole list's JSON text as it would have been written.
//!
//! The new members sit right after the cut one, in the same object (`client.subject_len`).
//! A record that still does not fit once every such field is cut (only possible with a very
//! small `max_record_bytes`) keeps its `request_id` and `fields_len`, `fields_sha256` of all
//! its original members.

use std::ops::Range;

use ring::digest;

/// The most bytes a cut string or list keeps, as written.
pub(crate) const KEEP: usize = 256;

/// Bytes a line takes besides its event's members: `{"seq":N,"time":"…","event":"…",` and
/// `,"prev":"…","hash":"…"}\n`, with `seq` at its widest.
pub(crate) fn envelope(event: &str) -> usize {
    const FIXED: &[&str] = &[
        "{\"seq\":",
        "18446744073709551615",
        ",\"time\":\"",
        "\",\"event\":\"",
        "\",",
        ",\"prev\":\"",
        "\",\"hash\":\"",
        "\"}\n",
    ];
    // 32: the widest time the clock writes (`chain::Stamp`); 64 + 64: prev and hash.
    FIXED.iter().map(|s| s.len()).sum::<usize>() + 32 + 64 + 64 + event.len()
}

/// `members` (an event's JSON members, without braces), cut to at most `budget` bytes. Members
/// already within it come back as they are.
pub(crate) fn fit(members: &[u8], budget: usize) -> Vec<u8> {
    if members.len() <= budget {
        return members.to_vec();
    }
    let mut scan = Scanner {
        s: members,
        i: 0,
        in_list: 0,
        depth: 0,
        fields: Vec::new(),
    };
    if scan.members(None).is_none() {
        return summary(members, &[]);
    }
    let mut order: Vec<&Field> = scan.fields.iter().filter(|f| f.value.len() > KEEP).collect();
    order.sort_by_key(|f| std::cmp::Reverse(f.value.len()));
    let mut size = members.len();
    let mut cuts: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
    for f in order {
        if size <= budget {
            break;
        }
        let new = cut(members, f);
        if new.len() < f.value.len() {
            size = size - f.value.len() + new.len();
            cuts.push((f.value.clone(), new));
        }
    }
    if size > budget {
        return summary(members, &scan.fields);
    }
    cuts.sort_by_key(|(at, _)| at.start);
    let mut out = Vec::with_capacity(size);
    let mut from = 0;
    for (at, new) in cuts {
        out.extend_from_slice(&members[from..at.start]);
        out.extend_from_slice(&new);
        from = at.end;
    }
    out.extend_from_slice(&members[from..]);
    out
}

/// A member whose value may be cut: a string or a list, not inside a list.
struct Field {
    /// The key, quotes included.
    key: Range<usize>,
    value: Range<usize>,
    /// A list's items; `None` for a string.
    items: Option<Vec<Range<usize>>>,
    /// A member of the record itself, not of an object within it.
    top: bool,
}

/// Finds the fields of serde_json's compact output (trusted to be valid JSON: `None` if not).
struct Scanner<'a> {
    s: &'a [u8],
    i: usize,
    in_list: u32,
    depth: u32,
    fields: Vec<Field>,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// An object's members up to `end` (`}`), or to the end of the text for the record's own.
    fn members(&mut self, end: Option<u8>) -> Option<()> {
        if self.peek() == end {
            return Some(());
        }
        loop {
            let key = self.string()?;
            if self.peek()? != b':' {
                return None;
            }
            self.i += 1;
            let start = self.i;
            let items = match self.peek()? {
                b'"' => {
                    self.string()?;
                    Some(None)
                }
                b'[' => Some(Some(self.list()?)),
                _ => {
                    self.value()?;
                    None
                }
            };
            if let Some(items) = items.filter(|_| self.in_list == 0) {
                let (value, top) = (start..self.i, self.depth == 0);
                self.fields.push(Field { key, value, items, top });
            }
            match self.peek() {
                Some(b',') => self.i += 1,
                next if next == end => return Some(()),
                _ => return None,
            }
        }
    }

    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'[' => self.list().map(drop),
            b'{' => {
                self.i += 1;
                self.depth += 1;
                self.members(Some(b'}'))?;
                self.depth -= 1;
                self.i += 1;
                Some(())
            }
            _ => {
                while !matches!(self.peek(), None | Some(b',' | b']' | b'}')) {
                    self.i += 1;
                }
                Some(())
            }
        }
    }

    /// A string, quotes included.
    fn string(&mut self) -> Option<Range<usize>> {
        let start = self.i;
        if self.peek()? != b'"' {
            return None;
        }
        self.i += 1;
        loop {
            match self.peek()? {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return Some(start..self.i);
                }
                _ => self.i += 1,
            }
        }
    }

    /// A list's items.
    fn list(&mut self) -> Option<Vec<Range<usize>>> {
        self.i += 1;
        self.in_list += 1;
        let mut items = Vec::new();
        if self.peek()? != b']' {
            loop {
                let start = self.i;
                self.value()?;
                items.push(start..self.i);
                match self.peek()? {
                    b',' => self.i += 1,
                    b']' => break,
                    _ => return None,
                }
            }
        }
        self.i += 1;
        self.in_list -= 1;
        Some(items)
    }
}

/// What replaces a field's value: the kept part, then `,"<key>_len":N,"<key>_sha256":"…"`.
fn cut(s: &[u8], f: &Field) -> Vec<u8> {
    let text = &s[f.value.clone()];
    let mut out = Vec::with_capacity(KEEP + 128);
    let original: Vec<u8> = match &f.items {
        None => {
            // The value as sent: unescaped.
            let value: String = serde_json::from_slice(text).unwrap_or_default();
            let kept = prefix(&value, KEEP - 2);
            // Writes into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, kept);
            value.into_bytes()
        }
        Some(items) => {
            out.push(b'[');
            for item in items {
                let sep = usize::from(out.len() > 1);
                if out.len() + sep + item.len() + 1 > KEEP {
                    break;
                }
                if sep == 1 {
                    out.push(b',');
                }
                out.extend_from_slice(&s[item.clone()]);
            }
            out.push(b']');
            text.to_vec()
        }
    };
    let key = &s[f.key.start..f.key.end - 1];
    out.push(b',');
    out.extend_from_slice(key);
    out.extend_from_slice(format!("_len\":{},", original.len()).as_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(b"_sha256\":\"");
    out.extend_from_slice(sha256_hex(&original).as_bytes());
    out.push(b'"');
    out
}

/// The longest prefix of `value` whose JSON escaping (without quotes) takes at most `max` bytes.
fn prefix(value: &str, max: usize) -> &str {
    let mut used = 0;
    for (at, c) in value.char_indices() {
        // As serde_json escapes: the two-character escapes, `\u00XX` for other controls.
        used += match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if used > max {
            return &value[..at];
        }
    }
    value
}

/// The last resort: the record's `request_id` (when short) and the length and SHA-256 of all
/// its original members.
fn summary(members: &[u8], fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    let id = fields
        .iter()
        .find(|f| f.top && f.items.is_none() && &members[f.key.clone()] == b"\"request_id\"" && f.value.len() <= 128);
    if let Some(f) = id {
        out.extend_from_slice(&members[f.key.start..f.value.end]);
        out.push(b',');
    }
    out.extend_from_slice(format!("\"fields_len\":{},\"fields_sha256\":\"", members.len()).as_bytes());
    out.extend_from_slice(sha256_hex(members).as_bytes());
    out.push(b'"');
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    crate::hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn members(v: &Value) -> Vec<u8> {
        let text = serde_json::to_vec(v).unwrap();
        text[1..text.len() - 1].to_vec()
    }

    fn parse(members: &[u8]) -> Value {
        let mut text = b"{".to_vec();
        text.extend_from_slice(members);
        text.push(b'}');
        serde_json::from_slice(&text).unwrap()
    }

    #[test]
    fn a_record_within_the_budget_is_left_alone() {
        let m = members(&json!({"request_id": "r", "client": {"ip": "10.0.0.1"}}));
        assert_eq!(fit(&m, 1000), m);
    }

    #[test]
    fn long_fields_keep_a_prefix_their_length_and_sha256() {
        let subject = format!("CN={}", "\"x\\\n".repeat(20_000));
        let ids: Vec<String> = (0..1000).map(|i| format!("id-{i}")).collect();
        let v = json!({
            "request_id": "abc",
            "client": {"subject": subject, "ip": "10.0.0.1", "port": 5},
            "clinical": {"patient_ids": ids, "fhir_type": "Patient"},
            "reason": "other",
        });
        let m = members(&v);
        let out = fit(&m, 2000);
        assert!(out.len() <= 2000, "{}", out.len());
        let cut = parse(&out);
        let kept = cut["client"]["subject"].as_str().unwrap();
        assert!(subject.starts_with(kept) && !kept.is_empty());
        assert!(serde_json::to_string(kept).unwrap().len() <= KEEP);
        assert_eq!(cut["client"]["subject_len"], subject.len());
        assert_eq!(cut["client"]["subject_sha256"], sha256_hex(subject.as_bytes()));
        let list = serde_json::to_vec(&v["clinical"]["patient_ids"]).unwrap();
        assert_eq!(cut["clinical"]["patient_ids_len"], list.len());
        assert_eq!(cut["clinical"]["patient_ids_sha256"], sha256_hex(&list));
        let first = cut["clinical"]["patient_ids"].as_array().unwrap();
        assert!(!first.is_empty() && first[0] == "id-0");
        // Everything else as it was, in its place.
        assert_eq!(
            (cut["request_id"].clone(), cut["reason"].clone()),
            (json!("abc"), json!("other"))
        );
        assert_eq!(cut["client"]["port"], 5);
        assert_eq!(cut["clinical"]["fhir_type"], "Patient");
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("\"client\":{\"ip\":\"10.0.0.1\",\"port\":5,\"subject\":\""),
            "{text}"
        );
    }

    #[test]
    fn only_what_must_be_cut_is_cut() {
        let v = json!({"a": "a".repeat(5000), "b": "b".repeat(400), "c": "c".repeat(300)});
        let cut = parse(&fit(&members(&v), 1200));
        assert_eq!(cut["a_len"], 5000);
        assert_eq!(cut["b"], v["b"]);
        assert_eq!(cut["c"], v["c"]);
    }

    #[test]
    fn a_prefix_never_splits_a_character() {
        let v = json!({"s": "é".repeat(1000)});
        let cut = parse(&fit(&members(&v), 600));
        assert!(cut["s"].as_str().unwrap().chars().all(|c| c == 'é'));
        assert_eq!(cut["s_len"], 2000);
    }

    #[test]
    fn a_record_with_too_many_long_fields_keeps_its_request_id_and_a_digest() {
        let mut v = json!({"request_id": "req-1"});
        for i in 0..50 {
            v[format!("field{i}")] = json!("x".repeat(1000));
        }
        let m = members(&v);
        let out = fit(&m, 600);
        assert!(out.len() <= 600);
        let cut = parse(&out);
        assert_eq!(cut["request_id"], "req-1");
        assert_eq!(cut["fields_len"], m.len());
        assert_eq!(cut["fields_sha256"], sha256_hex(&m));
    }

    #[test]
    fn the_envelope_covers_the_widest_line() {
        let mut line = Vec::new();
        let time = "2026-11-22T05:08:59.123456Z";
        crate::audit::chain::encode(
            &mut line,
            u64::MAX,
            time,
            "tls_rejected",
            b"",
            crate::audit::chain::GENESIS,
        );
        assert!(line.len() <= envelope("tls_rejected"));
    }
}
