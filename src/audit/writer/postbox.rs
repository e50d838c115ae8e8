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

use std::future::Future;
use std::sync::{PoisonError, RwLock};

use tokio::sync::{mpsc, oneshot};

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
    fn deliver_here(self) {
        for (reply, result) in self.answers {
            let _ = reply.send(result);
        }
    }
}

/// The open postboxes, by worker index.
#[derive(Default)]
pub(super) struct Postboxes {
    boxes: RwLock<Vec<Option<mpsc::UnboundedSender<Mail>>>>,
    /// Messages delivered, and record buffers sent back with them, for tests.
    #[cfg(test)]
    pub(super) delivered: std::sync::atomic::AtomicUsize,
    #[cfg(test)]
    pub(super) returned: std::sync::atomic::AtomicUsize,
}

impl Postboxes {
    /// Opens worker `i`'s postbox; the returned task (to run on that worker) delivers its mail
    /// until the worker's runtime drops it.
    pub(super) fn open(&self, i: usize) -> impl Future<Output = ()> + Send + 'static {
        let (tx, mut rx) = mpsc::unbounded_channel::<Mail>();
        {
            let mut boxes = self.boxes.write().unwrap_or_else(PoisonError::into_inner);
            if boxes.len() <= i {
                boxes.resize_with(i + 1, || None);
            }
            boxes[i] = Some(tx);
        }
        async move {
            while let Some(mail) = rx.recv().await {
                mail.deliver_here();
            }
        }
    }

    /// Hands `mail` to worker `i`'s postbox, or answers directly when it has none (any more).
    pub(super) fn deliver(&self, i: usize, mail: Mail) {
        #[cfg(test)]
        let buffers = mail.spent.len();
        let sent = match self.boxes.read().unwrap_or_else(PoisonError::into_inner).get(i) {
            Some(Some(tx)) => tx.send(mail).map_err(|e| e.0),
            _ => Err(mail),
        };
        #[cfg(test)]
        if sent.is_ok() {
            self.delivered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.returned.fetch_add(buffers, std::sync::atomic::Ordering::SeqCst);
        }
        if let Err(mail) = sent {
            mail.deliver_here();
        }
    }
}
