//! A trail cut short (issue 19): deleting the newest files leaves a trail that still ends with
//! a signed checkpoint, so plain `audit verify` passes it. What catches the cut: the last
//! checkpoint's signed `next_due` against what the auditor knows (`--expect-until`), and a
//! witness of a later checkpoint kept elsewhere (`audit witness`, `--witness`). And a second
//! caregate on a live trail is refused before it can cut anything.
//!
//! Real files, the real writer (`AuditLog`) with real signing keys, and the `caregate` binary.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use caregate::audit::record::Lifecycle;
use caregate::audit::verify;
use caregate::audit::{AuditLog, Event};
use caregate::config::{Audit, Durability};
use serde_json::Value;

// === fixtures ===

/// An audit signing key as `caregate pki dev` makes one, in `dir`.
struct Keys {
    /// The PKCS#8 PEM private key, for `[audit] signing_key`.
    key: PathBuf,
    /// The SPKI PEM public key, for `--public-key`.
    public_pem: PathBuf,
    /// The raw public key, for `verify::verify`.
    raw: [u8; 32],
}

fn keys(dir: &Path) -> Keys {
    let (key_pem, public_pem) = caregate::pki::audit_signing_key().unwrap();
    let key = dir.join("audit-signing.key");
    std::fs::write(&key, key_pem).unwrap();
    let raw = verify::parse_public_key_pem(&public_pem).unwrap();
    let public = dir.join("audit-signing.pub");
    std::fs::write(&public, public_pem).unwrap();
    Keys {
        key,
        public_pem: public,
        raw,
    }
}

/// A signed trail in `dir/audit`, flushed per record.
fn signed(dir: &Path, keys: &Keys) -> Audit {
    Audit {
        durability: Durability::Flush,
        signing_key: Some(keys.key.clone()),
        ..Audit::in_dir(dir.join("audit"))
    }
}

/// Waits (with a deadline) until the writer has written `n` records, checkpoints included.
fn wait_written(log: &AuditLog, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while log.stats().records_written < n {
        assert!(Instant::now() < deadline, "the writer did not write {n} records");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn lifecycle(action: &str) -> Event {
    Event::Lifecycle(Lifecycle {
        action: action.into(),
        config_sha256: "ab".repeat(32),
    })
}

/// The trail's `audit-*.jsonl` files, oldest first.
fn trail_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}

/// Every record of the trail, in order.
fn records(dir: &Path) -> Vec<Value> {
    trail_files(dir)
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

fn checkpoints(dir: &Path) -> Vec<Value> {
    records(dir)
        .into_iter()
        .filter(|r| r["event"] == "checkpoint")
        .collect()
}

/// Every file of the folder, by name, with its bytes (as text: trail files are).
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap();
            (
                e.file_name().into_string().unwrap(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        })
        .collect();
    all.sort();
    all
}

// === the folder's lock ===

#[tokio::test]
async fn a_second_writer_is_refused_before_it_touches_a_live_trail() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = Audit {
        durability: Durability::Flush,
        ..Audit::in_dir(tmp.path().join("audit"))
    };
    let live = AuditLog::open(&cfg).unwrap();
    live.append_durable(lifecycle("start")).await.unwrap();
    // The live writer's next record, half written as another process may see it: a last line
    // without its newline, which recovery at open would cut off.
    let newest = trail_files(&cfg.dir).pop().unwrap();
    let good_len = std::fs::metadata(&newest).unwrap().len();
    let mut file = std::fs::OpenOptions::new().append(true).open(&newest).unwrap();
    std::io::Write::write_all(&mut file, br#"{"seq":2,"time":"2026-11-22T05:08"#).unwrap();
    let before = snapshot(&cfg.dir);

    match AuditLog::open(&cfg) {
        Ok(_) => panic!("a second writer opened a trail in use"),
        Err(e) => assert!(e.to_string().contains("is locked"), "{e}"),
    }
    assert_eq!(snapshot(&cfg.dir), before, "the refused writer changed the trail");

    // The hand-written bytes off again; the live writer carries on and closes a whole trail.
    file.set_len(good_len).unwrap();
    live.append_durable(lifecycle("stop")).await.unwrap();
    live.close().await.unwrap();
    let report = caregate::audit::verify::verify(&cfg.dir, None, &Default::default()).unwrap();
    assert_eq!(report.records, 2);
}

// === the writer keeps next_due's promise ===

#[tokio::test]
async fn an_idle_writer_signs_every_interval_as_next_due_promised() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys(tmp.path());
    let cfg = Audit {
        checkpoint_interval: Duration::from_millis(10),
        ..signed(tmp.path(), &keys)
    };
    let log = AuditLog::open(&cfg).unwrap();
    log.append_durable(lifecycle("start")).await.unwrap();
    // The start record's checkpoint, then two with nothing new to sign.
    wait_written(&log, 4);
    log.close().await.unwrap();

    let checkpoints = checkpoints(&cfg.dir);
    assert!(checkpoints.len() >= 3, "{checkpoints:?}");
    for c in &checkpoints {
        let (time, next_due) = (c["time"].as_str().unwrap(), c["next_due"].as_str().unwrap());
        assert_eq!(next_due.len(), time.len(), "{c}");
        assert!(next_due > time, "{c}");
    }
    // None came before its predecessor said it was due (the times are of one fixed format).
    for pair in checkpoints.windows(2) {
        assert!(pair[1]["time"].as_str() >= pair[0]["next_due"].as_str(), "{pair:?}");
    }
    let report = verify::verify(&cfg.dir, Some(&keys.raw), &Default::default()).unwrap();
    assert_eq!(report.checkpoints, checkpoints.len() as u64);
}
