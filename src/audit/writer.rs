//! The one writer that owns the audit files (SPEC §5).
//!
//! Callers serialise their event and send it over a channel to a dedicated std thread (fsync
//! blocks, so it must not sit on a runtime worker). The thread takes everything queued, gives it
//! `seq`, `time` and the chain, writes the batch with one `write` and one `fdatasync` (group
//! commit), and only then answers the batch's waiters. A failed write or sync answers every
//! waiter with an error, cuts the file back to its last good length and leaves the chain where it
//! was on disk: no caller ever sees `Ok` for a record that is not durable. Fire-and-forget
//! records of a failed batch have nobody to tell, so they are kept and go first in the next
//! attempt; the writer retries on every append and at least once a second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::chain;
use super::checkpoint::Signer;
use super::segment;
use super::{AuditError, Event};
use crate::config;

#[cfg(test)]
mod tests;
mod thread;

use thread::Writer;

/// Numbers for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AuditStats {
    /// Records sent to the writer and not yet taken into a batch.
    pub queue_depth: u64,
    /// Records (checkpoints included) written since open.
    pub records_written: u64,
    pub fsyncs: u64,
    /// Duration of the latest fsync.
    pub last_fsync_seconds: f64,
    pub healthy: bool,
}

/// Handle to the one writer that owns the audit files. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

/// State the writer thread publishes to handles.
#[derive(Default)]
struct Shared {
    healthy: AtomicBool,
    closed: AtomicBool,
    /// The final checkpoint and sync at close succeeded (answers a close() that comes late).
    closed_cleanly: AtomicBool,
    queue_depth: AtomicU64,
    records_written: AtomicU64,
    fsyncs: AtomicU64,
    last_fsync_nanos: AtomicU64,
    #[cfg(test)]
    hooks: tests::Hooks,
}

enum Msg {
    Append(Pending),
    Close(oneshot::Sender<Result<(), AuditError>>),
}

/// A record waiting for its `seq`.
struct Pending {
    event: &'static str,
    /// The event's members, serialised by the caller.
    fields: Vec<u8>,
    /// `None` for fire-and-forget appends.
    reply: Option<oneshot::Sender<Result<u64, AuditError>>>,
}

// === impl AuditLog ===

impl AuditLog {
    /// Opens (or continues) the trail in `cfg.dir` and starts the writer.
    pub fn open(cfg: &config::Audit) -> Result<AuditLog, AuditError> {
        let signer = cfg.signing_key.as_deref().map(Signer::load).transpose()?;
        AuditLog::start(cfg, signer)
    }

    fn start(cfg: &config::Audit, signer: Option<Signer>) -> Result<AuditLog, AuditError> {
        let recovered = segment::recover(&cfg.dir)?;
        let lock = lock_trail(&cfg.dir)?;
        let shared = Arc::new(Shared::default());
        shared.healthy.store(true, Ordering::Release);
        let mut writer = Writer::new(cfg, signer, recovered, shared.clone());
        // Held for as long as the writer writes; released before close() is answered.
        writer.hold_lock(lock);
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(AuditLog { tx, shared })
    }

    /// Appends `event` and resolves once it is durable (per `durability`). Returns its `seq`.
    pub async fn append_durable(&self, event: Event) -> Result<u64, AuditError> {
        let fields = chain::event_fields(&event)?;
        let (reply, done) = oneshot::channel();
        self.send(Pending {
            event: event.name(),
            fields,
            reply: Some(reply),
        })?;
        done.await.unwrap_or(Err(AuditError::Closed))
    }

    /// Appends `event` without waiting (completions, TLS rejections): ordered after everything
    /// appended before it.
    pub fn append(&self, event: Event) {
        let name = event.name();
        let sent = chain::event_fields(&event).and_then(|fields| {
            self.send(Pending {
                event: name,
                fields,
                reply: None,
            })
        });
        if let Err(error) = sent {
            tracing::error!(event = name, %error, "audit record dropped");
        }
    }

    fn send(&self, pending: Pending) -> Result<(), AuditError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(AuditError::Closed);
        }
        self.shared.queue_depth.fetch_add(1, Ordering::Relaxed);
        self.tx.send(Msg::Append(pending)).map_err(|_| {
            self.shared.queue_depth.fetch_sub(1, Ordering::Relaxed);
            AuditError::Closed
        })
    }

    /// False while records cannot be written (the gateway answers 503 and is not ready).
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> AuditStats {
        let s = &self.shared;
        AuditStats {
            queue_depth: s.queue_depth.load(Ordering::Relaxed),
            records_written: s.records_written.load(Ordering::Relaxed),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
            last_fsync_seconds: s.last_fsync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            healthy: s.healthy.load(Ordering::Acquire),
        }
    }

    /// Writes the final checkpoint, makes everything durable and stops the writer.
    pub async fn close(&self) -> Result<(), AuditError> {
        self.shared.closed.store(true, Ordering::Release);
        let (reply, done) = oneshot::channel();
        let answered = match self.tx.send(Msg::Close(reply)) {
            Ok(()) => done.await.ok(),
            Err(_) => None,
        };
        // Unanswered: the writer already stopped, after an earlier close or a crash.
        answered.unwrap_or_else(|| match self.shared.closed_cleanly.load(Ordering::Acquire) {
            true => Ok(()),
            false => Err(AuditError::Closed),
        })
    }
}

/// One writer per trail: two processes appending to one folder would fork the chain. An
/// advisory lock on `<dir>/.lock` refuses the second one.
fn lock_trail(dir: &std::path::Path) -> Result<std::fs::File, AuditError> {
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
