//! The writer thread. Under `durability = "fsync"` it writes every batch: callers queue their
//! record and the thread writes the batch, `fdatasync`s it (fsync blocks, so it must not sit on
//! a runtime worker) and only then answers the batch's waiters; while it syncs, the next batch
//! gathers behind it. Under either durability it writes the fire-and-forget records that no
//! durable record took along (after a short linger, so that a busy gateway does not wake it
//! once per record), syncs what was left unsynced once the queue falls quiet, signs interval
//! checkpoints, retries at least once a second while the disk refuses writes, and writes the
//! final checkpoint at close.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batch::{copy_error, Scribe};
use super::queue::{CloseReply, Queue};
use super::trail::Meters;
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
struct StopGuard<'a> {
    queue: &'a Queue,
    meters: &'a Meters,
}

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        self.meters.healthy.store(false, Ordering::Release);
        self.queue.stop();
    }
}

/// The thread's body: runs until close() or the last handle's drop.
pub(super) fn run(queue: Arc<Queue>, meters: Arc<Meters>, durability: Durability) {
    let queue = &*queue;
    let _guard = StopGuard { queue, meters: &meters };
    #[cfg(test)]
    let faults = queue.lock_trail().scribe().map(|s| super::faults::of(s.trail().dir()));
    let mut linger = false;
    loop {
        let (wakeup, sync_due) = match queue.lock_trail().scribe() {
            Some(s) => (s.trail().wakeup(), s.trail().sync_due()),
            None => return,
        };
        // Linger after a batch nobody waited for, so that a busy gateway's completions gather
        // into one write instead of waking this thread once each.
        let (stop, mut waiting) = queue.wait_for_work(linger.then_some(LINGER), wakeup, sync_due);
        // Under load, hold the sync back while records are still arriving, so that more
        // requests share it: an fsync costs far more CPU than a record (on a virtual disk every
        // flush exits to the host). When nothing new arrives, everyone is waiting on us: go.
        if stop.is_none() && durability == Durability::Fsync {
            let until = Instant::now() + COMMIT_DELAY;
            while (COMMIT_SIBLINGS..COMMIT_ENOUGH).contains(&waiting) && Instant::now() < until {
                std::thread::sleep(COMMIT_STEP);
                let now = queue.len();
                if now == waiting {
                    break;
                }
                waiting = now;
            }
        }

        #[cfg(test)]
        let _gate = faults.as_deref().map(super::faults::Faults::gate);
        let mut trail = queue.lock_trail();
        let Some((scribe, batch)) = trail.take_batch() else {
            return;
        };
        linger = !batch.is_empty() && batch.iter().all(|p| !p.awaited());
        let stopping = stop.is_some();
        let result = if batch.is_empty() && !stopping && !scribe.trail().interval_due() {
            scribe.put_back(batch);
            scribe.trail_mut().idle()
        } else {
            scribe.commit(batch, stopping)
        };
        if let Some(stop) = stop {
            if let Some(scribe) = trail.take_scribe() {
                answer_close(scribe, queue, &meters, stop.into_reply(), result);
            }
            return;
        }
    }
}

/// Answers close(); the `StopGuard` refuses whatever raced in behind it. The final checkpoint
/// and sync were the last commit's (`result`). Called with the trail's lock held and the scribe
/// taken out of it, so nothing can be written after this.
fn answer_close(scribe: Scribe, queue: &Queue, meters: &Meters, reply: Option<CloseReply>, result: io::Result<()>) {
    let ok = result.is_ok();
    // Release the trail and close its file before anyone hears it is closed, so that it can be
    // reopened (or its filesystem unmounted) at once.
    scribe.close();
    meters.healthy.store(false, Ordering::Release);
    queue.closed(ok);
    match (reply, result) {
        (Some(reply), result) => {
            let _ = reply.send(result.map_err(|e| copy_error(&e)));
        }
        (None, Err(error)) => tracing::error!(%error, "audit trail not durable at shutdown"),
        (None, Ok(())) => {}
    }
}
