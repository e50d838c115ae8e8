//! The writer thread: batches, the chain, rotation, checkpoints, and failing closed.

use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Msg, Pending, Shared};
use crate::audit::chain::{self, Clock, GENESIS};
use crate::audit::checkpoint::Signer;
use crate::audit::segment::{self, Segment};
use crate::audit::AuditError;
use crate::config::{self, Durability};

/// How often an unhealthy writer tries again when nothing new arrives.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Records taken into one batch; bounds the memory and latency of a single commit.
const MAX_BATCH: usize = 4096;
/// Fire-and-forget records kept for retry while the disk refuses writes; past this they are
/// dropped (and counted in the log) rather than growing without bound.
const MAX_RETAINED: usize = 100_000;

/// The chain as far as it goes; a batch advances a copy and commits it only once written.
#[derive(Clone)]
struct Chain {
    next_seq: u64,
    head: String,
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
    /// Fire-and-forget records whose write failed; they go first in the next batch.
    retained: Vec<Pending>,
    last_attempt: Instant,
    shared: Arc<Shared>,
}

/// Marks the log stopped however the thread ends, a panic included.
struct StopGuard(Arc<Shared>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.healthy.store(false, Ordering::Release);
    }
}

impl Writer {
    pub(super) fn hold_lock(&mut self, lock: std::fs::File) {
        self.lock = Some(lock);
    }

    pub(super) fn new(
        cfg: &config::Audit,
        signer: Option<Signer>,
        r: segment::Recovered,
        shared: Arc<Shared>,
    ) -> Writer {
        let mut clock = Clock::default();
        let reserve = signer.as_ref().map_or(0, |s| {
            // The longest checkpoint line: seq at its widest.
            let mut line = Vec::new();
            let time = clock.next();
            chain::encode(
                &mut line,
                u64::MAX,
                &time,
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
            retained: Vec::new(),
            last_attempt: Instant::now(),
            shared,
        }
    }

    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        let _guard = StopGuard(self.shared.clone());
        loop {
            let first = match self.wakeup() {
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            #[cfg(test)]
            let shared = self.shared.clone();
            #[cfg(test)]
            let _gate = shared.hooks.gate();
            let mut batch = std::mem::take(&mut self.retained);
            let mut received = 0;
            // `Some(reply)` for close(), `Some(None)` when every handle is gone.
            let mut stop = None;
            match first {
                Ok(Msg::Append(p)) => {
                    received += 1;
                    batch.push(p);
                }
                Ok(Msg::Close(reply)) => stop = Some(Some(reply)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = Some(None),
            }
            while stop.is_none() && batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(Msg::Append(p)) => {
                        received += 1;
                        batch.push(p);
                    }
                    Ok(Msg::Close(reply)) => stop = Some(Some(reply)),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => stop = Some(None),
                }
            }
            self.shared.queue_depth.fetch_sub(received, Ordering::Relaxed);

            let stopping = stop.is_some();
            let result = if batch.is_empty() && !stopping && !self.interval_due() {
                if self.shared.healthy.load(Ordering::Acquire) {
                    Ok(())
                } else {
                    self.probe()
                }
            } else {
                self.commit(batch, stopping)
            };
            if let Some(reply) = stop {
                self.stop(rx, reply, result);
                return;
            }
        }
    }

    /// When to wake without a message: an interval checkpoint, or a retry while unhealthy.
    fn wakeup(&self) -> Option<Instant> {
        let checkpoint = match (&self.signer, self.chain.unsigned_since) {
            (Some(_), Some(since)) => since.checked_add(self.checkpoint_interval),
            _ => None,
        };
        let retry = (!self.shared.healthy.load(Ordering::Acquire)).then(|| self.last_attempt + RETRY_EVERY);
        match (checkpoint, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn interval_due(&self) -> bool {
        self.signer.is_some()
            && self
                .chain
                .unsigned_since
                .and_then(|since| since.checked_add(self.checkpoint_interval))
                .is_some_and(|due| Instant::now() >= due)
    }

    /// Writes the final checkpoint (done by the caller's last commit), answers close(), and
    /// refuses whatever raced in behind it.
    fn stop(
        &mut self,
        rx: Receiver<Msg>,
        reply: Option<oneshot::Sender<Result<(), AuditError>>>,
        result: io::Result<()>,
    ) {
        if !self.retained.is_empty() {
            tracing::error!(
                records = self.retained.len(),
                "audit writer stopped with records it could not write"
            );
        }
        let ok = result.is_ok();
        // Release the trail before anyone hears it is closed, so it can be reopened at once.
        self.lock = None;
        self.shared.closed.store(true, Ordering::Release);
        self.shared.healthy.store(false, Ordering::Release);
        self.shared.closed_cleanly.store(ok, Ordering::Release);
        match (reply, result) {
            (Some(reply), result) => {
                let _ = reply.send(result.map_err(|e| copy_error(&e)));
            }
            (None, Err(error)) => tracing::error!(%error, "audit trail not durable at shutdown"),
            (None, Ok(())) => {}
        }
        let mut lost = 0;
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Append(p) => {
                    self.shared.queue_depth.fetch_sub(1, Ordering::Relaxed);
                    match p.reply {
                        Some(reply) => drop(reply.send(Err(AuditError::Closed))),
                        None => lost += 1,
                    }
                }
                Msg::Close(reply) => drop(reply.send(if ok { Ok(()) } else { Err(AuditError::Closed) })),
            }
        }
        if lost > 0 {
            tracing::error!(records = lost, "audit records appended after close were dropped");
        }
    }

    /// Writes `batch` (plus any checkpoint that falls due), answers its waiters, and on failure
    /// rolls back to what is on disk.
    fn commit(&mut self, mut batch: Vec<Pending>, stopping: bool) -> io::Result<()> {
        self.last_attempt = Instant::now();
        let mut done = 0;
        let checkpoint = stopping || self.interval_due();
        let result = match self.repair_if_needed() {
            Ok(()) => self.write_batch(&mut batch, &mut done, checkpoint, stopping),
            Err(e) => Err(e),
        };
        if let Err(error) = &result {
            self.fail(error, batch, done);
        }
        result
    }

    fn write_batch(&mut self, batch: &mut [Pending], done: &mut usize, checkpoint: bool, sync: bool) -> io::Result<()> {
        let mut work = self.chain.clone();
        let mut buf = Vec::with_capacity(batch.len() * 512);
        let mut line = Vec::with_capacity(1024);
        let mut seqs = Vec::with_capacity(batch.len());
        let mut i = 0;
        while i < batch.len() {
            line.clear();
            let time = self.clock.next();
            let p = &batch[i];
            let hash = chain::encode(&mut line, work.next_seq, &time, p.event, &p.fields, &work.head);
            let used = self.segment.len + buf.len() as u64;
            if used > 0 && used + line.len() as u64 + self.reserve > self.rotate_bytes {
                if work.unsigned > 0 {
                    self.add_checkpoint(&mut work, &mut buf);
                }
                if !buf.is_empty() {
                    self.flush(&mut buf, &work, false)?;
                }
                answer(&mut batch[*done..i], &seqs[*done..i]);
                *done = i;
                self.segment = segment::create(&self.dir, work.next_seq)?;
                continue;
            }
            buf.extend_from_slice(&line);
            seqs.push(work.next_seq);
            work.next_seq += 1;
            work.head = hash;
            work.unsigned += 1;
            work.unsigned_since.get_or_insert_with(Instant::now);
            i += 1;
            if work.unsigned >= self.checkpoint_every {
                self.add_checkpoint(&mut work, &mut buf);
            }
        }
        if checkpoint && work.unsigned > 0 {
            self.add_checkpoint(&mut work, &mut buf);
        }
        if !buf.is_empty() || sync {
            self.flush(&mut buf, &work, sync)?;
        }
        answer(&mut batch[*done..], &seqs[*done..]);
        *done = batch.len();
        Ok(())
    }

    /// Appends a signed checkpoint (when there is a key) to `buf` and advances `work` past it.
    fn add_checkpoint(&mut self, work: &mut Chain, buf: &mut Vec<u8>) {
        let Some(signer) = &self.signer else { return };
        let time = self.clock.next();
        let fields = signer.fields(work.next_seq, &work.head);
        work.head = chain::encode(buf, work.next_seq, &time, "checkpoint", &fields, &work.head);
        work.next_seq += 1;
        work.unsigned = 0;
        work.unsigned_since = None;
    }

    /// One write and (per durability, or `force_sync`) one fdatasync; then `work` is the chain.
    fn flush(&mut self, buf: &mut Vec<u8>, work: &Chain, force_sync: bool) -> io::Result<()> {
        #[cfg(test)]
        self.shared.hooks.before_write(&self.segment.file, &buf[..])?;
        (&self.segment.file).write_all(buf)?;
        if force_sync || self.durability == Durability::Fsync {
            let started = Instant::now();
            self.segment.file.sync_data()?;
            let s = &self.shared;
            s.fsyncs.fetch_add(1, Ordering::Relaxed);
            s.last_fsync_nanos
                .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        self.segment.len += buf.len() as u64;
        buf.clear();
        let records = work.next_seq - self.chain.next_seq;
        self.chain = work.clone();
        self.shared.records_written.fetch_add(records, Ordering::Relaxed);
        self.mark_healthy();
        #[cfg(test)]
        self.shared.hooks.notify();
        Ok(())
    }

    fn mark_healthy(&self) {
        if !self.shared.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!(file = %self.segment.path.display(), "audit trail writable again");
        }
    }

    /// Answers the waiters of everything not yet durable, keeps the fire-and-forget records for
    /// the next attempt, and cuts the file back to its durable length.
    fn fail(&mut self, error: &io::Error, batch: Vec<Pending>, done: usize) {
        if self.shared.healthy.swap(false, Ordering::AcqRel) {
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
    fn probe(&mut self) -> io::Result<()> {
        self.last_attempt = Instant::now();
        self.repair_if_needed()?;
        let result = segment::probe(&self.dir);
        #[cfg(test)]
        self.shared.hooks.before_write(&self.segment.file, &[])?;
        result?;
        self.mark_healthy();
        Ok(())
    }
}

fn answer(batch: &mut [Pending], seqs: &[u64]) {
    for (p, &seq) in batch.iter_mut().zip(seqs) {
        if let Some(reply) = p.reply.take() {
            let _ = reply.send(Ok(seq));
        }
    }
}

/// One I/O error for each waiter of a failed batch.
fn copy_error(error: &io::Error) -> AuditError {
    AuditError::Io(io::Error::new(error.kind(), error.to_string()))
}
