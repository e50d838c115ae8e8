//! Answers to one worker's waiting tasks, delivered with one wake-up per batch.
//!
//! Waking a task on a worker's single-threaded runtime from another thread costs a syscall
//! (the runtime's event fd) and, when the worker sleeps, a context switch. The writer thread
//! answers a whole batch at once, so it hands each worker that batch's answers in one message,
//! and a task on that worker wakes the waiters locally.
//!
//! The same message carries the records' buffers back to the worker that allocated them, to be
//! freed there: freed on the writer's thread they would each take the allocator lock of the
//! worker's arena, in contention with that worker's own allocations.
//!
//! The postbox also holds the worker's `flush` commits back to the end of its round (see
//! `Postboxes::request_commit`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::{mpsc, oneshot, Notify};

use crate::audit::AuditError;

pub(super) type Answer = (oneshot::Sender<Result<u64, AuditError>>, Result<u64, AuditError>);

/// One batch's mail for one worker.
#[derive(Default)]
pub(super) struct Mail {
    pub(super) answers: Vec<Answer>,
    /// Buffers of written records, to be freed on the worker that allocated them.
    pub(super) spent: Vec<Vec<u8>>,
}

impl Mail {
    pub(super) fn deliver_here(self) {
        for (reply, result) in self.answers {
            let _ = reply.send(result);
        }
    }
}

/// A `flush` commit that worker's postbox task is to make once the tasks ready before it have run.
#[derive(Default)]
pub(super) struct CommitRequest {
    notify: Notify,
    requested: AtomicBool,
}

impl CommitRequest {
    /// Waits for a request, and takes it.
    pub(super) async fn wait(&self) {
        while !self.take() {
            self.notify.notified().await;
        }
    }

    /// True if a commit was requested and not yet made: the caller is now to make it.
    pub(super) fn take(&self) -> bool {
        self.requested.swap(false, Ordering::AcqRel)
    }
}

/// One worker's open postbox.
struct Postbox {
    mail: mpsc::UnboundedSender<Mail>,
    commit: Arc<CommitRequest>,
}

/// The open postboxes, by worker index.
#[derive(Default)]
pub(super) struct Postboxes {
    boxes: RwLock<Vec<Option<Postbox>>>,
    /// Messages delivered, and record buffers sent back with them, for tests.
    #[cfg(test)]
    pub(super) delivered: std::sync::atomic::AtomicUsize,
    #[cfg(test)]
    pub(super) returned: std::sync::atomic::AtomicUsize,
}

impl Postboxes {
    /// Opens worker `i`'s postbox: what its task (to run on that worker) receives, until the
    /// worker's runtime drops it.
    pub(super) fn open(&self, i: usize) -> (mpsc::UnboundedReceiver<Mail>, Arc<CommitRequest>) {
        let (tx, rx) = mpsc::unbounded_channel::<Mail>();
        let commit = Arc::new(CommitRequest::default());
        let mut boxes = self.boxes.write().unwrap_or_else(PoisonError::into_inner);
        if boxes.len() <= i {
            boxes.resize_with(i + 1, || None);
        }
        boxes[i] = Some(Postbox {
            mail: tx,
            commit: commit.clone(),
        });
        (rx, commit)
    }

    /// `flush`: asks worker `i`'s postbox task, from a task on that worker, to commit the
    /// queue. The postbox task is woken behind every task already ready on the worker, so
    /// requests that arrived together (one poll of the sockets) queue their records first and
    /// share one `write`. False when the worker has no postbox task (any more): the caller
    /// commits.
    pub(super) fn request_commit(&self, i: usize) -> bool {
        match self.boxes.read().unwrap_or_else(PoisonError::into_inner).get(i) {
            Some(Some(b)) if !b.mail.is_closed() => {
                if !b.commit.requested.swap(true, Ordering::AcqRel) {
                    b.commit.notify.notify_one();
                }
                true
            }
            _ => false,
        }
    }

    /// Hands `mail` to worker `i`'s postbox, or answers directly when it has none (any more).
    pub(super) fn deliver(&self, i: usize, mail: Mail) {
        // Counted before the send, and taken back if it fails: once sent, the worker may answer
        // its tasks, and a test hear from them, before this thread counts anything.
        #[cfg(test)]
        let buffers = mail.spent.len();
        #[cfg(test)]
        {
            self.delivered.fetch_add(1, Ordering::SeqCst);
            self.returned.fetch_add(buffers, Ordering::SeqCst);
        }
        let sent = match self.boxes.read().unwrap_or_else(PoisonError::into_inner).get(i) {
            Some(Some(b)) => b.mail.send(mail).map_err(|e| e.0),
            _ => Err(mail),
        };
        if let Err(mail) = sent {
            #[cfg(test)]
            {
                self.delivered.fetch_sub(1, Ordering::SeqCst);
                self.returned.fetch_sub(buffers, Ordering::SeqCst);
            }
            mail.deliver_here();
        }
    }
}
