//! The one writer that owns the audit files (SPEC §5).
//!
//! The files and the chain sit behind one lock (`Shared::writer`); whoever holds it takes every
//! record queued so far, gives each its `seq`, `time` and chain link, and writes the lot with one
//! `write` (group commit). Two ways in:
//!
//! - `durability = "fsync"`: callers queue their record and a dedicated std thread writes the
//!   batch, `fdatasync`s it (fsync blocks, so it must not sit on a runtime worker) and only then
//!   answers the batch's waiters. While it syncs, the next batch gathers behind it.
//! - `durability = "flush"`: there is nothing to wait for but a `write`, so the caller's own
//!   thread writes its record, and everything queued before it: no thread hop, no wake-up.
//!   On a worker thread the write waits for the end of the worker's round: its postbox task is
//!   woken behind every task already ready, so the requests that one poll of the sockets
//!   brought in queue their records first and share one `write` (a file `write` costs
//!   microseconds of kernel time however short). A round's commit that finds another caller
//!   writing leaves its records to that one, which takes every durable record queued before it
//!   lets go (flat combining), so a worker thread never blocks behind another's `write`; and a
//!   round waiting to end holds up no other worker's records.
//!
//! Fire-and-forget records (completions, TLS rejections, lifecycle) only queue. They ride along
//! with the next durable record, or the thread writes them after a short linger, so a busy
//! gateway does not wake the thread once per record. A batch that nobody waits for is not
//! synced on its own: the next durable batch, or the thread once the queue falls quiet, syncs it.
//!
//! A failed write or sync answers every waiter with an error, cuts the file back to its last good
//! length and leaves the chain where it was on disk: no caller ever sees `Ok` for a record that is
//! not durable. Fire-and-forget records of a failed batch have nobody to tell, so they are kept
//! and go first in the next attempt; the writer retries on every append and at least once a
//! second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::oneshot;

use super::chain;
use super::checkpoint::Signer;
use super::{AuditError, Event};
use crate::config::{self, Durability};

mod batch;
#[cfg(test)]
mod faults;
mod postbox;
#[cfg(test)]
mod tests;
mod thread;
mod trail;

use batch::{Pending, Scribe};
use trail::{Meters, Trail};

/// `flush`: the most batches one caller writes for others before handing the rest to the
/// writer thread.
const COMMIT_ROUNDS: usize = 8;

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
}

/// Handle to the one writer that owns the audit files. Cheap to clone; when the last clone is
/// dropped the writer closes the trail as `close()` would.
#[derive(Clone)]
pub struct AuditLog {
    handle: Arc<Handle>,
}

/// Tells the writer thread when no handle is left.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut q = self.shared.queue();
        q.handles_gone = true;
        self.shared.wake.notify_one();
    }
}

/// What the handles and the writer thread share.
struct Shared {
    durability: Durability,
    /// The files and the chain. Lock order: `writer`, then `queue`.
    /// `None` once the writer has stopped.
    writer: Mutex<Option<Scribe>>,
    queue: Mutex<Queue>,
    /// Wakes the writer thread; signalled only when it waits (see `Queue`).
    wake: Condvar,
    closed: AtomicBool,
    /// The final checkpoint and sync at close succeeded (answers a close() that comes late).
    closed_cleanly: AtomicBool,
    queue_depth: AtomicU64,
    meters: Arc<Meters>,
    /// Where the writer thread delivers answers for tasks on worker threads.
    postboxes: Arc<postbox::Postboxes>,
}

/// Records waiting for the writer, and what the writer thread is doing.
#[derive(Default)]
struct Queue {
    items: Vec<Pending>,
    close: Option<oneshot::Sender<Result<(), AuditError>>>,
    handles_gone: bool,
    /// The writer thread has ended: nothing queued now would ever be written.
    stopped: bool,
    /// The thread waits for any record: every append wakes it.
    idle: bool,
    /// The thread lingers to let fire-and-forget records gather: only a durable append (or a
    /// close) wakes it early.
    lingering: bool,
    /// `flush`: a caller is writing, and will write every durable record queued before it
    /// lets go.
    committing: bool,
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
        // The trail's lock is held for as long as the writer writes; released before close()
        // is answered.
        let trail = Trail::open(cfg, signer, meters.clone())?;
        let postboxes = Arc::new(postbox::Postboxes::default());
        let shared = Arc::new(Shared {
            durability: cfg.durability,
            writer: Mutex::new(Some(Scribe::new(trail, postboxes.clone()))),
            queue: Mutex::default(),
            wake: Condvar::new(),
            closed: AtomicBool::default(),
            closed_cleanly: AtomicBool::default(),
            queue_depth: AtomicU64::default(),
            meters,
            postboxes,
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || thread::run(thread_shared))?;
        Ok(AuditLog {
            handle: Arc::new(Handle { shared }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// Appends `event` and resolves once it is durable (per `durability`), with the receipt
    /// that says so.
    pub async fn append_durable(&self, event: Event) -> Result<super::Durable, AuditError> {
        let seq = self.append_seq(event).await?;
        Ok(super::Durable { seq })
    }

    /// [`AuditLog::append_durable`], answering the record's `seq`.
    async fn append_seq(&self, event: Event) -> Result<u64, AuditError> {
        let fields = chain::event_fields(&event)?;
        let (reply, done) = oneshot::channel();
        let worker = crate::worker::current();
        let pending = Pending {
            event: event.name(),
            fields,
            reply: Some(reply),
            worker,
        };
        let shared = self.shared();
        if shared.durability == Durability::Flush {
            // On a worker, its postbox task commits at the end of the round (see `postbox`);
            // it cannot run before this record is queued, on this same thread.
            if worker.is_some_and(|i| shared.postboxes.request_commit(i)) {
                shared.enqueue_to_commit(pending, false)?;
            } else if shared.enqueue_to_commit(pending, true)? {
                shared.commit_queued();
            }
        } else {
            shared.enqueue(pending)?;
        }
        done.await.unwrap_or(Err(AuditError::Closed))
    }

    /// Appends `event` without waiting (completions, TLS rejections): ordered after everything
    /// appended before it.
    pub fn append(&self, event: Event) {
        let name = event.name();
        let sent = chain::event_fields(&event).and_then(|fields| {
            self.shared().enqueue(Pending {
                event: name,
                fields,
                reply: None,
                worker: crate::worker::current(),
            })
        });
        if let Err(error) = sent {
            tracing::error!(event = name, %error, "audit record dropped");
        }
    }

    /// The task that delivers the writer's answers to tasks on worker `i`, and makes that
    /// worker's `flush` commits, to be run on that worker (see `postbox`). Without it answers
    /// come one wake-up each and callers commit at once.
    pub fn postbox(&self, i: usize) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (mail, commit) = self.shared().postboxes.open(i);
        let mut task = PostboxTask {
            shared: self.handle.shared.clone(),
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
                    () = task.commit.wait() => task.shared.commit_round(),
                }
            }
        }
    }

    /// False while records cannot be written (the gateway answers 503 and is not ready).
    pub fn is_healthy(&self) -> bool {
        self.shared().meters.healthy.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> AuditStats {
        let s = self.shared();
        AuditStats {
            queue_depth: s.queue_depth.load(Ordering::Relaxed),
            records_written: s.meters.records_written.load(Ordering::Relaxed),
            fsyncs: s.meters.fsyncs.load(Ordering::Relaxed),
            last_fsync_seconds: s.meters.last_fsync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            healthy: s.meters.healthy.load(Ordering::Acquire),
        }
    }

    /// The durations of the writer's fsyncs, 0.1 ms to 0.8 s (a handle: it fills as the
    /// writer syncs).
    pub fn fsync_durations(&self) -> Histogram {
        self.shared().meters.fsync_durations.clone()
    }

    /// Writes the final checkpoint, makes everything durable and stops the writer.
    pub async fn close(&self) -> Result<(), AuditError> {
        let shared = self.shared();
        shared.closed.store(true, Ordering::Release);
        let (reply, done) = oneshot::channel();
        {
            let mut q = shared.queue();
            if !q.stopped && q.close.is_none() {
                q.close = Some(reply);
                shared.wake.notify_one();
            } else {
                // Nobody will answer: `done` resolves at once and `closed_cleanly` tells.
                drop(reply);
            }
        }
        // Unanswered: the writer already stopped, after an earlier close or a crash.
        done.await
            .ok()
            .unwrap_or_else(|| match shared.closed_cleanly.load(Ordering::Acquire) {
                true => Ok(()),
                false => Err(AuditError::Closed),
            })
    }
}

/// What a worker's postbox task owns. However the task ends, even dropped before it ran, the
/// drop closes the postbox, makes a requested commit (left untaken, the round's records would
/// wait for whichever commit came next) and answers what was still in the box.
struct PostboxTask {
    shared: Arc<Shared>,
    mail: tokio::sync::mpsc::UnboundedReceiver<postbox::Mail>,
    commit: Arc<postbox::CommitRequest>,
}

impl Drop for PostboxTask {
    fn drop(&mut self) {
        // Closed first, so that the commit's answers are made here, not left in the box.
        self.mail.close();
        if self.commit.take() {
            self.shared.commit_round();
        }
        while let Ok(m) = self.mail.try_recv() {
            m.deliver_here();
        }
    }
}

// === impl Shared ===

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_writer(&self) -> MutexGuard<'_, Option<Scribe>> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `pending` for the writer, waking its thread only when it waits for this kind of
    /// record.
    fn enqueue(&self, pending: Pending) -> Result<(), AuditError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(AuditError::Closed);
        }
        let durable = pending.reply.is_some();
        let mut q = self.queue();
        if q.stopped {
            return Err(AuditError::Closed);
        }
        q.items.push(pending);
        self.queue_depth.fetch_add(1, Ordering::Relaxed);
        if q.idle || (durable && q.lingering) {
            q.idle = false;
            q.lingering = false;
            self.wake.notify_one();
        }
        Ok(())
    }

    /// `flush`: queues a durable record without waking the writer thread. With `claim`, true
    /// if the caller is to write the queue, false if another caller is writing and will take
    /// this record too. Without, a worker's postbox task commits it (`commit_round`).
    fn enqueue_to_commit(&self, pending: Pending, claim: bool) -> Result<bool, AuditError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(AuditError::Closed);
        }
        let mut q = self.queue();
        if q.stopped {
            return Err(AuditError::Closed);
        }
        q.items.push(pending);
        self.queue_depth.fetch_add(1, Ordering::Relaxed);
        Ok(claim && !std::mem::replace(&mut q.committing, true))
    }

    /// `flush`, at the end of a worker's round: writes the queue unless another caller is
    /// writing it already (it takes this round's records too before it lets go) or another
    /// round's commit has taken them.
    fn commit_round(&self) {
        {
            let mut q = self.queue();
            if q.committing || !q.items.iter().any(|p| p.reply.is_some()) {
                return;
            }
            q.committing = true;
        }
        self.commit_queued();
    }

    /// `flush`: writes the queue, again and again while durable records keep arriving, then
    /// lets go. Every decision to stop is taken under the queue's lock, so a record queued
    /// while `committing` is always written by this loop or by the writer thread.
    fn commit_queued(&self) {
        for round in 1.. {
            {
                let mut guard = self.lock_writer();
                match guard.as_mut() {
                    Some(writer) if !self.closed.load(Ordering::Acquire) => {
                        let batch = self.take_queue(writer.take_spare());
                        let _ = writer.commit(batch, false);
                    }
                    // Closing: the writer thread writes what is queued with the final checkpoint,
                    // or refuses it once stopped.
                    _ => {}
                }
            }
            let mut q = self.queue();
            let more = !self.closed.load(Ordering::Acquire) && q.items.iter().any(|p| p.reply.is_some());
            if !more || round == COMMIT_ROUNDS {
                q.committing = false;
                if more {
                    // Don't keep one worker writing for everyone: the thread takes the rest.
                    q.idle = false;
                    q.lingering = false;
                    self.wake.notify_one();
                }
                return;
            }
        }
    }

    /// Everything queued so far, in order, leaving `spare` (empty) to queue into. Called with
    /// the writer's lock held, so that nothing queued earlier can be written after it.
    fn take_queue(&self, spare: Vec<Pending>) -> Vec<Pending> {
        debug_assert!(spare.is_empty());
        let items = std::mem::replace(&mut self.queue().items, spare);
        self.queue_depth.fetch_sub(items.len() as u64, Ordering::Relaxed);
        items
    }
}
