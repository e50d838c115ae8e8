//! `audit.min_free_bytes`: the free space of the trail's file system, looked at no more than
//! once a second (one `statvfs`), by whichever append or readiness check comes first after the
//! second is up; in between, the last answer stands.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long an answer stands.
const EVERY: Duration = Duration::from_secs(1);

pub(super) struct Space {
    dir: PathBuf,
    min_free: u64,
    epoch: Instant,
    /// When it was last looked at: milliseconds since `epoch`.
    checked: AtomicU64,
    low: AtomicBool,
}

impl Space {
    /// Looks once now. `min_free` 0 never looks.
    pub(super) fn new(dir: &Path, min_free: u64) -> Space {
        let space = Space {
            dir: dir.to_path_buf(),
            min_free,
            epoch: Instant::now(),
            checked: AtomicU64::default(),
            low: AtomicBool::default(),
        };
        space.look();
        space
    }

    /// True while the file system has less than `min_free` bytes available.
    pub(super) fn low(&self) -> bool {
        if self.min_free == 0 {
            return false;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.checked.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= EVERY.as_millis() as u64
            && self
                .checked
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.look();
        }
        self.low.load(Ordering::Relaxed)
    }

    fn look(&self) {
        if self.min_free == 0 {
            return;
        }
        let low = match available(&self.dir) {
            Ok(free) => free < self.min_free,
            // Not knowing is no reason to refuse: the writes themselves will say.
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot read the audit file system's free space");
                false
            }
        };
        let was = self.low.swap(low, Ordering::Relaxed);
        if low && !was {
            tracing::error!(dir = %self.dir.display(), min_free_bytes = self.min_free, "the audit file system is below audit.min_free_bytes: refusing requests until space is freed");
        } else if was && !low {
            tracing::info!(dir = %self.dir.display(), "the audit file system has room again");
        }
    }
}

/// Bytes available to this (unprivileged) process on the file system holding `dir`.
pub(super) fn available(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL in the path"))?;
    // SAFETY: `path` is a valid C string and `stat` a plain struct that statvfs fills in.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; both pointers outlive the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_and_compared() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(available(tmp.path()).unwrap() > 0);
        assert!(Space::new(tmp.path(), u64::MAX).low());
        assert!(!Space::new(tmp.path(), 1).low());
        assert!(!Space::new(tmp.path(), 0).low());
    }
}
