//! The free-space floor: writes are refused while the data directory's file system has
//! less free space than the floor, so a full disk turns into `RESOURCE_EXHAUSTED` for
//! writers instead of a failed journal write that poisons the store.

use std::path::PathBuf;

/// Looks at the free space of the file system that holds the data directory.
pub(crate) struct DiskGuard {
    path: PathBuf,
    free_min_bytes: u64,
}

impl DiskGuard {
    pub(crate) fn new(path: PathBuf, free_min_bytes: u64) -> DiskGuard {
        DiskGuard { path, free_min_bytes }
    }

    /// A message for the caller when free space is under the floor, `None` otherwise.
    /// A file system that cannot be asked is not taken as full: the journal write
    /// itself is the last line of defence.
    pub(crate) fn low(&self) -> Option<String> {
        if self.free_min_bytes == 0 {
            return None;
        }
        let free = free_bytes(&self.path)?;
        (free < self.free_min_bytes).then(|| {
            format!(
                "the data directory's disk has {} MiB free, under the floor of {} MiB; writes are refused until space is freed or the volume grows",
                free / (1024 * 1024),
                self.free_min_bytes / (1024 * 1024)
            )
        })
    }
}

/// Bytes an unprivileged writer may still use on the file system holding `path`.
pub(crate) fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}
