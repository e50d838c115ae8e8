//! `durability = "flush"`: there is nothing to wait for but a `write`, so the caller's own
//! thread writes its record, and everything queued before it: no thread hop, no wake-up.
//!
//! On a worker thread the write waits for the end of the worker's round: its postbox task is
//! woken behind every task already ready (`postbox`), so the requests that one poll of the
//! sockets brought in queue their records first and share one `write` (a file `write` costs
//! microseconds of kernel time however short). That task then calls [`commit_round`].
//!
//! Flat combining: a round's commit that finds another caller writing leaves its records to
//! that one, which takes every durable record queued before it lets go ([`commit_queued`]), so
//! a worker thread never blocks behind another's `write`; and a round waiting to end holds up
//! no other worker's records. A caller writes for others for at most `COMMIT_ROUNDS` batches,
//! then hands the rest to the writer thread.

use super::queue::Queue;

/// The most batches one caller writes for others before handing the rest to the writer
/// thread.
const COMMIT_ROUNDS: usize = 8;

/// At the end of a worker's round: writes the queue unless another caller is writing it
/// already (it takes this round's records too before it lets go) or another round's commit has
/// taken them.
pub(super) fn commit_round(queue: &Queue) {
    if queue.claim_commit() {
        commit_queued(queue);
    }
}

/// Writes the queue, again and again while durable records keep arriving, then lets go. The
/// caller has claimed the commit (`Queue::enqueue_to_commit`, `Queue::claim_commit`). Every
/// decision to stop is taken under the queue's lock (`Queue::commit_again`), so a record
/// queued while a caller commits is always written by this loop or by the writer thread.
pub(super) fn commit_queued(queue: &Queue) {
    for round in 1..=COMMIT_ROUNDS {
        {
            let mut trail = queue.lock_trail();
            // Closing: the writer thread writes what is queued with the final checkpoint, or
            // refuses it once stopped.
            if !queue.is_closed() {
                if let Some((scribe, batch)) = trail.take_batch() {
                    let _ = scribe.commit(batch, false);
                }
            }
        }
        // Don't keep one worker writing for everyone: after the last round the thread takes
        // the rest.
        if !queue.commit_again(round < COMMIT_ROUNDS) {
            return;
        }
    }
}
