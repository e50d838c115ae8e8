//! Faults the writer's tests inject into a trail (test builds only): a write that fails half
//! way, a write held until the test lets it go, the writer thread held before it takes the
//! queue, and a count of the writes made.
//!
//! A trail is known by its folder (one writer per folder: `.lock`), so tests running side by
//! side each reach their own trail's faults and no other's, and no production struct carries a
//! field for them: the trail's I/O and the writer thread call in here, in test builds only.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Every trail's faults, by folder; made on first use.
static FAULTS: Mutex<BTreeMap<PathBuf, Arc<Faults>>> = Mutex::new(BTreeMap::new());

/// The faults of the trail in `dir`.
pub(super) fn of(dir: &Path) -> Arc<Faults> {
    let mut all = FAULTS.lock().unwrap_or_else(PoisonError::into_inner);
    all.entry(dir.to_path_buf()).or_default().clone()
}

#[derive(Default)]
pub(super) struct Faults {
    /// Held by a test to stop the writer thread between waking and taking the queue, so that a
    /// known number of records builds up behind it.
    gate: Mutex<()>,
    /// Makes every write fail after writing half its bytes, like a disk filling up mid-batch.
    pub(super) fail: AtomicBool,
    /// While true, a write waits (up to 20 s) for a test to clear it: holds a caller mid-write.
    pub(super) stall: Mutex<bool>,
    pub(super) stall_cond: Condvar,
    /// A write has reached the stall.
    pub(super) stalled: AtomicBool,
    /// Writes of records made (probes excluded).
    pub(super) writes: AtomicUsize,
}

impl Faults {
    /// The writer thread takes it before the queue; a test holds it to keep the thread out.
    pub(super) fn gate(&self) -> MutexGuard<'_, ()> {
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called before the trail writes `buf` to `file` (an empty `buf`: a probe of the disk).
    pub(super) fn before_write(&self, mut file: &File, buf: &[u8]) -> io::Result<()> {
        if !buf.is_empty() {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        let stall = self.stall.lock().unwrap_or_else(PoisonError::into_inner);
        if *stall {
            self.stalled.store(true, Ordering::SeqCst);
            let _ = self
                .stall_cond
                .wait_timeout_while(stall, Duration::from_secs(20), |s| *s);
        }
        if !self.fail.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _ = file.write_all(&buf[..buf.len() / 2]);
        Err(io::Error::other("injected write failure"))
    }
}
