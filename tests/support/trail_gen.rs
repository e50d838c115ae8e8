//! A trail generator for the reader's tests and benchmark, written from SPEC §5 and independent
//! of the gateway's writer: if the two disagree about the format, the tests say so.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::digest;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// One access record's variable parts; the rest is filled in.
#[derive(Clone, Default)]
pub struct Req<'a> {
    pub id: &'a str,
    pub org: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub route: &'a str,
    pub deny: Option<&'a str>,
    pub nhs: Option<&'a str>,
    pub study: Option<&'a str>,
    pub fhir: Option<(&'a str, &'a str)>,
    pub interaction: Option<&'a str>,
    pub practitioner: Option<&'a str>,
    /// `clinical.nhs_numbers`, when the request names several patients.
    pub nhs_numbers: Vec<String>,
    /// `break_glass.reason`: the request was let through by break-glass.
    pub break_glass: Option<&'a str>,
}

pub struct Gen<'k> {
    dir: PathBuf,
    /// Signs checkpoints; `key_id` is written as given, so a test can forge one.
    key: Option<(&'k Ed25519KeyPair, String)>,
    records_per_file: u64,
    pub checkpoint_every: u64,
    seq: u64,
    prev: String,
    out: Option<BufWriter<File>>,
    in_file: u64,
    since_checkpoint: u64,
    /// Microseconds after 2026-11-22T00:00:00Z; advances 1 ms per record, tests may jump it.
    pub clock_us: u64,
    body: String,
}

pub fn new_key() -> Ed25519KeyPair {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("generate key");
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse key")
}

pub fn key_id(key: &Ed25519KeyPair) -> String {
    hex(&digest::digest(&digest::SHA256, key.public_key().as_ref()).as_ref()[..8])
}

/// The public key as the gateway's `pki dev` writes it: PEM SubjectPublicKeyInfo.
pub fn public_key_pem(key: &Ed25519KeyPair) -> String {
    let mut der = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
    der.extend_from_slice(key.public_key().as_ref());
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// JSON string literal; the common case (nothing to escape) without serde.
fn js(out: &mut String, s: &str) {
    if s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(&serde_json::to_string(s).expect("string"));
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

impl<'k> Gen<'k> {
    pub fn new(dir: &Path, key: Option<(&'k Ed25519KeyPair, String)>, records_per_file: u64) -> Gen<'k> {
        Gen {
            dir: dir.to_path_buf(),
            key,
            records_per_file,
            checkpoint_every: 0,
            seq: 0,
            prev: "0".repeat(64),
            out: None,
            in_file: 0,
            since_checkpoint: 0,
            clock_us: 5 * 3_600_000_000,
            body: String::with_capacity(1024),
        }
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Appends one record: `fields` is the event's members, each preceded by a comma.
    pub fn append(&mut self, event: &str, fields: &str) {
        if self.out.is_none() || self.in_file == self.records_per_file {
            if let Some(mut f) = self.out.take() {
                f.flush().expect("flush");
            }
            let name = format!("audit-{:012}.jsonl", self.seq + 1);
            let file = File::create(self.dir.join(name)).expect("create");
            self.out = Some(BufWriter::with_capacity(1 << 16, file));
            self.in_file = 0;
        }
        self.seq += 1;
        self.in_file += 1;
        self.clock_us += 1000;
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        let _ = write!(body, r#"{{"seq":{},"time":""#, self.seq);
        self.write_time(&mut body);
        let _ = write!(body, r#"","event":"{event}"{fields},"prev":"{}"}}"#, self.prev);
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(self.prev.as_bytes());
        ctx.update(b"\n");
        ctx.update(body.as_bytes());
        let hash = hex(ctx.finish().as_ref());
        let out = self.out.as_mut().expect("open");
        out.write_all(&body.as_bytes()[..body.len() - 1]).expect("write");
        writeln!(out, ",\"hash\":\"{hash}\"}}").expect("write");
        self.prev = hash;
        self.body = body;
        if event == "checkpoint" {
            self.since_checkpoint = 0;
        } else {
            self.since_checkpoint += 1;
            if self.checkpoint_every > 0 && self.since_checkpoint == self.checkpoint_every {
                self.checkpoint();
            }
        }
    }

    fn write_time(&self, out: &mut String) {
        let day = self.clock_us / 86_400_000_000;
        let date = time::macros::date!(2026 - 11 - 22) + time::Duration::days(day as i64);
        let us = self.clock_us % 86_400_000_000;
        let s = us / 1_000_000;
        let _ = write!(
            out,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            date.year(),
            date.month() as u8,
            date.day(),
            s / 3600,
            s / 60 % 60,
            s % 60,
            us % 1_000_000
        );
    }

    pub fn checkpoint(&mut self) {
        let Some((key, key_id)) = &self.key else {
            return;
        };
        let message = format!("caregate-checkpoint-v1\n{}\n{}\n", self.seq + 1, self.prev);
        let sig = base64::engine::general_purpose::STANDARD.encode(key.sign(message.as_bytes()));
        let fields = format!(
            r#","chain_head":"{}","key_id":"{key_id}","signature":"{sig}""#,
            self.prev
        );
        self.append("checkpoint", &fields);
    }

    /// A checkpoint as the gateway writes them since issue 19: with the time by which the next
    /// is due, `next_due` (`due_us` on the generator's clock). Unsigned without a key.
    pub fn checkpoint_due(&mut self, due_us: u64) {
        let mut due = String::new();
        let clock = std::mem::replace(&mut self.clock_us, due_us);
        self.write_time(&mut due);
        self.clock_us = clock;
        let (key_id, sig) = match &self.key {
            Some((key, id)) => {
                let message = format!("caregate-checkpoint-v1\n{}\n{}\n", self.seq + 1, self.prev);
                (
                    id.clone(),
                    base64::engine::general_purpose::STANDARD.encode(key.sign(message.as_bytes())),
                )
            }
            None => (String::new(), String::new()),
        };
        let fields = format!(
            r#","chain_head":"{}","next_due":"{due}","key_id":"{key_id}","signature":"{sig}""#,
            self.prev
        );
        self.append("checkpoint", &fields);
    }

    pub fn access(&mut self, r: &Req<'_>) {
        let mut f = String::with_capacity(600);
        f.push_str(",\"request_id\":");
        js(&mut f, r.id);
        f.push_str(",\"client\":{\"org\":");
        js(&mut f, r.org);
        let _ = write!(
            f,
            r#","org_name":"Org {org}","subject":"CN=system.{org}.nhs.uk,O={org}","fingerprint":"{fp}","serial":"01ab","ip":"10.0.0.7","port":51234}}"#,
            org = r.org,
            fp = "ab".repeat(32)
        );
        let _ = write!(
            f,
            r#","request":{{"method":"{}","host":"epr.example.nhs.uk","path":"#,
            r.method
        );
        js(&mut f, r.path);
        if let Some(q) = r.query {
            f.push_str(",\"query\":");
            js(&mut f, q);
        }
        let (decision, reason) = match r.deny {
            Some(reason) => ("deny", reason),
            None => ("allow", "allowed"),
        };
        let _ = write!(
            f,
            r#","version":"HTTP/1.1"}},"route":"{route}","class":"standard","decision":"{decision}","reason":"{reason}","rule":"{route}/allow[0]""#,
            route = r.route
        );
        if let Some(reason) = r.break_glass {
            f.push_str(",\"break_glass\":{\"reason\":");
            js(&mut f, reason);
            f.push('}');
        }
        let mut clinical = String::new();
        let mut add = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                let _ = write!(clinical, "{}\"{k}\":", if clinical.is_empty() { "" } else { "," });
                js(&mut clinical, v);
            }
        };
        add("fhir_type", r.fhir.map(|f| f.0));
        add("fhir_id", r.fhir.map(|f| f.1));
        add("nhs_number", r.nhs);
        add("study_uid", r.study);
        add("interaction", r.interaction);
        add("token_practitioner", r.practitioner);
        if !r.nhs_numbers.is_empty() {
            let list = serde_json::to_string(&r.nhs_numbers).expect("list");
            let _ = write!(
                clinical,
                "{}\"nhs_numbers\":{list}",
                if clinical.is_empty() { "" } else { "," }
            );
        }
        if !clinical.is_empty() {
            let _ = write!(f, r#","clinical":{{{clinical}}}"#);
        }
        self.append("access", &f);
    }

    pub fn complete(&mut self, id: &str, status: u16, outcome: &str) {
        let fields = format!(
            r#","request_id":"{id}","status":{status},"bytes_in":0,"bytes_out":1234,"duration_ms":12,"outcome":"{outcome}""#
        );
        self.append("complete", &fields);
    }

    pub fn lifecycle(&mut self, action: &str) {
        let fields = format!(r#","action":"{action}","config_sha256":"{}""#, "c".repeat(64));
        self.append("lifecycle", &fields);
    }

    pub fn tls_rejected(&mut self) {
        self.append(
            "tls_rejected",
            r#","client":{"ip":"10.9.9.9","port":40000},"sni":"gw.example.nhs.uk","reason":"no_certificate""#,
        );
    }

    /// Writes what is buffered, so a reader sees every record appended so far.
    pub fn flush(&mut self) {
        if let Some(f) = &mut self.out {
            f.flush().expect("flush");
        }
    }

    /// Flushes; with `seal`, ends with a checkpoint as a gateway does at shutdown.
    pub fn finish(mut self, seal: bool) {
        if seal {
            self.checkpoint();
        }
        if let Some(mut f) = self.out.take() {
            f.flush().expect("flush");
        }
    }
}

/// `n` generated records in the steady-state mix (access + complete pairs, a checkpoint every
/// 1000 records, files of 100k records), every 10th request naming patient 9990000042.
pub fn bulk(dir: &Path, key: &Ed25519KeyPair, n: u64) {
    let mut g = Gen::new(dir, Some((key, key_id(key))), 100_000);
    g.checkpoint_every = 1000;
    g.lifecycle("start");
    let mut i = 0u64;
    let mut rid = String::new();
    let mut path = String::new();
    while g.seq() + 3 <= n {
        rid.clear();
        let _ = write!(rid, "req-{i:010}");
        path.clear();
        let nhs = if i.is_multiple_of(10) {
            "9990000042"
        } else {
            "9990000034"
        };
        let _ = write!(path, "/fhir/Patient/{nhs}");
        let deny = i.is_multiple_of(7);
        g.access(&Req {
            id: &rid,
            org: if i.is_multiple_of(2) { "A81001" } else { "RX1" },
            method: "GET",
            path: &path,
            route: "epr-fhir",
            deny: deny.then_some("not_allowed"),
            nhs: Some(nhs),
            fhir: Some(("Patient", nhs)),
            interaction: Some("read"),
            ..Req::default()
        });
        g.complete(&rid, if deny { 403 } else { 200 }, "ok");
        i += 1;
    }
    g.finish(true);
}

/// The `n`th valid NHS number of the test range (999 000 0000 to 999 999 9999): the check digit
/// (modulus 11) computed, numbers whose check would be 10 skipped.
pub fn nhs_number(n: u32) -> String {
    let mut k = 0;
    for body in 0u32.. {
        let digits = format!("999{body:06}");
        let sum: u32 = digits
            .bytes()
            .enumerate()
            .map(|(i, b)| u32::from(b - b'0') * (10 - i as u32))
            .sum();
        let check = (11 - sum % 11) % 11;
        if check == 10 {
            continue;
        }
        if k == n {
            return format!("{digits}{check}");
        }
        k += 1;
    }
    unreachable!()
}
