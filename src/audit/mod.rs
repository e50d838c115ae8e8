//! The audit trail (SPEC §5): record types, the writer the gateway appends through (group
//! commit, SHA-256 chain, rotation, signed checkpoints), and the readers the auditor's CLI uses
//! (verify, query, export).

pub mod export;
pub mod query;
pub mod read;
pub mod record;
pub mod verify;
mod writer;

pub use record::Event;
pub use writer::AuditLog;

/// Why a record could not be made durable.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit trail I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("audit writer has stopped")]
    Closed,
    #[error("{0}")]
    Invalid(String),
}
