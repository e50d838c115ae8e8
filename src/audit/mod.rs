//! The audit trail (SPEC §5): record types, the writer the gateway appends through (group
//! commit, SHA-256 chain, rotation, signed checkpoints), and the readers the auditor's CLI uses
//! (verify, query, export).

pub mod alerts;
mod chain;
mod checkpoint;
mod cut;
pub mod export;
pub mod index;
pub mod query;
pub mod read;
pub mod record;
pub mod refusals;
mod segment;
pub mod verify;
mod writer;

#[doc(hidden)]
pub use chain::encode_event;
pub use checkpoint::{checkpoint_message, checkpoint_message_v1, key_id, CHECKPOINT_V1, CHECKPOINT_V2};
pub use record::Event;
pub use writer::{AuditLog, AuditStats};

/// The receipt for a record made durable (`AuditLog::append_durable`). Only the audit writer
/// makes one, so holding one proves the record is on disk (or flushed, per `durability`).
#[derive(Debug)]
pub struct Durable {
    seq: u64,
}

impl Durable {
    /// The record's `seq`.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// Why a record could not be made durable.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit trail I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("audit writer has stopped")]
    Closed,
    #[error("{0}")]
    Invalid(String),
    #[error("audit signing key: {0}")]
    SigningKey(String),
    /// Refused at once so as not to wait without end or fill the disk: the queue is full, the
    /// disk is below `min_free_bytes`, or no answer came within `stall_timeout`.
    #[error("audit trail unavailable: {0}")]
    Unavailable(&'static str),
}
