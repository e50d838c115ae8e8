//! Signed checkpoints: every N records, at the end of every file, at close, and after an
//! idle interval.

use super::*;

#[tokio::test]
async fn checkpoints_every_n_records_and_at_close_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = signing_key(tmp.path());
    let cfg = config::Audit {
        signing_key: Some(key),
        checkpoint_every: 5,
        ..cfg(tmp.path())
    };
    let log = AuditLog::open(&cfg).unwrap();
    for i in 0..12 {
        log.append_seq(access(i)).await.unwrap();
    }
    log.close().await.unwrap();

    let files = verify(&cfg.dir);
    let records = all(&files);
    let checkpoints: Vec<u64> = records
        .iter()
        .filter(|r| r["event"] == "checkpoint")
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    // 5 records, checkpoint; 5 records, checkpoint; 2 records, checkpoint at close.
    assert_eq!(checkpoints, [6, 12, 15]);
    assert_eq!(records.last().unwrap()["seq"], 15);
    for r in records.iter().filter(|r| r["event"] == "checkpoint") {
        verify_checkpoint(r, &public);
    }
}

#[tokio::test]
async fn every_rotated_file_ends_with_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = signing_key(tmp.path());
    let cfg = config::Audit {
        signing_key: Some(key),
        rotate_bytes: 4096,
        ..cfg(tmp.path())
    };
    let log = AuditLog::open(&cfg).unwrap();
    for i in 0..40 {
        log.append_seq(access(i)).await.unwrap();
    }
    log.close().await.unwrap();
    let files = verify(&cfg.dir);
    assert!(files.len() >= 4);
    for (records, path) in files.iter().zip(trail_files(&cfg.dir)) {
        assert!(std::fs::metadata(&path).unwrap().len() <= 4096, "{path:?}");
        verify_checkpoint(records.last().unwrap(), &public);
    }
}

#[test]
fn interval_checkpoint_signs_records_when_idle() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = signing_key(tmp.path());
    let cfg = config::Audit {
        signing_key: Some(key),
        checkpoint_interval: Duration::from_millis(20),
        ..cfg(tmp.path())
    };
    let log = AuditLog::open(&cfg).unwrap();
    log.append(lifecycle("start"));
    wait_written(&log, 2);
    let records = verify(&cfg.dir).concat();
    assert_eq!(records[0]["event"], "lifecycle");
    verify_checkpoint(&records[1], &public);
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(log.close())
        .unwrap();
    // Nothing new since the interval checkpoint: close adds none of its own. (Idle, the writer
    // still signs every interval, so more checkpoints may have come meanwhile.)
    let records = verify(&cfg.dir).concat();
    assert!(records[1..].iter().all(|r| r["event"] == "checkpoint"));
}
