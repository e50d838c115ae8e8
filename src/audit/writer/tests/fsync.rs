//! `fsync` durability: the writer thread's batches share one sync, fire-and-forget records
//! are synced once the queue falls quiet, and answers reach worker tasks by their postbox.

use super::*;

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
