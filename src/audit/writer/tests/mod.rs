//! The writer against real files: every trail written here is re-checked by an independent
//! implementation of the chain (SPEC §5), not by the writer's own code. The fixtures and that
//! check are here; the tests, by subject, in the files below.

mod bounds;
mod checkpoint;
mod failure;
mod flush;
mod fsync;
mod trail;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use serde_json::Value;

use super::*;
use crate::audit::record::{Access, Client, Clinical, Complete, Lifecycle, RejectedClient, Request, TlsRejected};
use crate::config::Durability;

// === Waiting ===

/// Blocks until the writer has written `n` records (checkpoints included).
fn wait_written(log: &AuditLog, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while log.stats().records_written < n {
        assert!(Instant::now() < deadline, "writer did not write in time");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Spins (without awaiting, so a held gate never crosses an await) until `n` records are
/// queued; the records are sent by tasks on the runtime's other threads.
fn wait_queued(log: &AuditLog, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while log.stats().queue_depth < n {
        assert!(Instant::now() < deadline, "records were not queued in time");
        std::thread::yield_now();
    }
}

// === Fixtures ===

fn cfg(dir: &Path) -> config::Audit {
    config::Audit::in_dir(dir.join("audit"))
}

fn flush_cfg(dir: &Path) -> config::Audit {
    config::Audit {
        durability: Durability::Flush,
        ..cfg(dir)
    }
}

fn lifecycle(action: &str) -> Event {
    Event::Lifecycle(Lifecycle {
        action: action.into(),
        config_sha256: "ab".repeat(32),
    })
}

fn access(i: usize) -> Event {
    Event::Access(Box::new(Access {
        request_id: format!("req-{i}").into(),
        client_request_id: None,
        body_inspected: None,
        client: Client {
            org: Some("A81001".into()),
            org_name: Some("The \"Surgery\"\nLine two".into()),
            subject: Some("CN=gp.example.nhs.uk,OU=A81001".into()),
            fingerprint: Some("cd".repeat(32).into()),
            serial: Some("01".into()),
            ip: "10.1.2.3".into(),
            port: 50_000,
        },
        request: Request {
            method: "GET".into(),
            host: Some("epr.example.nhs.uk".into()),
            path: format!("/fhir/Patient/{i}"),
            path_params: Vec::new(),
            query: None,
            version: "HTTP/1.1".into(),
        },
        route: Some("epr-fhir".into()),
        class: Some("epr".into()),
        decision: "allow".into(),
        reason: "allowed".into(),
        rule: Some("epr-fhir/allow[0]".into()),
        break_glass: None,
        clinical: Clinical {
            fhir_type: Some("Patient".into()),
            nhs_number: Some("9990000034".into()),
            ..Default::default()
        },
    }))
}

fn complete(i: usize) -> Event {
    Event::Complete(Complete {
        request_id: format!("req-{i}").into(),
        status: 200,
        bytes_in: 0,
        bytes_out: 1234,
        duration_ms: 5,
        outcome: "ok".into(),
    })
}

fn tls_rejected() -> Event {
    Event::TlsRejected(TlsRejected {
        client: RejectedClient {
            ip: "10.9.9.9".into(),
            port: 1,
            ..Default::default()
        },
        sni: None,
        sni_len: None,
        sni_sha256: None,
        reason: "no_certificate".into(),
    })
}

/// Writes a fresh Ed25519 key as PKCS#8 PEM; returns its path and raw public key.
fn signing_key(dir: &Path) -> (PathBuf, Vec<u8>) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let public = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let path = dir.join("audit-signing.key");
    std::fs::write(&path, pem).unwrap();
    (path, public)
}

fn trail_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}

/// The SPEC §5 check, written from the spec rather than from the writer: every line's hash,
/// `prev` links, `seq` 1..n, file names. Returns the records of each file.
fn verify(dir: &Path) -> Vec<Vec<Value>> {
    let mut prev = "0".repeat(64);
    let mut seq = 0;
    let mut out = Vec::new();
    for path in trail_files(dir) {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{path:?} ends mid-line");
        let mut records = Vec::new();
        for line in text.lines() {
            let at = line.rfind(",\"hash\":\"").expect("hash member");
            assert!(line.ends_with("\"}"));
            let hash = &line[at + 9..line.len() - 2];
            let body = format!("{}}}", &line[..at]);
            let mut input = format!("{prev}\n").into_bytes();
            input.extend_from_slice(body.as_bytes());
            let digest = ring::digest::digest(&ring::digest::SHA256, &input);
            let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hash, hex, "hash of {line}");
            let v: Value = serde_json::from_str(line).unwrap();
            seq += 1;
            assert_eq!(v["seq"], seq);
            assert_eq!(v["prev"], prev.as_str());
            let time = v["time"].as_str().unwrap();
            assert_eq!((time.len(), &time[19..20], &time[26..]), (27, ".", "Z"), "{time}");
            if records.is_empty() {
                let name = path.file_name().unwrap().to_str().unwrap();
                assert_eq!(name, format!("audit-{seq:012}.jsonl"));
            }
            prev = hash.to_string();
            records.push(v);
        }
        out.push(records);
    }
    out
}

/// The `request_id` of every record in the (verified) trail, in order.
fn request_ids(dir: &Path) -> Vec<String> {
    let records = verify(dir).concat();
    records
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect()
}

fn all(files: &[Vec<Value>]) -> Vec<&Value> {
    files.iter().flatten().collect()
}

fn verify_checkpoint(record: &Value, public: &[u8]) {
    assert_eq!(record["event"], "checkpoint");
    assert_eq!(record["chain_head"], record["prev"]);
    let seq = record["seq"].as_u64().unwrap();
    let head = record["chain_head"].as_str().unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, public);
    let id: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(record["key_id"], id.as_str());
    let sig = base64::engine::general_purpose::STANDARD
        .decode(record["signature"].as_str().unwrap())
        .unwrap();
    let (time, next_due) = (record["time"].as_str().unwrap(), record["next_due"].as_str().unwrap());
    let message = format!("caregate-checkpoint-v2\n{seq}\n{head}\n{time}\n{next_due}\n");
    UnparsedPublicKey::new(&ED25519, public)
        .verify(message.as_bytes(), &sig)
        .expect("checkpoint signature");
}

/// Observations in the writer's fsync histogram, read as `/metrics` renders it.
fn fsyncs_observed(log: &AuditLog) -> u64 {
    let mut r = prometheus_client::registry::Registry::default();
    r.register("fsync", "fsyncs", log.fsync_durations());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
    let count = text.lines().find_map(|l| l.strip_prefix("fsync_count "));
    count.expect("a count line").parse().unwrap()
}
