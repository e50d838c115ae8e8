//! The trail on disk: its files, the chain, rotation, checkpoints, syncs, and cutting a failed
//! write back off. It writes what it is given and says how far it got; who waits for which
//! record, and which thread calls, is for the layers above (`batch`, `queue`).

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::audit::chain::{self, Clock, HashHex, GENESIS};
use crate::audit::checkpoint::{self, Signer};
use crate::audit::segment::{self, Segment};
use crate::audit::AuditError;
use crate::config::{self, Durability};

/// How often an unhealthy writer tries again when nothing new arrives.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// A `checkpoint_interval` of 0 would have an idle writer sign without end.
const MIN_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(1);

/// One record to write: what the caller encoded, before it has a `seq`, `time` or chain link.
pub(super) trait Record {
    fn event(&self) -> &'static str;
    /// The event's members, serialised.
    fn fields(&self) -> &[u8];
}

/// What the trail reports without a lock: whether it takes writes, and the figures for
/// `/metrics`.
pub(super) struct Meters {
    pub(super) healthy: AtomicBool,
    /// Records (checkpoints included) written since open.
    pub(super) records_written: AtomicU64,
    pub(super) fsyncs: AtomicU64,
    /// Duration of the latest fsync.
    pub(super) last_fsync_nanos: AtomicU64,
    /// Every fsync's duration, 0.1 ms to 0.8 s (one observation per group commit, not per
    /// record).
    pub(super) fsync_durations: Histogram,
    /// Sheddable records dropped (see `Pending::sheddable`).
    pub(super) dropped: AtomicU64,
    /// When the write or sync under way began (nanoseconds since `epoch`, plus one); 0 when
    /// none is: a hung disk shows as one that began long ago (`audit.stall_timeout`).
    io_since: AtomicU64,
    epoch: Instant,
}

impl Meters {
    /// How long the write or sync under way has taken so far.
    pub(super) fn io_for(&self) -> Duration {
        match self.io_since.load(Ordering::Acquire) {
            0 => Duration::ZERO,
            since => self.epoch.elapsed().saturating_sub(Duration::from_nanos(since - 1)),
        }
    }

    /// Marks a write or sync as under way until the guard's drop.
    fn io(&self) -> IoGuard<'_> {
        let since = self.epoch.elapsed().as_nanos() as u64 + 1;
        self.io_since.store(since, Ordering::Release);
        IoGuard(self)
    }
}

struct IoGuard<'a>(&'a Meters);

impl Drop for IoGuard<'_> {
    fn drop(&mut self) {
        self.0.io_since.store(0, Ordering::Release);
    }
}

impl Default for Meters {
    fn default() -> Meters {
        Meters {
            healthy: AtomicBool::new(true),
            records_written: AtomicU64::default(),
            fsyncs: AtomicU64::default(),
            last_fsync_nanos: AtomicU64::default(),
            fsync_durations: Histogram::new(exponential_buckets(0.0001, 2.0, 14)),
            dropped: AtomicU64::default(),
            io_since: AtomicU64::default(),
            epoch: Instant::now(),
        }
    }
}

/// The chain as far as it goes; a batch advances a copy and commits it only once written.
#[derive(Clone, Copy)]
struct Chain {
    next_seq: u64,
    head: HashHex,
    /// Data records since the last checkpoint.
    unsigned: u64,
    /// When the next checkpoint is due: `checkpoint_interval` after the last one (or after
    /// open), records or not, as that checkpoint's `next_due` promised the auditor. `None` for
    /// an interval too long to count.
    checkpoint_due: Option<Instant>,
}

pub(super) struct Trail {
    /// The trail's advisory lock, held for as long as the trail is open.
    _lock: std::fs::File,
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
    /// A batch's lines, one record's line and the batch's seqs, kept between batches.
    buffers: Buffers,
    last_attempt: Instant,
    meters: Arc<Meters>,
}

impl Trail {
    /// Opens (or continues) the trail in `cfg.dir`: makes the folder if need be, takes its
    /// lock, and only then cuts a torn last line off and finds the chain's head. In that order:
    /// on a folder another caregate writes to, the "torn" line may be its write in progress,
    /// and a refused second writer must leave every byte as it found it.
    pub(super) fn open(cfg: &config::Audit, signer: Option<Signer>, meters: Arc<Meters>) -> Result<Trail, AuditError> {
        segment::create_dir(&cfg.dir)?;
        let lock = lock_trail(&cfg.dir)?;
        let r = segment::recover(&cfg.dir)?;
        let mut clock = Clock::default();
        let reserve = signer.as_ref().map_or(0, |s| {
            // The longest checkpoint line: seq at its widest (times are all of one width).
            let mut line = Vec::new();
            let time = clock.next();
            let time = time.as_str();
            let fields = s.fields(u64::MAX, GENESIS, time, time);
            chain::encode(&mut line, u64::MAX, time, "checkpoint", &fields, GENESIS);
            line.len() as u64
        });
        Ok(Trail {
            _lock: lock,
            dir: cfg.dir.clone(),
            durability: cfg.durability,
            rotate_bytes: cfg.rotate_bytes,
            checkpoint_every: cfg.checkpoint_every,
            checkpoint_interval: cfg.checkpoint_interval.max(MIN_CHECKPOINT_INTERVAL),
            signer,
            reserve,
            segment: r.segment,
            chain: Chain {
                next_seq: r.next_seq,
                head: r.head,
                unsigned: u64::from(r.unsigned_records),
                checkpoint_due: Instant::now().checked_add(cfg.checkpoint_interval.max(MIN_CHECKPOINT_INTERVAL)),
            },
            clock,
            needs_repair: false,
            unsynced: false,
            buffers: Buffers::default(),
            last_attempt: Instant::now(),
            meters,
        })
    }

    #[cfg(test)]
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// `fsync` durability: a record is durable once synced, not once written.
    pub(super) fn syncs(&self) -> bool {
        self.durability == Durability::Fsync
    }

    /// When to come back with nothing to write: the interval checkpoint, or, while unhealthy,
    /// the next retry (which writes a checkpoint that fell due meanwhile).
    pub(super) fn wakeup(&self) -> Option<Instant> {
        if !self.meters.healthy.load(Ordering::Acquire) {
            return Some(self.last_attempt + RETRY_EVERY);
        }
        self.signer.as_ref().and(self.chain.checkpoint_due)
    }

    /// Written and not synced, under `fsync` durability: to sync once the queue falls quiet.
    pub(super) fn sync_due(&self) -> bool {
        self.unsynced && self.syncs()
    }

    /// The interval checkpoint is due: write one, even with no new record to sign.
    pub(super) fn interval_due(&self) -> bool {
        self.checkpoint_due(&self.chain)
    }

    fn checkpoint_due(&self, chain: &Chain) -> bool {
        self.signer.is_some() && chain.checkpoint_due.is_some_and(|due| Instant::now() >= due)
    }

    /// Nothing to write: sync what a fire-and-forget batch left unsynced, or, while unhealthy,
    /// see whether the disk takes writes again.
    pub(super) fn idle(&mut self) -> io::Result<()> {
        if !self.meters.healthy.load(Ordering::Acquire) {
            return self.probe();
        }
        if self.sync_due() {
            self.sync()?;
        }
        Ok(())
    }

    /// Writes `batch` in order, each record under the next `seq`, with the checkpoints that fall
    /// due (every `checkpoint_every` records, at rotation, every `checkpoint_interval` whether
    /// or not records came, and, when `closing`, the one that signs the trail's last records),
    /// and syncs when
    /// `sync`. `written` hears of each run of records once it is on disk (synced, if `sync` or
    /// when rotation finishes a file under `fsync`), with their seqs: at every rotation and at
    /// the end.
    ///
    /// On failure the trail is marked unhealthy, the file is cut back to its last good length
    /// and the chain stays where it is on disk; the error comes with the number of records that
    /// `written` heard of before it.
    pub(super) fn write<R: Record>(
        &mut self,
        batch: &mut [R],
        closing: bool,
        sync: bool,
        mut written: impl FnMut(&mut [R], &[u64]),
    ) -> Result<(), (io::Error, usize)> {
        self.last_attempt = Instant::now();
        let mut done = 0;
        let mut buffers = std::mem::take(&mut self.buffers);
        let result = match self.repair_if_needed() {
            Ok(()) => self.write_batch(batch, &mut done, closing, sync, &mut buffers, &mut written),
            Err(e) => Err(e),
        };
        buffers.recycle();
        self.buffers = buffers;
        result.map_err(|error| {
            self.fail(&error);
            (error, done)
        })
    }

    fn write_batch<R: Record>(
        &mut self,
        batch: &mut [R],
        done: &mut usize,
        closing: bool,
        sync: bool,
        Buffers { buf, line, seqs }: &mut Buffers,
        written: &mut impl FnMut(&mut [R], &[u64]),
    ) -> io::Result<()> {
        let mut work = self.chain;
        let mut i = 0;
        while i < batch.len() {
            line.clear();
            let time = self.clock.next();
            let r = &batch[i];
            let hash = chain::encode(
                line,
                work.next_seq,
                time.as_str(),
                r.event(),
                r.fields(),
                work.head.as_str(),
            );
            let used = self.segment.len + buf.len() as u64;
            if used > 0 && used + line.len() as u64 + self.reserve > self.rotate_bytes {
                if work.unsigned > 0 {
                    self.add_checkpoint(&mut work, buf);
                }
                // A finished file is synced before the next one starts (fsync durability), so
                // that only the newest file can ever lose a tail.
                self.flush(buf, &work, self.syncs())?;
                written(&mut batch[*done..i], &seqs[*done..i]);
                *done = i;
                self.segment = segment::create(&self.dir, work.next_seq)?;
                continue;
            }
            buf.extend_from_slice(line);
            seqs.push(work.next_seq);
            work.next_seq += 1;
            work.head = hash;
            work.unsigned += 1;
            i += 1;
            if work.unsigned >= self.checkpoint_every {
                self.add_checkpoint(&mut work, buf);
            }
        }
        if (closing && work.unsigned > 0) || self.checkpoint_due(&work) {
            // Nothing unsigned: the file's last record is a checkpoint, and the room kept for
            // one may be spent. A checkpoint that does not fit starts the next file.
            let used = self.segment.len + buf.len() as u64;
            if work.unsigned == 0 && used > 0 && used + self.reserve > self.rotate_bytes {
                self.flush(buf, &work, self.syncs())?;
                written(&mut batch[*done..], &seqs[*done..]);
                *done = batch.len();
                self.segment = segment::create(&self.dir, work.next_seq)?;
            }
            self.add_checkpoint(&mut work, buf);
        }
        if !buf.is_empty() || sync {
            self.flush(buf, &work, sync)?;
        }
        written(&mut batch[*done..], &seqs[*done..]);
        *done = batch.len();
        Ok(())
    }

    /// Appends a signed checkpoint (when there is a key) to `buf` and advances `work` past it.
    fn add_checkpoint(&mut self, work: &mut Chain, buf: &mut Vec<u8>) {
        let Some(signer) = &self.signer else { return };
        let time = self.clock.next();
        let next_due = checkpoint::next_due(time.as_str(), self.checkpoint_interval);
        let fields = signer.fields(work.next_seq, work.head.as_str(), time.as_str(), &next_due);
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
        work.checkpoint_due = Instant::now().checked_add(self.checkpoint_interval);
    }

    /// One write and, when `sync`, one fdatasync; then `work` is the chain.
    fn flush(&mut self, buf: &mut Vec<u8>, work: &Chain, sync: bool) -> io::Result<()> {
        let meters = self.meters.clone();
        let _io = meters.io();
        if !buf.is_empty() {
            #[cfg(test)]
            super::faults::of(&self.dir).before_write(&self.segment.file, &buf[..])?;
            (&self.segment.file).write_all(buf)?;
            self.unsynced = true;
        }
        if sync && self.unsynced {
            self.sync()?;
        }
        self.segment.len += buf.len() as u64;
        buf.clear();
        let records = work.next_seq - self.chain.next_seq;
        self.chain = *work;
        self.meters.records_written.fetch_add(records, Ordering::Relaxed);
        self.mark_healthy();
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let meters = self.meters.clone();
        let _io = meters.io();
        let started = Instant::now();
        self.segment.file.sync_data()?;
        self.unsynced = false;
        self.meters.fsyncs.fetch_add(1, Ordering::Relaxed);
        let took = started.elapsed();
        self.meters
            .last_fsync_nanos
            .store(took.as_nanos() as u64, Ordering::Relaxed);
        self.meters.fsync_durations.observe(took.as_secs_f64());
        Ok(())
    }

    fn mark_healthy(&self) {
        if !self.meters.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!(file = %self.segment.path.display(), "audit trail writable again");
        }
    }

    /// A write or sync failed: unhealthy until one succeeds, and the file cut back to its
    /// durable length before anyone hears of the failure, so that no caller who got an error
    /// can still find the half-written record in the file.
    fn fail(&mut self, error: &io::Error) {
        if self.meters.healthy.swap(false, Ordering::AcqRel) {
            tracing::error!(file = %self.segment.path.display(), %error, "audit trail cannot be written; refusing requests until it can");
        }
        self.needs_repair = true;
        if let Err(error) = self.repair_if_needed() {
            tracing::error!(file = %self.segment.path.display(), %error, "cannot cut the audit file back to its last good record");
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
        super::faults::of(&self.dir).before_write(&self.segment.file, &[])?;
        result?;
        self.mark_healthy();
        Ok(())
    }
}

/// The trail's working buffers, kept from one batch to the next.
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

/// One writer per trail: two processes appending to one folder would fork the chain. An
/// advisory lock on `<dir>/.lock` refuses the second one.
fn lock_trail(dir: &Path) -> Result<std::fs::File, AuditError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(AuditError::Invalid(format!(
            "{} is locked: another caregate is writing this audit trail",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(AuditError::Io(e)),
    }
}
