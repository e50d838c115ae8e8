//! The writer thread: syncs, lingers and retries.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::batch::{copy_error, Scribe};
use super::Shared;
use crate::audit::AuditError;
use crate::config::Durability;

/// How long the thread lets fire-and-forget records gather after writing some: the most a
/// completion waits for its `write` when no durable record comes to take it along.
const LINGER: Duration = Duration::from_millis(5);
/// Group commit under load (`fsync`): with at least `COMMIT_SIBLINGS` records queued (and
/// fewer than `COMMIT_ENOUGH`), the writer keeps gathering for as long as more arrive every
/// `COMMIT_STEP`, up to `COMMIT_DELAY`.
const COMMIT_SIBLINGS: usize = 4;
/// A batch this large already spreads its fsync thin: sync it without gathering further, so
/// that the disk is not left idle while callers wait.
const COMMIT_ENOUGH: usize = 64;
const COMMIT_STEP: Duration = Duration::from_micros(100);
const COMMIT_DELAY: Duration = Duration::from_millis(1);
/// Marks the log stopped however the thread ends, a panic included, and refuses whatever is
/// still queued: nobody is left to write it.
struct StopGuard<'a>(&'a Shared);

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        let shared = self.0;
        shared.closed.store(true, Ordering::Release);
        shared.meters.healthy.store(false, Ordering::Release);
        let mut q = shared.queue();
        q.stopped = true;
        let mut lost = 0;
        for p in q.items.drain(..) {
            shared.queue_depth.fetch_sub(1, Ordering::Relaxed);
            match p.reply {
                Some(reply) => drop(reply.send(Err(AuditError::Closed))),
                None => lost += 1,
            }
        }
        // A close() that raced in behind the one that stopped us hears it from `closed_cleanly`.
        drop(q.close.take());
        if lost > 0 {
            tracing::error!(records = lost, "audit records appended after close were dropped");
        }
    }
}

/// The writer thread: batches for `fsync` durability, fire-and-forget records, interval
/// checkpoints, retries while unhealthy, and the final checkpoint at close.
pub(super) fn run(shared: Arc<Shared>) {
    let shared = &*shared;
    let _guard = StopGuard(shared);
    #[cfg(test)]
    let faults = shared
        .lock_writer()
        .as_ref()
        .map(|s| super::faults::of(s.trail().dir()));
    let mut linger = false;
    loop {
        let (wakeup, sync_due) = match shared.lock_writer().as_ref() {
            Some(s) => (s.trail().wakeup(), s.trail().sync_due()),
            None => return,
        };
        let mut q = shared.queue();
        // Linger after a batch nobody waited for, so that a busy gateway's completions gather
        // into one write instead of waking this thread once each.
        if linger && q.close.is_none() && !q.handles_gone && !q.items.iter().any(|p| p.reply.is_some()) {
            q.lingering = true;
            q = shared
                .wake
                .wait_timeout(q, LINGER)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            q.lingering = false;
        }
        while q.items.is_empty() && q.close.is_none() && !q.handles_gone && !sync_due {
            q.idle = true;
            match wakeup {
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    let (guard, waited) = shared
                        .wake
                        .wait_timeout(q, left)
                        .unwrap_or_else(PoisonError::into_inner);
                    q = guard;
                    if waited.timed_out() {
                        break;
                    }
                }
                None => q = shared.wake.wait(q).unwrap_or_else(PoisonError::into_inner),
            }
        }
        q.idle = false;
        // `Some(reply)` for close(), `Some(None)` when every handle is gone.
        let stop = match (q.close.take(), q.handles_gone) {
            (Some(reply), _) => Some(Some(reply)),
            (None, true) => Some(None),
            (None, false) => None,
        };
        // Under load, hold the sync back while records are still arriving, so that more
        // requests share it: an fsync costs far more CPU than a record (on a virtual disk every
        // flush exits to the host). When nothing new arrives, everyone is waiting on us: go.
        let mut waiting = q.items.len();
        drop(q);
        if stop.is_none() && shared.durability == Durability::Fsync {
            let until = Instant::now() + COMMIT_DELAY;
            while (COMMIT_SIBLINGS..COMMIT_ENOUGH).contains(&waiting) && Instant::now() < until {
                std::thread::sleep(COMMIT_STEP);
                let now = shared.queue().items.len();
                if now == waiting {
                    break;
                }
                waiting = now;
            }
        }

        #[cfg(test)]
        let _gate = faults.as_deref().map(super::faults::Faults::gate);
        let mut guard = shared.lock_writer();
        let Some(scribe) = guard.as_mut() else { return };
        let batch = shared.take_queue(scribe.take_spare());
        linger = !batch.is_empty() && batch.iter().all(|p| p.reply.is_none());
        let stopping = stop.is_some();
        let result = if batch.is_empty() && !stopping && !scribe.trail().interval_due() {
            scribe.put_back(batch);
            scribe.trail_mut().idle()
        } else {
            scribe.commit(batch, stopping)
        };
        if let Some(reply) = stop {
            if let Some(scribe) = guard.take() {
                answer_close(scribe, shared, reply, result);
            }
            return;
        }
    }
}

/// Answers close(); the `StopGuard` refuses whatever raced in behind it. The final checkpoint
/// and sync were the caller's last commit. Called with the writer's lock held and the scribe
/// taken out of it, so nothing can be written after this.
fn answer_close(
    scribe: Scribe,
    shared: &Shared,
    reply: Option<oneshot::Sender<Result<(), AuditError>>>,
    result: io::Result<()>,
) {
    let ok = result.is_ok();
    // Release the trail and close its file before anyone hears it is closed, so that it can be
    // reopened (or its filesystem unmounted) at once.
    scribe.close();
    shared.closed.store(true, Ordering::Release);
    shared.meters.healthy.store(false, Ordering::Release);
    shared.closed_cleanly.store(ok, Ordering::Release);
    match (reply, result) {
        (Some(reply), result) => {
            let _ = reply.send(result.map_err(|e| copy_error(&e)));
        }
        (None, Err(error)) => tracing::error!(%error, "audit trail not durable at shutdown"),
        (None, Ok(())) => {}
    }
}
