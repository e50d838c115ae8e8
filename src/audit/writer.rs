//! The one writer that owns the audit files (SPEC §5).
//!
//! Records are written in batches (group commit): whoever holds the trail's lock takes every
//! record queued so far, gives each its `seq`, `time` and chain link, and writes the lot with
//! one `write`. Under `durability = "fsync"` the writer thread writes and syncs each batch
//! (`thread`); under `flush` the caller's own thread writes, at the end of its worker's round
//! (`commit`). Fire-and-forget records (completions, TLS rejections, lifecycle) only queue:
//! they ride along with the next durable record, or the thread writes them after a short
//! linger, and a batch that nobody waits for is synced by the next durable batch or once the
//! queue falls quiet.
//!
//! ```text
//!   AuditLog (this file)   open, append, append_durable, postbox, stats, close
//!      │        │
//!      │        └──▶ commit.rs   flush: the round's commit, flat combining
//!      ├──▶ thread.rs            the writer thread: fsync batches, linger, idle sync,
//!      │        │                interval checkpoints, retries, close
//!      ▼        ▼
//!   queue.rs    pending records and their waiters, close and stop; holds both locks:
//!               1. the trail's lock, then 2. the queue's lock, never the other way round
//!      ▼
//!   batch.rs    the Scribe: a batch to the trail, its answers back (postbox.rs: by worker),
//!               fire-and-forget records kept when a write fails
//!      ▼
//!   trail.rs    the Trail: files, chain, rotation, checkpoints, sync, cut back on failure
//! ```
//!
//! Each file uses only those below it. A failed write or sync answers every waiter with an
//! error, cuts the file back to its last good length and leaves the chain where it was on disk:
//! no caller ever sees `Ok` for a record that is not durable. The writer retries on every
//! append and at least once a second.
//!
//! # Filling the disk is not a way in (issue 19)
//!
//! Nothing a client sends can make the trail, the queue or the wait for either unbounded:
//! - every record is at most `max_record_bytes` (8 KiB): longer fields are cut where events
//!   are serialised (`chain::event_fields`, `cut`), keeping `<field>_len` and `<field>_sha256`;
//! - the queue holds at most `max_queue_records` (100,000) and `max_queue_bytes` (64 MiB): a
//!   durable append past that fails at once (503 `audit_unavailable`), a sheddable record
//!   (`tls_rejected`, `refusals_coalesced`) past half of it is dropped, counted in
//!   `records_dropped` and logged (at most once a second); completions and lifecycle records
//!   are always taken (one completion per access admitted: never more than requests in
//!   flight);
//! - below `min_free_bytes` (256 MiB) free in the trail's file system (`space`, looked at
//!   once a second), durable appends fail at once and sheddable records are dropped, while
//!   completions, lifecycle records and checkpoints are still written: no trail is cut off
//!   mid-request;
//! - a durable append unanswered within `stall_timeout` (10 s) fails; its record is withdrawn
//!   if still queued (if a hung write already holds it, it may yet be written, with no
//!   completion, as after a crash). While a write or sync has taken longer than that, the
//!   log is not ready (`readiness`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::oneshot;

use super::chain;
use super::checkpoint::Signer;
use super::{AuditError, Event};
use crate::config::{self, Durability};

mod batch;
mod commit;
#[cfg(test)]
mod faults;
mod postbox;
mod queue;
mod space;
#[cfg(test)]
mod tests;
mod thread;
mod trail;

use batch::{Pending, Scribe};
use postbox::Postboxes;
use queue::{Bound, Queue, Refused};
use space::Space;
use trail::{Meters, Trail};

/// Numbers for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AuditStats {
    /// Records appended and not yet taken into a batch.
    pub queue_depth: u64,
    /// Records (checkpoints included) written since open.
    pub records_written: u64,
    pub fsyncs: u64,
    /// Duration of the latest fsync.
    pub last_fsync_seconds: f64,
    pub healthy: bool,
    /// Sheddable records (`tls_rejected`, `refusals_coalesced`) dropped since open: past half
    /// the queue's bound, or below `min_free_bytes`.
    pub records_dropped: u64,
}

/// Handle to the one writer that owns the audit files. Cheap to clone; when the last clone is
/// dropped the writer closes the trail as `close()` would.
#[derive(Clone)]
pub struct AuditLog {
    handle: Arc<Handle>,
}

/// What the handles share with each other; its drop tells the writer thread that no handle is
/// left.
struct Handle {
    durability: Durability,
    queue: Arc<Queue>,
    meters: Arc<Meters>,
    /// Where answers for tasks on worker threads are delivered.
    postboxes: Arc<Postboxes>,
    max_record_bytes: u64,
    stall_timeout: std::time::Duration,
    space: Space,
    /// When a drop was last logged (seconds since the epoch), so that a flood logs once a second.
    drop_logged: std::sync::atomic::AtomicU64,
    clock: Arc<StallClock>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.queue.handles_gone();
        self.clock.stop.store(true, Ordering::Relaxed);
    }
}

/// Wakes the durable appends still waiting a few times per `stall_timeout`, from a thread of
/// its own (the writer's may be the one that hangs), so that they can give up in time on any
/// executor, with or without tokio's timer.
#[derive(Default)]
struct StallClock {
    tick: tokio::sync::Notify,
    stop: std::sync::atomic::AtomicBool,
}

impl StallClock {
    fn start(stall_timeout: std::time::Duration) -> std::io::Result<Arc<StallClock>> {
        let clock = Arc::new(StallClock::default());
        let every = (stall_timeout / 4).clamp(std::time::Duration::from_millis(10), std::time::Duration::from_secs(1));
        let ticking = clock.clone();
        std::thread::Builder::new()
            .name("audit-stall-clock".into())
            .spawn(move || {
                while !ticking.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(every);
                    ticking.tick.notify_waiters();
                }
            })?;
        Ok(clock)
    }

    /// The writer's answer, or `None` if none came within `timeout`; either way `done` is
    /// dropped on return, which is how the queue knows who stopped waiting.
    async fn wait(
        &self,
        done: oneshot::Receiver<Result<u64, AuditError>>,
        timeout: std::time::Duration,
    ) -> Option<Result<u64, AuditError>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut done = std::pin::pin!(done);
        loop {
            // This clock's tick, not tokio's timer: it works on any executor.
            let tick = self.tick.notified();
            tokio::select! {
                biased;
                answer = &mut done => return Some(answer.unwrap_or(Err(AuditError::Closed))),
                () = tick => {}
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
        }
    }
}

// === impl AuditLog ===

impl AuditLog {
    /// Opens (or continues) the trail in `cfg.dir` and starts the writer.
    pub fn open(cfg: &config::Audit) -> Result<AuditLog, AuditError> {
        let signer = cfg.signing_key.as_deref().map(Signer::load).transpose()?;
        AuditLog::start(cfg, signer)
    }

    fn start(cfg: &config::Audit, signer: Option<Signer>) -> Result<AuditLog, AuditError> {
        let meters = Arc::new(Meters::default());
        // The trail holds its folder's `.lock` for as long as the writer writes, and lets go
        // before close() is answered.
        let trail = Trail::open(cfg, signer, meters.clone())?;
        let postboxes = Arc::new(Postboxes::default());
        let bound = Bound {
            records: cfg.max_queue_records,
            bytes: cfg.max_queue_bytes,
        };
        let queue = Arc::new(Queue::new(Scribe::new(trail, postboxes.clone()), bound));
        let (thread_queue, thread_meters, durability) = (queue.clone(), meters.clone(), cfg.durability);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || thread::run(thread_queue, thread_meters, durability))?;
        Ok(AuditLog {
            handle: Arc::new(Handle {
                durability: cfg.durability,
                queue,
                meters,
                postboxes,
                max_record_bytes: cfg.max_record_bytes,
                stall_timeout: cfg.stall_timeout,
                space: Space::new(&cfg.dir, cfg.min_free_bytes),
                drop_logged: Default::default(),
                clock: StallClock::start(cfg.stall_timeout)?,
            }),
        })
    }

    /// Appends `event` and resolves once it is durable (per `durability`), with the receipt
    /// that says so.
    pub async fn append_durable(&self, event: Event) -> Result<super::Durable, AuditError> {
        let seq = self.append_seq(event).await?;
        Ok(super::Durable { seq })
    }

    /// [`AuditLog::append_durable`], answering the record's `seq`.
    async fn append_seq(&self, event: Event) -> Result<u64, AuditError> {
        let h = &*self.handle;
        if h.space.low() {
            return Err(AuditError::Unavailable("the audit disk is below audit.min_free_bytes"));
        }
        let fields = chain::event_fields(&event, h.max_record_bytes)?;
        let (reply, done) = oneshot::channel();
        let worker = crate::worker::current();
        let pending = Pending {
            event: event.name(),
            fields,
            reply: Some(reply),
            worker,
        };
        if h.durability == Durability::Flush {
            // On a worker, its postbox task commits at the end of the round (see `postbox`);
            // it cannot run before this record is queued, on this same thread.
            if worker.is_some_and(|i| h.postboxes.request_commit(i)) {
                h.queue.enqueue_to_commit(pending, false)?;
            } else if h.queue.enqueue_to_commit(pending, true)? {
                commit::commit_queued(&h.queue);
            }
        } else {
            h.queue.enqueue(pending)?;
        }
        if let Some(answer) = h.clock.wait(done, h.stall_timeout).await {
            return answer;
        }
        // Given up: the record, if still queued, is nobody's any more (its receiver is gone).
        h.queue.withdraw_abandoned();
        tracing::error!(stall_timeout = ?h.stall_timeout, "no answer from the audit writer in time; refusing");
        Err(AuditError::Unavailable(
            "no answer from the audit writer within audit.stall_timeout",
        ))
    }

    /// Appends `event` without waiting (completions, TLS rejections): ordered after everything
    /// appended before it.
    ///
    /// Sheddable records (`tls_rejected`, `refusals_coalesced`) are dropped and counted past
    /// half the queue's bound or below `min_free_bytes`; others are always queued.
    pub fn append(&self, event: Event) {
        let h = &*self.handle;
        let name = event.name();
        if batch::is_sheddable(name) && h.space.low() {
            return self.dropped(name, "the audit disk is below audit.min_free_bytes");
        }
        let fields = match chain::event_fields(&event, h.max_record_bytes) {
            Ok(fields) => fields,
            Err(error) => return tracing::error!(event = name, %error, "audit record dropped"),
        };
        let sent = h.queue.enqueue(Pending {
            event: name,
            fields,
            reply: None,
            worker: crate::worker::current(),
        });
        match sent {
            Ok(()) => {}
            Err(Refused::Full) => self.dropped(name, "the audit queue is full"),
            Err(Refused::Closed) => tracing::error!(event = name, error = %AuditError::Closed, "audit record dropped"),
        }
    }

    /// Counts a dropped sheddable record, and says so in the log at most once a second.
    fn dropped(&self, event: &'static str, why: &'static str) {
        let h = &*self.handle;
        let total = h.meters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if h.drop_logged.swap(now, Ordering::Relaxed) != now {
            tracing::error!(event, why, dropped_since_start = total, "audit records dropped");
        }
    }

    /// `Ok` when the log takes records now, else why not (for `/readyz`): the disk refuses
    /// writes, is below `min_free_bytes`, or a write or sync has hung past `stall_timeout`.
    pub fn readiness(&self) -> Result<(), &'static str> {
        let h = &*self.handle;
        if !self.is_healthy() {
            return Err("audit trail not writable");
        }
        if h.space.low() {
            return Err("audit disk below audit.min_free_bytes");
        }
        if h.meters.io_for() > h.stall_timeout {
            return Err("audit writer stalled (audit.stall_timeout)");
        }
        if h.queue.depth() >= h.queue.bound().records || h.queue.bytes() >= h.queue.bound().bytes {
            return Err("audit queue full");
        }
        Ok(())
    }

    /// The task that delivers the writer's answers to tasks on worker `i`, and makes that
    /// worker's `flush` commits, to be run on that worker (see `postbox`). Without it answers
    /// come one wake-up each and callers commit at once.
    pub fn postbox(&self, i: usize) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (mail, commit) = self.handle.postboxes.open(i);
        let mut task = PostboxTask {
            queue: self.handle.queue.clone(),
            mail,
            commit,
        };
        async move {
            loop {
                tokio::select! {
                    biased;
                    m = task.mail.recv() => match m {
                        Some(m) => m.deliver_here(),
                        None => return,
                    },
                    () = task.commit.wait() => commit::commit_round(&task.queue),
                }
            }
        }
    }

    /// False while records cannot be written (the gateway answers 503 and is not ready).
    pub fn is_healthy(&self) -> bool {
        self.handle.meters.healthy.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> AuditStats {
        let h = &*self.handle;
        AuditStats {
            queue_depth: h.queue.depth(),
            records_written: h.meters.records_written.load(Ordering::Relaxed),
            fsyncs: h.meters.fsyncs.load(Ordering::Relaxed),
            last_fsync_seconds: h.meters.last_fsync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            healthy: h.meters.healthy.load(Ordering::Acquire),
            records_dropped: h.meters.dropped.load(Ordering::Relaxed),
        }
    }

    /// The durations of the writer's fsyncs, 0.1 ms to 0.8 s (a handle: it fills as the
    /// writer syncs).
    pub fn fsync_durations(&self) -> Histogram {
        self.handle.meters.fsync_durations.clone()
    }

    /// Writes the final checkpoint, makes everything durable and stops the writer.
    pub async fn close(&self) -> Result<(), AuditError> {
        let queue = &self.handle.queue;
        let (reply, done) = oneshot::channel();
        // Nobody answers if the writer already stopped, after an earlier close or a crash:
        // `done` resolves at once and `closed_cleanly` tells.
        queue.close(reply);
        done.await.ok().unwrap_or_else(|| match queue.closed_cleanly() {
            true => Ok(()),
            false => Err(AuditError::Closed),
        })
    }
}

/// What a worker's postbox task owns. However the task ends, even dropped before it ran, the
/// drop closes the postbox, makes a requested commit (left untaken, the round's records would
/// wait for whichever commit came next) and answers what was still in the box.
struct PostboxTask {
    queue: Arc<Queue>,
    mail: tokio::sync::mpsc::UnboundedReceiver<postbox::Mail>,
    commit: Arc<postbox::CommitRequest>,
}

impl Drop for PostboxTask {
    fn drop(&mut self) {
        // Closed first, so that the commit's answers are made here, not left in the box.
        self.mail.close();
        if self.commit.take() {
            commit::commit_round(&self.queue);
        }
        while let Ok(m) = self.mail.try_recv() {
            m.deliver_here();
        }
    }
}
