//! STUB: replaced by the real writer (group commit, chain, rotation, checkpoints).

use super::{AuditError, Event};
use crate::config;

/// Handle to the one writer that owns the audit files. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {}

impl AuditLog {
    /// Opens (or continues) the trail in `cfg.dir` and starts the writer.
    pub fn open(_cfg: &config::Audit) -> Result<AuditLog, AuditError> {
        Ok(AuditLog {})
    }

    /// Appends `event` and resolves once it is durable (per `durability`). Returns its `seq`.
    pub async fn append_durable(&self, _event: Event) -> Result<u64, AuditError> {
        Ok(0)
    }

    /// Appends `event` without waiting (completions, TLS rejections): ordered after everything
    /// appended before it.
    pub fn append(&self, _event: Event) {}

    /// False while records cannot be written (the gateway answers 503 and is not ready).
    pub fn is_healthy(&self) -> bool {
        true
    }

    pub fn stats(&self) -> AuditStats {
        AuditStats { healthy: true, ..Default::default() }
    }

    /// Writes the final checkpoint, makes everything durable and stops the writer.
    pub async fn close(&self) -> Result<(), AuditError> {
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
pub struct AuditStats {
    pub queue_depth: u64,
    pub records_written: u64,
    pub fsyncs: u64,
    pub last_fsync_seconds: f64,
    pub healthy: bool,
}
