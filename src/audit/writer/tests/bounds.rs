//! Issue 19: nothing a client sends makes a record, the queue or a wait unbounded. Records are
//! cut to `max_record_bytes`, the queue is bounded, a disk below `min_free_bytes` refuses new
//! requests but finishes the trail's records, and a hung write fails its callers in
//! `stall_timeout`.

use futures_util::FutureExt as _;

use super::*;
use crate::audit::verify::{self as auditor, VerifyOptions};

fn huge_access() -> Event {
    let Event::Access(mut a) = access(1) else {
        unreachable!()
    };
    a.request.path = format!("/fhir/Patient/{}", "9".repeat(100_000));
    a.client.org_name = Some("\"\\\n".repeat(30_000).into());
    a.clinical.patient_ids = (0..5_000).map(|i| format!("urn:x|{i}")).collect();
    Event::Access(a)
}

#[tokio::test]
async fn a_record_over_max_record_bytes_is_cut_keeps_length_and_sha256_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = signing_key(tmp.path());
    let cfg = config::Audit {
        signing_key: Some(key),
        ..cfg(tmp.path())
    };
    let log = AuditLog::open(&cfg).unwrap();
    let Event::Access(original) = huge_access() else {
        unreachable!()
    };
    log.append_seq(Event::Access(original.clone())).await.unwrap();
    log.close().await.unwrap();

    for file in trail_files(&cfg.dir) {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            assert!(line.len() < 8 << 10, "a line of {} bytes", line.len());
        }
    }
    let records = verify(&cfg.dir).concat();
    let r = &records[0];
    let sha = |b: &[u8]| crate::hex(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    let path = &original.request.path;
    assert!(path.starts_with(r["request"]["path"].as_str().unwrap()));
    assert_eq!(r["request"]["path_len"], path.len());
    assert_eq!(r["request"]["path_sha256"], sha(path.as_bytes()));
    let org_name = original.client.org_name.as_deref().unwrap();
    assert_eq!(r["client"]["org_name_len"], org_name.len());
    assert_eq!(r["client"]["org_name_sha256"], sha(org_name.as_bytes()));
    let ids = serde_json::to_vec(&original.clinical.patient_ids).unwrap();
    assert_eq!(r["clinical"]["patient_ids_sha256"], sha(&ids));
    // What was short is whole.
    assert_eq!(r["request_id"], "req-1");
    assert_eq!(r["clinical"]["nhs_number"], "9990000034");
    // The auditor's own command agrees, signatures and all.
    auditor::verify(&cfg.dir, Some(&public), &VerifyOptions::default()).unwrap();
}

#[tokio::test]
async fn max_record_bytes_is_the_configured_one() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config::Audit {
        max_record_bytes: 2048,
        ..cfg(tmp.path())
    };
    let log = AuditLog::open(&cfg).unwrap();
    log.append_seq(huge_access()).await.unwrap();
    log.close().await.unwrap();
    let text = std::fs::read_to_string(&trail_files(&cfg.dir)[0]).unwrap();
    assert!(text.len() <= 2048, "{}", text.len());
    verify(&cfg.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_durable_records_at_once_and_drops_only_sheddable_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config::Audit {
        max_queue_records: 6,
        ..cfg(tmp.path())
    };
    let log = AuditLog::open(&cfg).unwrap();
    log.append_seq(lifecycle("start")).await.unwrap();
    let hooks = faults::of(&cfg.dir);
    let gate = hooks.gate();
    // Sheddable records fill half the queue, no more.
    for _ in 0..10 {
        log.append(tls_rejected());
    }
    assert_eq!((log.stats().queue_depth, log.stats().records_dropped), (3, 7));
    // Completions are always taken.
    for i in 0..4 {
        log.append(complete(i));
    }
    assert_eq!(log.stats().queue_depth, 7);
    // A durable record past the bound is refused at once, not queued.
    let refused = log.append_seq(access(9)).now_or_never().expect("answered at once");
    assert!(matches!(refused, Err(AuditError::Unavailable(_))), "{refused:?}");
    assert_eq!(log.readiness(), Err("audit queue full"));
    assert_eq!(log.stats().queue_depth, 7);
    drop(gate);
    wait_written(&log, 1 + 3 + 4);

    log.append_seq(access(10)).await.unwrap();
    assert_eq!(log.readiness(), Ok(()));
    log.close().await.unwrap();
    let records = verify(&cfg.dir).concat();
    let count = |event: &str| records.iter().filter(|r| r["event"] == event).count();
    assert_eq!((count("tls_rejected"), count("complete"), count("access")), (3, 4, 1));
}

#[tokio::test]
async fn the_queues_byte_bound_holds_too() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config::Audit {
        max_queue_bytes: 4096,
        ..cfg(tmp.path())
    };
    let log = AuditLog::open(&cfg).unwrap();
    let hooks = faults::of(&cfg.dir);
    let gate = hooks.gate();
    for _ in 0..100 {
        log.append(tls_rejected());
    }
    let stats = log.stats();
    assert!(stats.queue_depth > 0 && stats.queue_depth < 20, "{stats:?}");
    assert_eq!(stats.queue_depth + stats.records_dropped, 100);
    drop(gate);
    log.close().await.unwrap();
}

#[tokio::test]
async fn below_min_free_bytes_requests_are_refused_but_completions_and_checkpoints_are_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = signing_key(tmp.path());
    let cfg = config::Audit {
        min_free_bytes: u64::MAX,
        signing_key: Some(key),
        ..cfg(tmp.path())
    };
    let log = AuditLog::open(&cfg).unwrap();
    assert!(matches!(
        log.append_seq(access(1)).await,
        Err(AuditError::Unavailable(_))
    ));
    assert_eq!(log.readiness(), Err("audit disk below audit.min_free_bytes"));
    log.append(complete(0));
    log.append(tls_rejected());
    log.append(lifecycle("stop"));
    assert_eq!(log.stats().records_dropped, 1);
    log.close().await.unwrap();
    let records = verify(&cfg.dir).concat();
    let events: Vec<&str> = records.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["complete", "lifecycle", "checkpoint"]);
    verify_checkpoint(records.last().unwrap(), &public);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_write_fails_its_callers_within_stall_timeout_and_is_not_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config::Audit {
        stall_timeout: Duration::from_millis(300),
        ..cfg(tmp.path())
    };
    let log = AuditLog::open(&cfg).unwrap();
    log.append_seq(lifecycle("start")).await.unwrap();
    let hooks = faults::of(&cfg.dir);
    *hooks.stall.lock().unwrap() = true;

    let started = Instant::now();
    let hung = log.append_seq(access(1)).await;
    assert!(matches!(hung, Err(AuditError::Unavailable(_))), "{hung:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(hooks.stalled.load(Ordering::SeqCst));
    // The writer is still in the hung write: not ready, and a record behind it fails in time too.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(log.readiness(), Err("audit writer stalled (audit.stall_timeout)"));
    assert!(log.append_seq(access(2)).await.is_err());

    *hooks.stall.lock().unwrap() = false;
    hooks.stall_cond.notify_all();
    log.append_seq(access(3)).await.unwrap();
    assert_eq!(log.readiness(), Ok(()));
    log.close().await.unwrap();
    // access(2) was withdrawn while it waited; access(1) was in the hung write, which went on.
    let records = verify(&cfg.dir).concat();
    let ids: Vec<&str> = records.iter().filter_map(|r| r["request_id"].as_str()).collect();
    assert!(ids.contains(&"req-3") && !ids.contains(&"req-2"), "{ids:?}");
}
