//! A batch's way through the trail: records taken from the queue are written by the `Trail`,
//! and their waiters answered, by their worker's postbox where they have one. A failed batch
//! answers its waiters with the error; its fire-and-forget records have nobody to tell, so the
//! `Scribe` keeps them, to go first in the next attempt.

use std::io;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::postbox::{self, Postboxes};
use super::trail::{Record, Trail};
use crate::audit::AuditError;

/// Fire-and-forget records kept for retry while the disk refuses writes; past this they are
/// dropped (and counted in the log) rather than growing without bound.
const MAX_RETAINED: usize = 100_000;
/// The largest batch vector kept for the next batch.
const MAX_SPARE: usize = 1024;

/// A record waiting for its `seq`.
pub(super) struct Pending {
    pub(super) event: &'static str,
    /// The event's members, serialised by the caller.
    pub(super) fields: Vec<u8>,
    /// `None` for fire-and-forget appends.
    pub(super) reply: Option<oneshot::Sender<Result<u64, AuditError>>>,
    /// The worker thread that made the record, if any: the answer to its waiting task, and the
    /// spent `fields` buffer, go back by that worker's postbox.
    pub(super) worker: Option<usize>,
}

impl Pending {
    /// Somebody waits for this record to be durable.
    pub(super) fn awaited(&self) -> bool {
        self.reply.is_some()
    }

    /// A fire-and-forget record that an unauthenticated peer can cause (`tls_rejected`,
    /// `refusals_coalesced`): dropped, and counted, rather than queued past half the queue's
    /// bound or written below `min_free_bytes`. Completions and lifecycle records are never
    /// dropped: each completion follows an access that was admitted, so there are never more
    /// of them than requests in flight.
    pub(super) fn sheddable(&self) -> bool {
        !self.awaited() && is_sheddable(self.event)
    }

    /// What this record holds the queue's byte bound to.
    pub(super) fn queued_bytes(&self) -> u64 {
        // The vector and the rest of the struct, besides the members.
        self.fields.len() as u64 + 64
    }
}

/// See [`Pending::sheddable`].
pub(super) fn is_sheddable(event: &str) -> bool {
    matches!(event, "tls_rejected" | "refusals_coalesced")
}

impl Record for Pending {
    fn event(&self) -> &'static str {
        self.event
    }

    fn fields(&self) -> &[u8] {
        &self.fields
    }
}

/// The trail and the records it still owes: whoever holds the `Scribe` writes.
pub(super) struct Scribe {
    trail: Trail,
    /// Fire-and-forget records whose write failed; they go first in the next batch.
    retained: Vec<Pending>,
    /// The last batch's vector, emptied: the queue fills it next, so that batches do not
    /// allocate.
    spare: Vec<Pending>,
    postboxes: Arc<Postboxes>,
}

impl Scribe {
    pub(super) fn new(trail: Trail, postboxes: Arc<Postboxes>) -> Scribe {
        Scribe {
            trail,
            retained: Vec::new(),
            spare: Vec::new(),
            postboxes,
        }
    }

    pub(super) fn trail(&self) -> &Trail {
        &self.trail
    }

    pub(super) fn trail_mut(&mut self) -> &mut Trail {
        &mut self.trail
    }

    /// An empty vector for the queue to fill while this batch is written.
    pub(super) fn take_spare(&mut self) -> Vec<Pending> {
        std::mem::take(&mut self.spare)
    }

    /// Takes back a batch's vector that had nothing in it.
    pub(super) fn put_back(&mut self, empty: Vec<Pending>) {
        debug_assert!(empty.is_empty());
        self.spare = empty;
    }

    /// Writes `batch` (after any records kept from a failed batch, and with any checkpoint
    /// that falls due, or the final one when `stopping`), and answers its waiters.
    pub(super) fn commit(&mut self, mut batch: Vec<Pending>, stopping: bool) -> io::Result<()> {
        if !self.retained.is_empty() {
            batch.splice(0..0, std::mem::take(&mut self.retained));
        }
        // Sync when somebody waits for it (fsync durability), and always at close.
        let sync = stopping || (self.trail.syncs() && batch.iter().any(Pending::awaited));
        let postboxes = &self.postboxes;
        let result = self.trail.write(&mut batch, stopping, sync, |written, seqs| {
            answer(postboxes, written, seqs)
        });
        match result {
            Err((error, done)) => {
                self.fail(&error, batch, done);
                Err(error)
            }
            // Kept unless a burst made it large.
            Ok(()) if batch.capacity() <= MAX_SPARE => {
                batch.clear();
                self.spare = batch;
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Answers the waiters of everything not written with `error`, and keeps the
    /// fire-and-forget records for the next attempt. The trail is already cut back.
    fn fail(&mut self, error: &io::Error, batch: Vec<Pending>, done: usize) {
        let mut dropped = 0;
        for p in batch.into_iter().skip(done) {
            match p.reply {
                Some(reply) => drop(reply.send(Err(copy_error(error)))),
                None if self.retained.len() < MAX_RETAINED => self.retained.push(p),
                None => dropped += 1,
            }
        }
        if dropped > 0 {
            tracing::error!(records = dropped, "audit records dropped: the retry queue is full");
        }
    }

    /// Closes the trail: its lock and file are released when this returns.
    pub(super) fn close(self) {
        if !self.retained.is_empty() {
            tracing::error!(
                records = self.retained.len(),
                "audit writer stopped with records it could not write"
            );
        }
    }
}

/// Answers the waiters of written records: directly when they run on this thread or on no
/// worker, else through their worker's postbox, one message per worker, which also takes back
/// that worker's record buffers.
fn answer(postboxes: &Postboxes, batch: &mut [Pending], seqs: &[u64]) {
    let here = crate::worker::current();
    let mut mail: Vec<(usize, postbox::Mail)> = Vec::new();
    for (p, &seq) in batch.iter_mut().zip(seqs) {
        match p.worker.filter(|&w| Some(w) != here) {
            Some(w) => {
                let i = match mail.iter().position(|(i, _)| *i == w) {
                    Some(i) => i,
                    None => {
                        mail.push((w, postbox::Mail::default()));
                        mail.len() - 1
                    }
                };
                let m = &mut mail[i].1;
                if let Some(reply) = p.reply.take() {
                    m.answers.push((reply, Ok(seq)));
                }
                m.spent.push(std::mem::take(&mut p.fields));
            }
            None => {
                if let Some(reply) = p.reply.take() {
                    drop(reply.send(Ok(seq)));
                }
            }
        }
    }
    for (w, m) in mail {
        // Buffers alone are not worth waking a worker for: they are freed here.
        if !m.answers.is_empty() {
            postboxes.deliver(w, m);
        }
    }
}

/// One I/O error for each waiter of a failed batch, or for close().
pub(super) fn copy_error(error: &io::Error) -> AuditError {
    AuditError::Io(io::Error::new(error.kind(), error.to_string()))
}
