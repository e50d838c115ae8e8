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
#[cfg(test)]
mod tests;
mod thread;
mod trail;

use batch::{Pending, Scribe};
use postbox::Postboxes;
use queue::Queue;
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
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.queue.handles_gone();
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
        let queue = Arc::new(Queue::new(Scribe::new(trail, postboxes.clone())));
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
        let fields = chain::event_fields(&event)?;
        let (reply, done) = oneshot::channel();
        let worker = crate::worker::current();
        let pending = Pending {
            event: event.name(),
            fields,
            reply: Some(reply),
            worker,
        };
        let h = &*self.handle;
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
        done.await.unwrap_or(Err(AuditError::Closed))
    }

    /// Appends `event` without waiting (completions, TLS rejections): ordered after everything
    /// appended before it.
    pub fn append(&self, event: Event) {
        let name = event.name();
        let sent = chain::event_fields(&event).and_then(|fields| {
            self.handle.queue.enqueue(Pending {
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
