//! A trail cut short (issue 19): deleting the newest files leaves a trail that still ends with
//! a signed checkpoint, so plain `audit verify` passes it. What catches the cut: the last
//! checkpoint's signed `next_due` against what the auditor knows (`--expect-until`), and a
//! witness of a later checkpoint kept elsewhere (`audit witness`, `--witness`). And a second
//! caregate on a live trail is refused before it can cut anything.
//!
//! Real files, the real writer (`AuditLog`) with real signing keys, and the `caregate` binary.

mod support;

use std::path::{Path, PathBuf};

use caregate::audit::record::Lifecycle;
use caregate::audit::{AuditLog, Event};
use caregate::config::{Audit, Durability};

// === fixtures ===

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
