//! `flush` durability: callers write in their own task, a worker's round shares one write,
//! and a caller already writing takes the others' records (flat combining).

use std::future::Future as _;

use super::*;

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
