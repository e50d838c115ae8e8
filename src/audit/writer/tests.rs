//! The writer against real files: every trail written here is re-checked by an independent
//! implementation of the chain (SPEC §5), not by the writer's own code.

use std::fs::File;
use std::future::Future as _;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use serde_json::Value;

use super::faults;
use super::*;
use crate::audit::record::{Access, Client, Clinical, Complete, Lifecycle, Request, TlsRejected};
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
            query: None,
            version: "HTTP/1.1".into(),
        },
        route: Some("epr-fhir".into()),
        class: Some("epr".into()),
        decision: "allow".into(),
        reason: "allowed".into(),
        rule: Some("epr-fhir/allow[0]".into()),
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
        client: Client {
            ip: "10.9.9.9".into(),
            port: 1,
            ..Default::default()
        },
        sni: None,
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
    let message = format!("caregate-checkpoint-v1\n{seq}\n{head}\n");
    UnparsedPublicKey::new(&ED25519, public)
        .verify(message.as_bytes(), &sig)
        .expect("checkpoint signature");
}

// === Tests ===

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_one_fsync() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&cfg(tmp.path())).unwrap();
    let faults = faults::of(&cfg(tmp.path()).dir);
    let gate = faults.gate();
    let tasks: Vec<_> = (0..256)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append_seq(access(i)).await })
        })
        .collect();
    // The writer holds the first record and waits at the gate; the rest queue behind it.
    wait_queued(&log, 256);
    drop(gate);
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=256).collect::<Vec<u64>>());
    let stats = log.stats();
    assert_eq!((stats.records_written, stats.fsyncs, stats.queue_depth), (256, 1, 0));
    assert!(stats.last_fsync_seconds > 0.0);
    assert_eq!(fsyncs_observed(&log), 1);
    log.close().await.unwrap();
    verify(&cfg(tmp.path()).dir);
}

#[tokio::test]
async fn flush_durability_syncs_only_at_close() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = flush_cfg(tmp.path());
    let log = AuditLog::open(&cfg).unwrap();
    for i in 0..10 {
        log.append_seq(access(i)).await.unwrap();
    }
    assert_eq!(log.stats().fsyncs, 0);
    assert_eq!(fsyncs_observed(&log), 0);
    log.close().await.unwrap();
    assert_eq!(log.stats().fsyncs, 1);
    assert_eq!(fsyncs_observed(&log), 1);
    assert_eq!(all(&verify(&cfg.dir)).len(), 10);
}

/// With `flush` durability the caller writes its own record, and what was queued before it, in
/// its own task: it needs nothing from the writer thread (held at the gate here).
#[test]
fn flush_durability_writes_in_the_callers_task_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = flush_cfg(tmp.path());
    let log = AuditLog::open(&cfg).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let faults = faults::of(&cfg.dir);
    let gate = faults.gate();
    log.append(complete(1));
    let seq = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), log.append_seq(access(2)))
            .await
            .expect("a flush-mode append waited for the writer thread")
    });
    assert_eq!(seq.unwrap(), 2);
    assert_eq!(log.stats().queue_depth, 0);
    drop(gate);
    rt.block_on(log.close()).unwrap();
    assert_eq!(request_ids(&cfg.dir), ["req-1", "req-2"]);
}

/// With `flush` durability, a caller that arrives while another is writing does not block its
/// thread behind that write: it queues, and the caller already writing writes its record too.
#[test]
fn flush_durability_callers_queue_behind_a_write_in_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = flush_cfg(tmp.path());
    let log = AuditLog::open(&cfg).unwrap();
    let hooks = faults::of(&cfg.dir);
    *hooks.stall.lock().unwrap() = true;
    let first = std::thread::spawn({
        let log = log.clone();
        move || {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(log.append_seq(access(1)))
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !hooks.stalled.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the first caller never wrote");
        std::thread::yield_now();
    }

    // The first caller is stalled in its write, holding the writer: a second one only queues.
    let mut second = std::pin::pin!(log.append_seq(access(2)));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(
        second.as_mut().poll(&mut cx).is_pending(),
        "the second caller waited for the first one's write"
    );
    assert_eq!(log.stats().queue_depth, 1);

    *hooks.stall.lock().unwrap() = false;
    hooks.stall_cond.notify_all();
    assert_eq!(first.join().unwrap().unwrap(), 1);
    // Written by the first caller before it let go: ready without any further help.
    match second.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(seq) => assert_eq!(seq.unwrap(), 2),
        std::task::Poll::Pending => panic!("the first caller left the second one's record queued"),
    }
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(log.close()).unwrap();
    assert_eq!(request_ids(&cfg.dir), ["req-1", "req-2"]);
}

/// Tasks on worker threads hear that their records are durable through their worker's
/// postbox: one message per worker for a batch, not one cross-thread wake-up per record. The
/// same message takes the records' buffers back, fire-and-forget ones included, to be freed
/// on the worker that allocated them.
#[test]
fn answers_reach_worker_tasks_one_message_per_worker_per_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&cfg(tmp.path())).unwrap();
    let workers = crate::worker::Workers::start(2).unwrap();
    workers.spawn_on_each(|i| log.postbox(i));
    let faults = faults::of(&cfg(tmp.path()).dir);
    let gate = faults.gate();
    let (tx, rx) = std::sync::mpsc::channel();
    // The least busy worker takes each job in turn: two records from each worker.
    for i in 0..4 {
        let (log, tx) = (log.clone(), tx.clone());
        workers.spawn(async move {
            log.append(complete(i));
            let seq = log.append_seq(access(i)).await;
            let _ = tx.send((crate::worker::current(), seq.map_err(|e| e.to_string())));
            // Held until every record is answered, so that the jobs spread over both workers.
            std::future::pending::<()>().await;
        });
    }
    wait_queued(&log, 8);
    drop(gate);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (worker, seq) = rx.recv_timeout(Duration::from_secs(20)).expect("an answer");
        seen.push((worker.unwrap(), seq.unwrap()));
    }
    seen.sort();
    assert_eq!(
        seen.iter().map(|(w, _)| *w).collect::<Vec<_>>(),
        [0, 0, 1, 1],
        "two records from each worker"
    );
    assert_eq!(log.handle.postboxes.delivered.load(Ordering::SeqCst), 2);
    assert_eq!(log.handle.postboxes.returned.load(Ordering::SeqCst), 8);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(workers.stop());
    rt.block_on(log.close()).unwrap();
}

/// With `flush` durability, requests that became ready together on a worker share one `write`:
/// the commit waits for the end of the worker's round, behind every task already ready.
#[test]
fn flush_records_of_one_worker_round_share_one_write() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = flush_cfg(tmp.path());
    let log = AuditLog::open(&cfg).unwrap();
    let workers = crate::worker::Workers::start(1).unwrap();
    workers.spawn_on_each(|i| log.postbox(i));
    let (tx, rx) = std::sync::mpsc::channel();
    let job = log.clone();
    workers.spawn(async move {
        // Eight tasks made ready at once, as one poll of the sockets would.
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let log = job.clone();
                tokio::spawn(async move { log.append_seq(access(i)).await })
            })
            .collect();
        for t in tasks {
            let _ = tx.send(t.await.unwrap().map_err(|e| e.to_string()));
        }
    });
    let mut seqs: Vec<u64> = (0..8)
        .map(|_| rx.recv_timeout(Duration::from_secs(20)).expect("an answer").unwrap())
        .collect();
    seqs.sort();
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
    assert_eq!(
        faults::of(&cfg.dir).writes.load(Ordering::SeqCst),
        1,
        "one write for the round"
    );
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(workers.stop());
    rt.block_on(log.close()).unwrap();
    assert_eq!(request_ids(&cfg.dir).len(), 8);
}

/// A worker's round that has not ended holds up only its own records: another worker's record
/// is written by that worker's own round, not left waiting for the first one.
#[test]
fn a_round_still_running_on_one_worker_does_not_hold_up_another() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = flush_cfg(tmp.path());
    let log = AuditLog::open(&cfg).unwrap();
    let workers = crate::worker::Workers::start(2).unwrap();
    workers.spawn_on_each(|i| log.postbox(i));
    let (queued_tx, queued) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (tx, rx) = std::sync::mpsc::channel();
    let first = log.clone();
    let tx1 = tx.clone();
    workers.spawn(async move {
        let mut append = std::pin::pin!(first.append_seq(access(1)));
        let polled = append
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        assert!(polled.is_pending());
        // This worker's round goes on (blocking here, so its postbox task cannot run yet).
        queued_tx.send(()).unwrap();
        let _ = released.recv_timeout(Duration::from_secs(20));
        let _ = tx1.send(append.await.map_err(|e| e.to_string()));
    });
    queued.recv_timeout(Duration::from_secs(20)).unwrap();
    let second = log.clone();
    workers.spawn(async move {
        let _ = tx.send(second.append_seq(access(2)).await.map_err(|e| e.to_string()));
    });
    let seq = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the second worker's record waited for the first worker's round");
    assert_eq!(seq.unwrap(), 2);
    release.send(()).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap().unwrap(), 1);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(workers.stop());
    rt.block_on(log.close()).unwrap();
}

/// A worker whose postbox task is gone (dropped before it ever ran) does not leave a deferred
/// commit hanging: the records are written, and later callers write their own.
#[test]
fn a_dropped_postbox_task_still_makes_its_deferred_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = flush_cfg(tmp.path());
    let log = AuditLog::open(&cfg).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let postbox = log.postbox(0);
    let mut first = std::pin::pin!(log.append_seq(access(1)));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    crate::worker::as_worker(0, || {
        assert!(first.as_mut().poll(&mut cx).is_pending(), "the commit was not deferred");
    });
    assert_eq!(log.stats().queue_depth, 1);
    drop(postbox);
    assert_eq!(log.stats().queue_depth, 0, "the dropped postbox task did not commit");
    match first.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(seq) => assert_eq!(seq.unwrap(), 1),
        std::task::Poll::Pending => panic!("the deferred record was not answered"),
    }
    let second = crate::worker::as_worker(0, || rt.block_on(log.append_seq(access(2))));
    assert_eq!(second.unwrap(), 2);
    rt.block_on(log.close()).unwrap();
    assert_eq!(request_ids(&cfg.dir), ["req-1", "req-2"]);
}

/// A batch with nothing to answer on a worker does not wake it just to hand back buffers.
#[test]
fn fire_and_forget_records_alone_send_no_mail() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&cfg(tmp.path())).unwrap();
    let workers = crate::worker::Workers::start(1).unwrap();
    workers.spawn_on_each(|i| log.postbox(i));
    let faults = faults::of(&cfg(tmp.path()).dir);
    let gate = faults.gate();
    let job = log.clone();
    workers.spawn(async move {
        job.append(complete(1));
        job.append(complete(2));
    });
    wait_queued(&log, 2);
    drop(gate);
    wait_written(&log, 2);
    assert_eq!(log.handle.postboxes.delivered.load(Ordering::SeqCst), 0);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(workers.stop());
    rt.block_on(log.close()).unwrap();
}

/// With `fsync` durability, records nobody waits for still reach the disk: once the queue falls
/// quiet the writer syncs them, with no durable record to take them along.
#[test]
fn fire_and_forget_records_are_synced_once_quiet() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&cfg(tmp.path())).unwrap();
    let faults = faults::of(&cfg(tmp.path()).dir);
    let gate = faults.gate();
    for i in 0..20 {
        log.append(complete(i));
    }
    drop(gate);
    wait_written(&log, 20);
    let deadline = Instant::now() + Duration::from_secs(20);
    while log.stats().fsyncs == 0 {
        assert!(Instant::now() < deadline, "the quiet writer never synced");
        std::thread::yield_now();
    }
    assert_eq!(log.stats().fsyncs, 1);
    assert_eq!(all(&verify(&cfg(tmp.path()).dir)).len(), 20);
}

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
    assert_eq!(records.len(), 2);
    verify_checkpoint(&records[1], &public);
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(log.close())
        .unwrap();
    // Nothing new since the interval checkpoint: close adds none.
    assert_eq!(all(&verify(&cfg.dir)).len(), 2);
}

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
    let cfg = cfg(&mount.0);
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
fn handle_and_its_futures_can_cross_threads() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&cfg(tmp.path())).unwrap();
    send_sync(&log);
    send(&log.append_seq(lifecycle("start")));
    send(&log.close());
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

/// Observations in the writer's fsync histogram, read as `/metrics` renders it.
fn fsyncs_observed(log: &AuditLog) -> u64 {
    let mut r = prometheus_client::registry::Registry::default();
    r.register("fsync", "fsyncs", log.fsync_durations());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
    let count = text.lines().find_map(|l| l.strip_prefix("fsync_count "));
    count.expect("a count line").parse().unwrap()
}
