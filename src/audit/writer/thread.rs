//! The writer: batches, the chain, rotation, checkpoints, failing closed, and the thread that
//! syncs, lingers and retries.

use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{postbox, Pending, Shared};
use crate::audit::chain::{self, Clock, HashHex, GENESIS};
use crate::audit::checkpoint::Signer;
use crate::audit::segment::{self, Segment};
use crate::audit::AuditError;
use crate::config::{self, Durability};

/// How often an unhealthy writer tries again when nothing new arrives.
const RETRY_EVERY: Duration = Duration::from_secs(1);
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
/// Fire-and-forget records kept for retry while the disk refuses writes; past this they are
/// dropped (and counted in the log) rather than growing without bound.
const MAX_RETAINED: usize = 100_000;
/// The largest batch vector kept for the next batch.
const MAX_SPARE: usize = 1024;

/// The chain as far as it goes; a batch advances a copy and commits it only once written.
#[derive(Clone, Copy)]
struct Chain {
    next_seq: u64,
    head: HashHex,
    /// Data records since the last checkpoint.
    unsigned: u64,
    /// When the first of those was written: the interval checkpoint is due from then.
    unsigned_since: Option<Instant>,
}

pub(super) struct Writer {
    /// The trail's advisory lock, released before close() is answered.
    lock: Option<std::fs::File>,
    dir: PathBuf,
    durability: Durability,
    rotate_bytes: u64,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    signer: Option<Signer>,
    /// Room kept at the end of every file for the checkpoint that closes it.
    reserve: u64,
    segment: Segment,
    /// What is on disk.
    chain: Chain,
    clock: Clock,
    /// The file may hold bytes past `segment.len` from a failed write.
    needs_repair: bool,
    /// Bytes written but not yet synced (`fsync` durability: a batch nobody waited for).
    unsynced: bool,
    /// Fire-and-forget records whose write failed; they go first in the next batch.
    retained: Vec<Pending>,
    /// The last batch's vector, emptied: the queue fills it next, so that batches do not
    /// allocate.
    spare: Vec<Pending>,
    /// A batch's lines, one record's line and the batch's seqs, kept between batches.
    buffers: Buffers,
    last_attempt: Instant,
}

/// Marks the log stopped however the thread ends, a panic included, and refuses whatever is
/// still queued: nobody is left to write it.
struct StopGuard<'a>(&'a Shared);

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        let shared = self.0;
        shared.closed.store(true, Ordering::Release);
        shared.healthy.store(false, Ordering::Release);
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
    let faults = shared.lock_writer().as_ref().map(|w| super::faults::of(&w.dir));
    let mut linger = false;
    loop {
        let (wakeup, sync_due) = match shared.lock_writer().as_ref() {
            Some(w) => (w.wakeup(shared), w.sync_due()),
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
        let Some(writer) = guard.as_mut() else { return };
        let batch = shared.take_queue(writer.take_spare());
        linger = !batch.is_empty() && batch.iter().all(|p| p.reply.is_none());
        let stopping = stop.is_some();
        let result = if batch.is_empty() && !stopping && !writer.interval_due() {
            writer.spare = batch;
            writer.idle(shared)
        } else {
            writer.commit(shared, batch, stopping)
        };
        if let Some(reply) = stop {
            if let Some(writer) = guard.take() {
                writer.stop(shared, reply, result);
            }
            return;
        }
    }
}

impl Writer {
    pub(super) fn hold_lock(&mut self, lock: std::fs::File) {
        self.lock = Some(lock);
    }

    pub(super) fn new(cfg: &config::Audit, signer: Option<Signer>, r: segment::Recovered) -> Writer {
        let mut clock = Clock::default();
        let reserve = signer.as_ref().map_or(0, |s| {
            // The longest checkpoint line: seq at its widest.
            let mut line = Vec::new();
            let time = clock.next();
            chain::encode(
                &mut line,
                u64::MAX,
                time.as_str(),
                "checkpoint",
                &s.fields(u64::MAX, GENESIS),
                GENESIS,
            );
            line.len() as u64
        });
        Writer {
            lock: None,
            dir: cfg.dir.clone(),
            durability: cfg.durability,
            rotate_bytes: cfg.rotate_bytes,
            checkpoint_every: cfg.checkpoint_every,
            checkpoint_interval: cfg.checkpoint_interval,
            signer,
            reserve,
            segment: r.segment,
            chain: Chain {
                next_seq: r.next_seq,
                head: r.head,
                unsigned: u64::from(r.unsigned_records),
                unsigned_since: r.unsigned_records.then(Instant::now),
            },
            clock,
            needs_repair: false,
            unsynced: false,
            retained: Vec::new(),
            spare: Vec::new(),
            buffers: Buffers::default(),
            last_attempt: Instant::now(),
        }
    }

    /// When to wake without a record: an interval checkpoint, or a retry while unhealthy.
    fn wakeup(&self, shared: &Shared) -> Option<Instant> {
        let checkpoint = match (&self.signer, self.chain.unsigned_since) {
            (Some(_), Some(since)) => since.checked_add(self.checkpoint_interval),
            _ => None,
        };
        let retry = (!shared.healthy.load(Ordering::Acquire)).then(|| self.last_attempt + RETRY_EVERY);
        match (checkpoint, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Written and not synced, under `fsync` durability: synced once the queue falls quiet.
    fn sync_due(&self) -> bool {
        self.unsynced && self.durability == Durability::Fsync
    }

    fn interval_due(&self) -> bool {
        self.signer.is_some()
            && self
                .chain
                .unsigned_since
                .and_then(|since| since.checked_add(self.checkpoint_interval))
                .is_some_and(|due| Instant::now() >= due)
    }

    /// Nothing queued: sync what a fire-and-forget batch left unsynced, or, while unhealthy,
    /// see whether the disk takes writes again.
    fn idle(&mut self, shared: &Shared) -> io::Result<()> {
        if !shared.healthy.load(Ordering::Acquire) {
            return self.probe(shared);
        }
        if self.sync_due() {
            self.sync(shared)?;
        }
        Ok(())
    }

    /// Answers close(); the `StopGuard` refuses whatever raced in behind it. The final
    /// checkpoint and sync were the caller's last commit. Called with the writer's lock held
    /// and the writer taken out of it, so nothing can be written after this.
    fn stop(self, shared: &Shared, reply: Option<oneshot::Sender<Result<(), AuditError>>>, result: io::Result<()>) {
        if !self.retained.is_empty() {
            tracing::error!(
                records = self.retained.len(),
                "audit writer stopped with records it could not write"
            );
        }
        let ok = result.is_ok();
        // Release the trail and close its file before anyone hears it is closed, so that it can
        // be reopened (or its filesystem unmounted) at once.
        drop(self);
        shared.closed.store(true, Ordering::Release);
        shared.healthy.store(false, Ordering::Release);
        shared.closed_cleanly.store(ok, Ordering::Release);
        match (reply, result) {
            (Some(reply), result) => {
                let _ = reply.send(result.map_err(|e| copy_error(&e)));
            }
            (None, Err(error)) => tracing::error!(%error, "audit trail not durable at shutdown"),
            (None, Ok(())) => {}
        }
    }

    /// Writes `batch` (plus any checkpoint that falls due), answers its waiters, and on failure
    /// rolls back to what is on disk.
    pub(super) fn commit(&mut self, shared: &Shared, mut batch: Vec<Pending>, stopping: bool) -> io::Result<()> {
        if !self.retained.is_empty() {
            batch.splice(0..0, std::mem::take(&mut self.retained));
        }
        self.last_attempt = Instant::now();
        let mut done = 0;
        let checkpoint = stopping || self.interval_due();
        // Sync when somebody waits for it (fsync durability), and always at close.
        let sync = stopping || (self.durability == Durability::Fsync && batch.iter().any(|p| p.reply.is_some()));
        let mut buffers = std::mem::take(&mut self.buffers);
        let result = match self.repair_if_needed() {
            Ok(()) => self.write_batch(shared, &mut batch, &mut done, checkpoint, sync, &mut buffers),
            Err(e) => Err(e),
        };
        buffers.recycle();
        self.buffers = buffers;
        match &result {
            Err(error) => self.fail(shared, error, batch, done),
            // Kept unless a burst made it large.
            Ok(()) if batch.capacity() <= MAX_SPARE => {
                batch.clear();
                self.spare = batch;
            }
            Ok(()) => {}
        }
        result
    }

    pub(super) fn take_spare(&mut self) -> Vec<Pending> {
        std::mem::take(&mut self.spare)
    }

    fn write_batch(
        &mut self,
        shared: &Shared,
        batch: &mut [Pending],
        done: &mut usize,
        checkpoint: bool,
        sync: bool,
        Buffers { buf, line, seqs }: &mut Buffers,
    ) -> io::Result<()> {
        let mut work = self.chain;
        let mut i = 0;
        while i < batch.len() {
            line.clear();
            let time = self.clock.next();
            let p = &batch[i];
            let hash = chain::encode(
                line,
                work.next_seq,
                time.as_str(),
                p.event,
                &p.fields,
                work.head.as_str(),
            );
            let used = self.segment.len + buf.len() as u64;
            if used > 0 && used + line.len() as u64 + self.reserve > self.rotate_bytes {
                if work.unsigned > 0 {
                    self.add_checkpoint(&mut work, buf);
                }
                // A finished file is synced before the next one starts (fsync durability), so
                // that only the newest file can ever lose a tail.
                self.flush(shared, buf, &work, self.durability == Durability::Fsync)?;
                answer(shared, &mut batch[*done..i], &seqs[*done..i]);
                *done = i;
                self.segment = segment::create(&self.dir, work.next_seq)?;
                continue;
            }
            buf.extend_from_slice(line);
            seqs.push(work.next_seq);
            work.next_seq += 1;
            work.head = hash;
            work.unsigned += 1;
            work.unsigned_since.get_or_insert_with(Instant::now);
            i += 1;
            if work.unsigned >= self.checkpoint_every {
                self.add_checkpoint(&mut work, buf);
            }
        }
        if checkpoint && work.unsigned > 0 {
            self.add_checkpoint(&mut work, buf);
        }
        if !buf.is_empty() || sync {
            self.flush(shared, buf, &work, sync)?;
        }
        answer(shared, &mut batch[*done..], &seqs[*done..]);
        *done = batch.len();
        Ok(())
    }

    /// Appends a signed checkpoint (when there is a key) to `buf` and advances `work` past it.
    fn add_checkpoint(&mut self, work: &mut Chain, buf: &mut Vec<u8>) {
        let Some(signer) = &self.signer else { return };
        let time = self.clock.next();
        let fields = signer.fields(work.next_seq, work.head.as_str());
        work.head = chain::encode(
            buf,
            work.next_seq,
            time.as_str(),
            "checkpoint",
            &fields,
            work.head.as_str(),
        );
        work.next_seq += 1;
        work.unsigned = 0;
        work.unsigned_since = None;
    }

    /// One write and, when `sync`, one fdatasync; then `work` is the chain.
    fn flush(&mut self, shared: &Shared, buf: &mut Vec<u8>, work: &Chain, sync: bool) -> io::Result<()> {
        if !buf.is_empty() {
            #[cfg(test)]
            super::faults::of(&self.dir).before_write(&self.segment.file, &buf[..])?;
            (&self.segment.file).write_all(buf)?;
            self.unsynced = true;
        }
        if sync && self.unsynced {
            self.sync(shared)?;
        }
        self.segment.len += buf.len() as u64;
        buf.clear();
        let records = work.next_seq - self.chain.next_seq;
        self.chain = *work;
        shared.records_written.fetch_add(records, Ordering::Relaxed);
        self.mark_healthy(shared);
        Ok(())
    }

    fn sync(&mut self, shared: &Shared) -> io::Result<()> {
        let started = Instant::now();
        self.segment.file.sync_data()?;
        self.unsynced = false;
        shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        let took = started.elapsed();
        shared.last_fsync_nanos.store(took.as_nanos() as u64, Ordering::Relaxed);
        shared.fsync_durations.observe(took.as_secs_f64());
        Ok(())
    }

    fn mark_healthy(&self, shared: &Shared) {
        if !shared.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!(file = %self.segment.path.display(), "audit trail writable again");
        }
    }

    /// Answers the waiters of everything not yet durable, keeps the fire-and-forget records for
    /// the next attempt, and cuts the file back to its durable length.
    fn fail(&mut self, shared: &Shared, error: &io::Error, batch: Vec<Pending>, done: usize) {
        if shared.healthy.swap(false, Ordering::AcqRel) {
            tracing::error!(file = %self.segment.path.display(), %error, "audit trail cannot be written; refusing requests until it can");
        }
        // Cut back before answering, so that no caller who got an error can still find the
        // half-written record in the file.
        self.needs_repair = true;
        if let Err(error) = self.repair_if_needed() {
            tracing::error!(file = %self.segment.path.display(), %error, "cannot cut the audit file back to its last good record");
        }
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

    /// Cuts off bytes of a failed write, through a fresh descriptor: after a failed fsync the
    /// old one may report later syncs as successful although the data was dropped.
    fn repair_if_needed(&mut self) -> io::Result<()> {
        if !self.needs_repair {
            return Ok(());
        }
        let file = segment::reopen(&self.segment.path)?;
        file.set_len(self.segment.len)?;
        file.sync_data()?;
        self.segment.file = file;
        self.needs_repair = false;
        Ok(())
    }

    /// While unhealthy with nothing to write: can the disk take a write and a sync again?
    fn probe(&mut self, shared: &Shared) -> io::Result<()> {
        self.last_attempt = Instant::now();
        self.repair_if_needed()?;
        let result = segment::probe(&self.dir);
        #[cfg(test)]
        super::faults::of(&self.dir).before_write(&self.segment.file, &[])?;
        result?;
        self.mark_healthy(shared);
        Ok(())
    }
}

/// The writer's working buffers, kept from one batch to the next.
#[derive(Default)]
struct Buffers {
    buf: Vec<u8>,
    line: Vec<u8>,
    seqs: Vec<u64>,
}

impl Buffers {
    /// Ready for the next batch; what a burst grew past `MAX_KEPT` bytes goes back.
    fn recycle(&mut self) {
        const MAX_KEPT: usize = 1 << 20;
        for v in [&mut self.buf, &mut self.line] {
            v.clear();
            if v.capacity() > MAX_KEPT {
                *v = Vec::new();
            }
        }
        self.seqs.clear();
        if self.seqs.capacity() > MAX_KEPT / 8 {
            self.seqs = Vec::new();
        }
    }
}

/// Answers the waiters of written records: directly when they run on this thread or on no
/// worker, else through their worker's postbox, one message per worker, which also takes back
/// that worker's record buffers.
fn answer(shared: &Shared, batch: &mut [Pending], seqs: &[u64]) {
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
            shared.postboxes.deliver(w, m);
        }
    }
}

/// One I/O error for each waiter of a failed batch.
fn copy_error(error: &io::Error) -> AuditError {
    AuditError::Io(io::Error::new(error.kind(), error.to_string()))
}
