//! STUB: development PKI.
