//! STUB: the embedded demo.
