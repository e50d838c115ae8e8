//! The queue between the appenders and the trail: records waiting for their `seq`, what the
//! writer thread is doing (so that an append wakes it only when it must), who is writing in
//! `flush` mode, and closing.
//!
//! # Lock order
//!
//! Two locks: the trail's (the `Scribe`: whoever holds it writes) and the queue's. **The
//! trail's lock is taken first; the queue's may be taken while holding it, never the other way
//! round.** The API makes it so: the queue's lock never leaves this module (no method returns
//! holding it, and none takes the trail's lock under it), so the one place that holds both is
//! [`TrailGuard::take_batch`], which takes them in that order. A batch is taken under the
//! trail's lock so that nothing queued before it can be written after it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::batch::{Pending, Scribe};
use crate::audit::AuditError;

/// Answers close().
pub(super) type CloseReply = oneshot::Sender<Result<(), AuditError>>;

/// Why the writer thread is to write its last batch and stop.
pub(super) enum Stop {
    Close(CloseReply),
    /// Every handle is gone: nobody to answer.
    HandlesGone,
}

impl Stop {
    pub(super) fn into_reply(self) -> Option<CloseReply> {
        match self {
            Stop::Close(reply) => Some(reply),
            Stop::HandlesGone => None,
        }
    }
}

/// What the handles, the `flush` committers and the writer thread share.
pub(super) struct Queue {
    /// The trail's lock, taken before `state`. `None` once the writer has stopped.
    trail: Mutex<Option<Scribe>>,
    state: Mutex<State>,
    /// Wakes the writer thread; signalled only when it waits (see `State`).
    wake: Condvar,
    /// No more appends: close() was called, or the writer stopped.
    closed: AtomicBool,
    /// The final checkpoint and sync at close succeeded (answers a close() that comes late).
    closed_cleanly: AtomicBool,
    /// Records appended and not yet taken into a batch.
    depth: AtomicU64,
    /// Their bytes (`Pending::queued_bytes`).
    bytes: AtomicU64,
    bound: Bound,
}

/// How much may wait in the queue (`audit.max_queue_records`, `audit.max_queue_bytes`). A
/// durable record past it is refused at once; a sheddable one past half of it is dropped;
/// completions and lifecycle records are always taken (see `Pending::sheddable`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Bound {
    pub(super) records: u64,
    pub(super) bytes: u64,
}

/// Why a record was not queued.
pub(super) enum Refused {
    Closed,
    /// Past the bound.
    Full,
}

impl From<Refused> for AuditError {
    fn from(r: Refused) -> AuditError {
        match r {
            Refused::Closed => AuditError::Closed,
            Refused::Full => AuditError::Unavailable("the audit queue is full"),
        }
    }
}

/// Records waiting for the writer, and what the writer thread is doing.
#[derive(Default)]
struct State {
    items: Vec<Pending>,
    close: Option<CloseReply>,
    handles_gone: bool,
    /// The writer thread has ended: nothing queued now would ever be written.
    stopped: bool,
    /// The thread waits for any record: every append wakes it.
    idle: bool,
    /// The thread lingers to let fire-and-forget records gather: only a durable append (or a
    /// close) wakes it early.
    lingering: bool,
    /// `flush`: a caller is writing, and will write every durable record queued before it
    /// lets go (see `commit`).
    committing: bool,
}

impl State {
    fn any_awaited(&self) -> bool {
        self.items.iter().any(Pending::awaited)
    }
}

/// The trail's lock, held.
pub(super) struct TrailGuard<'a> {
    queue: &'a Queue,
    scribe: MutexGuard<'a, Option<Scribe>>,
}

impl TrailGuard<'_> {
    /// The scribe, unless the writer has stopped.
    pub(super) fn scribe(&self) -> Option<&Scribe> {
        self.scribe.as_ref()
    }

    /// The scribe, and everything queued so far, in order (the queue goes on in the scribe's
    /// spare vector). `None` once the writer has stopped.
    pub(super) fn take_batch(&mut self) -> Option<(&mut Scribe, Vec<Pending>)> {
        let scribe = self.scribe.as_mut()?;
        let spare = scribe.take_spare();
        debug_assert!(spare.is_empty());
        let items = std::mem::replace(&mut self.queue.state().items, spare);
        self.queue.depth.fetch_sub(items.len() as u64, Ordering::Relaxed);
        let bytes = items.iter().map(Pending::queued_bytes).sum();
        self.queue.bytes.fetch_sub(bytes, Ordering::Relaxed);
        Some((scribe, items))
    }

    /// Takes the scribe out for good: nothing can be written after this.
    pub(super) fn take_scribe(&mut self) -> Option<Scribe> {
        self.scribe.take()
    }
}

impl Queue {
    pub(super) fn new(scribe: Scribe, bound: Bound) -> Queue {
        Queue {
            trail: Mutex::new(Some(scribe)),
            state: Mutex::default(),
            wake: Condvar::new(),
            closed: AtomicBool::default(),
            closed_cleanly: AtomicBool::default(),
            depth: AtomicU64::default(),
            bytes: AtomicU64::default(),
            bound,
        }
    }

    /// The trail's lock (see the module's lock order).
    pub(super) fn lock_trail(&self) -> TrailGuard<'_> {
        TrailGuard {
            queue: self,
            scribe: self.trail.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// The queue's lock: for this module only (see the module's lock order).
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(super) fn bound(&self) -> Bound {
        self.bound
    }

    /// Bytes queued (`Pending::queued_bytes`).
    pub(super) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether `pending` may join the queue now (see [`Bound`]); called under the queue's
    /// lock, which is what makes depth and bytes move together.
    fn admits(&self, pending: &Pending) -> bool {
        let (records, bytes) = match (pending.awaited(), pending.sheddable()) {
            (true, _) => (self.bound.records, self.bound.bytes),
            (false, true) => (self.bound.records / 2, self.bound.bytes / 2),
            (false, false) => return true,
        };
        self.depth() < records && self.bytes() + pending.queued_bytes() <= bytes
    }

    /// Queues `pending` (taking its place in the counts), unless closed or past the bound.
    fn push(&self, q: &mut State, pending: Pending) -> Result<(), Refused> {
        if q.stopped {
            return Err(Refused::Closed);
        }
        if !self.admits(&pending) {
            return Err(Refused::Full);
        }
        self.depth.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(pending.queued_bytes(), Ordering::Relaxed);
        q.items.push(pending);
        Ok(())
    }

    /// A durable append gave up waiting (`audit.stall_timeout`): its record, if still queued,
    /// is not to be written (nobody will be told it was, and its request was refused).
    pub(super) fn withdraw_abandoned(&self) {
        let mut q = self.state();
        let before = q.items.len();
        let mut bytes = 0;
        q.items.retain(|p| {
            let gone = p.reply.as_ref().is_some_and(|r| r.is_closed());
            if gone {
                bytes += p.queued_bytes();
            }
            !gone
        });
        self.depth.fetch_sub((before - q.items.len()) as u64, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Queues `pending` for the writer, waking its thread only when it waits for this kind of
    /// record.
    pub(super) fn enqueue(&self, pending: Pending) -> Result<(), Refused> {
        if self.is_closed() {
            return Err(Refused::Closed);
        }
        let durable = pending.awaited();
        let mut q = self.state();
        self.push(&mut q, pending)?;
        if q.idle || (durable && q.lingering) {
            q.idle = false;
            q.lingering = false;
            self.wake.notify_one();
        }
        Ok(())
    }

    /// `flush`: queues a durable record without waking the writer thread. With `claim`, true
    /// if the caller is to write the queue, false if another caller is writing and will take
    /// this record too. Without, a worker's postbox task commits it (`commit::commit_round`).
    pub(super) fn enqueue_to_commit(&self, pending: Pending, claim: bool) -> Result<bool, AuditError> {
        if self.is_closed() {
            return Err(AuditError::Closed);
        }
        let mut q = self.state();
        self.push(&mut q, pending)?;
        Ok(claim && !std::mem::replace(&mut q.committing, true))
    }

    /// `flush`: true if the caller is now the one writing: nobody was, and a durable record is
    /// queued.
    pub(super) fn claim_commit(&self) -> bool {
        let mut q = self.state();
        if q.committing || !q.any_awaited() {
            return false;
        }
        q.committing = true;
        true
    }

    /// `flush`, after a batch written by the caller that claimed the commit: true if it is to
    /// write again (durable records came meanwhile, and `rounds_left`). Else it has let go, and
    /// any durable records left are the writer thread's. The decision is taken under the
    /// queue's lock, so a record queued while `committing` is always written by one or the
    /// other.
    pub(super) fn commit_again(&self, rounds_left: bool) -> bool {
        let mut q = self.state();
        let more = !self.is_closed() && q.any_awaited();
        if more && rounds_left {
            return true;
        }
        q.committing = false;
        if more {
            q.idle = false;
            q.lingering = false;
            self.wake.notify_one();
        }
        false
    }

    /// The writer thread's wait for work: first, with `linger`, while only fire-and-forget
    /// records are queued, for up to that long (a durable append ends it); then, while nothing
    /// is queued and no sync is due, until an append, a close, or `wakeup`. Answers whether to
    /// stop, and how many records are queued.
    pub(super) fn wait_for_work(
        &self,
        linger: Option<Duration>,
        wakeup: Option<Instant>,
        sync_due: bool,
    ) -> (Option<Stop>, usize) {
        let mut q = self.state();
        if let Some(linger) = linger.filter(|_| q.close.is_none() && !q.handles_gone && !q.any_awaited()) {
            q.lingering = true;
            q = self
                .wake
                .wait_timeout(q, linger)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            q.lingering = false;
        }
        while q.items.is_empty() && q.close.is_none() && !q.handles_gone && !sync_due {
            q.idle = true;
            match wakeup {
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    let (guard, waited) = self.wake.wait_timeout(q, left).unwrap_or_else(PoisonError::into_inner);
                    q = guard;
                    if waited.timed_out() {
                        break;
                    }
                }
                None => q = self.wake.wait(q).unwrap_or_else(PoisonError::into_inner),
            }
        }
        q.idle = false;
        let stop = match (q.close.take(), q.handles_gone) {
            (Some(reply), _) => Some(Stop::Close(reply)),
            (None, true) => Some(Stop::HandlesGone),
            (None, false) => None,
        };
        (stop, q.items.len())
    }

    /// Records queued now.
    pub(super) fn len(&self) -> usize {
        self.state().items.len()
    }

    /// Refuses appends from now on and asks the writer thread to stop; `reply` hears how it
    /// went. Dropped unanswered if the thread has stopped already (see `closed_cleanly`).
    pub(super) fn close(&self, reply: CloseReply) {
        self.closed.store(true, Ordering::Release);
        let mut q = self.state();
        if !q.stopped && q.close.is_none() {
            q.close = Some(reply);
            self.wake.notify_one();
        }
    }

    /// The writer closed the trail, `cleanly` if its final checkpoint and sync succeeded.
    pub(super) fn closed(&self, cleanly: bool) {
        self.closed.store(true, Ordering::Release);
        self.closed_cleanly.store(cleanly, Ordering::Release);
    }

    pub(super) fn closed_cleanly(&self) -> bool {
        self.closed_cleanly.load(Ordering::Acquire)
    }

    /// The last handle is gone: the writer thread writes what is queued and stops.
    pub(super) fn handles_gone(&self) {
        let mut q = self.state();
        q.handles_gone = true;
        self.wake.notify_one();
    }

    /// The writer thread has ended, however: refuses whatever is still queued and every append
    /// from now on, as nobody is left to write them.
    pub(super) fn stop(&self) {
        self.closed.store(true, Ordering::Release);
        let mut q = self.state();
        q.stopped = true;
        let mut lost = 0;
        for p in q.items.drain(..) {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(p.queued_bytes(), Ordering::Relaxed);
            match p.reply {
                Some(reply) => drop(reply.send(Err(AuditError::Closed))),
                None => lost += 1,
            }
        }
        // A close() that raced in behind the one that stopped the thread hears it from
        // `closed_cleanly`.
        drop(q.close.take());
        if lost > 0 {
            tracing::error!(records = lost, "audit records appended after close were dropped");
        }
    }
}
