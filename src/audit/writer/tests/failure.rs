//! Failing closed: a failed write answers its waiters with the error, cuts the file back and
//! keeps the fire-and-forget records; a full disk recovers; appends after close are refused.

use std::fs::File;
use std::io::Write as _;
use std::process::Command;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_write_fails_closed_and_keeps_fire_and_forget_records() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = cfg(tmp.path());
    let log = AuditLog::open(&cfg).unwrap();
    log.append_seq(lifecycle("start")).await.unwrap();
    let hooks = faults::of(&cfg.dir);

    hooks.fail.store(true, Ordering::SeqCst);
    let gate = hooks.gate();
    log.append(complete(1));
    let durable = tokio::spawn({
        let log = log.clone();
        async move { log.append_seq(access(2)).await }
    });
    wait_queued(&log, 2);
    drop(gate);
    assert!(matches!(durable.await.unwrap(), Err(AuditError::Io(_))));
    assert!(!log.is_healthy());
    assert!(log.append_seq(access(3)).await.is_err());
    assert!(!log.stats().healthy);
    // The half-written batch was cut off: only the first record is in the file.
    assert_eq!(all(&verify(&cfg.dir)).len(), 1);

    hooks.fail.store(false, Ordering::SeqCst);
    assert_eq!(log.append_seq(access(4)).await.unwrap(), 3);
    assert!(log.is_healthy());
    log.close().await.unwrap();
    let files = verify(&cfg.dir);
    let records = all(&files);
    let ids: Vec<&str> = records
        .iter()
        .map(|r| r["request_id"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(ids, ["-", "req-1", "req-4"]);
}

#[tokio::test]
async fn appends_after_close_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&cfg(tmp.path())).unwrap();
    log.close().await.unwrap();
    assert!(matches!(
        log.append_seq(lifecycle("stop")).await,
        Err(AuditError::Closed)
    ));
    assert!(!log.is_healthy());
    log.close().await.unwrap();
}

/// Unmounts on drop, so a failing test does not leave a mount behind.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(at)
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs(at.to_path_buf())),
            other => {
                eprintln!("skipping: cannot mount a tmpfs at {at:?} ({other:?}); needs root");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn full_disk_fails_closed_and_recovers_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mount) = Tmpfs::mount(tmp.path(), "256k") else {
        return;
    };
    // The disk's own refusal is what is tested here, not `min_free_bytes` (see `bounds`).
    let cfg = config::Audit {
        min_free_bytes: 0,
        ..cfg(&mount.0)
    };
    let log = AuditLog::open(&cfg).unwrap();
    log.append_seq(lifecycle("start")).await.unwrap();

    let filler = mount.0.join("filler");
    let mut f = File::create(&filler).unwrap();
    while f.write_all(&[0; 4096]).is_ok() {}
    drop(f);

    // A record may still fit in the file's last page; keep going until the disk says no.
    let mut refused = None;
    for i in 0..64 {
        if let Err(e) = log.append_seq(access(i)).await {
            refused = Some(e);
            break;
        }
    }
    assert!(matches!(refused, Some(AuditError::Io(_))), "{refused:?}");
    assert!(!log.is_healthy());
    assert!(log.append_seq(access(99)).await.is_err());
    verify(&cfg.dir);

    std::fs::remove_file(&filler).unwrap();
    let seq = log.append_seq(lifecycle("recovered")).await.unwrap();
    assert!(log.is_healthy());
    log.close().await.unwrap();
    let records = verify(&cfg.dir).concat();
    assert_eq!(records.last().unwrap()["seq"], seq);
    assert_eq!(records.last().unwrap()["action"], "recovered");
    drop(mount);
}
