//! The files and the chain: seqs and links, rotation, recovery at open, permissions, the
//! folder's lock.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;

use super::*;

#[tokio::test]
async fn chain_links_every_record_and_seq_is_contiguous() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = cfg(tmp.path());
    let log = AuditLog::open(&cfg).unwrap();
    assert_eq!(log.append_seq(lifecycle("start")).await.unwrap(), 1);
    for i in 0..20 {
        assert_eq!(log.append_seq(access(i)).await.unwrap(), 2 + 2 * i as u64);
        log.append(complete(i));
    }
    log.append(tls_rejected());
    log.close().await.unwrap();

    let files = verify(&cfg.dir);
    let records = all(&files);
    assert_eq!(records.len(), 42);
    assert_eq!(records[0]["event"], "lifecycle");
    assert_eq!(records[1]["event"], "access");
    assert_eq!(records[1]["client"]["org_name"], "The \"Surgery\"\nLine two");
    assert_eq!(records[2]["event"], "complete");
    assert_eq!(records[41]["event"], "tls_rejected");
    let times: Vec<&str> = records.iter().map(|r| r["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "time follows seq");
    assert_eq!(log.stats().records_written, 42);
}

#[tokio::test]
async fn rotation_keeps_seq_contiguous_across_files_and_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config::Audit {
        rotate_bytes: 4096,
        ..cfg(tmp.path())
    };
    let log = AuditLog::open(&cfg).unwrap();
    for i in 0..60 {
        log.append_seq(access(i)).await.unwrap();
    }
    log.close().await.unwrap();
    let before = trail_files(&cfg.dir).len();
    assert!(before >= 5, "{before} files");

    let log = AuditLog::open(&cfg).unwrap();
    assert_eq!(log.append_seq(lifecycle("start")).await.unwrap(), 61);
    for i in 0..20 {
        log.append_seq(access(i)).await.unwrap();
    }
    log.close().await.unwrap();

    let files = verify(&cfg.dir);
    assert!(files.len() > before);
    assert_eq!(all(&files).len(), 81);
    for path in trail_files(&cfg.dir) {
        assert!(std::fs::metadata(&path).unwrap().len() <= 4096, "{path:?}");
    }
}

#[tokio::test]
async fn partial_last_line_is_cut_off_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = cfg(tmp.path());
    let log = AuditLog::open(&cfg).unwrap();
    for i in 0..5 {
        log.append_seq(access(i)).await.unwrap();
    }
    log.close().await.unwrap();
    let path = trail_files(&cfg.dir).pop().unwrap();
    let good = std::fs::metadata(&path).unwrap().len();
    let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(br#"{"seq":6,"time":"2026-11-22T05:08"#).unwrap();
    drop(f);

    let log = AuditLog::open(&cfg).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
    assert_eq!(log.append_seq(lifecycle("start")).await.unwrap(), 6);
    log.close().await.unwrap();
    assert_eq!(all(&verify(&cfg.dir)).len(), 6);
}

#[tokio::test]
async fn a_damaged_last_record_stops_open() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = cfg(tmp.path());
    let log = AuditLog::open(&cfg).unwrap();
    log.append_seq(lifecycle("start")).await.unwrap();
    log.close().await.unwrap();
    let path = trail_files(&cfg.dir).pop().unwrap();
    let text = std::fs::read_to_string(&path).unwrap().replace("start", "stop!");
    std::fs::write(&path, text).unwrap();
    assert!(matches!(AuditLog::open(&cfg), Err(AuditError::Invalid(_))));
}

#[tokio::test]
async fn folder_is_0700_and_files_0600() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config::Audit {
        rotate_bytes: 4096,
        ..cfg(tmp.path())
    };
    let log = AuditLog::open(&cfg).unwrap();
    for i in 0..20 {
        log.append_seq(access(i)).await.unwrap();
    }
    log.close().await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cfg.dir), 0o700);
    let files = trail_files(&cfg.dir);
    assert!(files.len() > 1);
    for f in files {
        assert_eq!(mode(&f), 0o600, "{f:?}");
    }
}

#[tokio::test]
async fn an_empty_newest_file_from_a_crashed_rotation_is_continued() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = cfg(tmp.path());
    let log = AuditLog::open(&cfg).unwrap();
    for i in 0..3 {
        log.append_seq(access(i)).await.unwrap();
    }
    log.close().await.unwrap();

    // Created by a rotation, crashed before the first record reached it.
    let empty = cfg.dir.join("audit-000000000004.jsonl");
    File::create(&empty).unwrap();
    let log = AuditLog::open(&cfg).unwrap();
    assert_eq!(log.append_seq(lifecycle("start")).await.unwrap(), 4);
    log.close().await.unwrap();
    assert_eq!(verify(&cfg.dir).iter().map(Vec::len).collect::<Vec<_>>(), [3, 1]);

    // A name that does not follow on from the trail is refused, not papered over.
    File::create(cfg.dir.join("audit-000000000009.jsonl")).unwrap();
    assert!(matches!(AuditLog::open(&cfg), Err(AuditError::Invalid(_))));
}

#[test]
fn a_second_writer_on_the_same_trail_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::config::Audit::in_dir(dir.path().join("trail"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let first = AuditLog::open(&cfg).unwrap();
        let second = AuditLog::open(&cfg);
        assert!(
            matches!(second, Err(AuditError::Invalid(ref m)) if m.contains("locked")),
            "{:?}",
            second.err()
        );
        first.close().await.unwrap();
    });
    // Once the first writer's thread has stopped, the trail can be opened again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while rt.block_on(async { AuditLog::open(&cfg) }).is_err() {
        assert!(Instant::now() < deadline, "the lock was never released");
        std::thread::yield_now();
    }
}

#[test]
fn handle_and_its_futures_can_cross_threads() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&cfg(tmp.path())).unwrap();
    send_sync(&log);
    send(&log.append_seq(lifecycle("start")));
    send(&log.close());
}
