//! The free-space floor: writes are refused while the data directory's file system has
//! less free space than the floor, so a full disk turns into `RESOURCE_EXHAUSTED` for
//! writers instead of a failed journal write that poisons the store.
//!
//! The floor is the larger of a fixed amount and the space a compaction may need: the
//! engine keeps compacting after writes stop, and a leveled compaction writes its output
//! before it deletes the tables it replaces. A compaction that runs out of space fails
//! the engine's background worker, which poisons the database just as a failed journal
//! write would. While the store is small a compaction can rewrite all of it (L0 into an
//! L1 of up to 256 MiB per keyspace, several keyspaces at once), so the floor is the
//! store's own size and a quarter more for what arrives meanwhile, up to `COMPACTION_HEADROOM_MAX`, which covers the largest
//! compactions of a grown store (one 64 MiB table into about ten of the next level, on
//! each of the engine's workers).

use std::path::PathBuf;

/// The most free space a compaction needs, past which the floor stops growing with the
/// store.
const COMPACTION_HEADROOM_MAX: u64 = 2 * 1024 * 1024 * 1024;

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
    /// What the file system holds stands for the store's size: on the volume of its own
    /// a replica should have it is the store (engine tables and journal alike, which the
    /// engine's own accounting sees only after flushes), and on a shared disk it errs on
    /// the safe side. A file system that cannot be asked is not taken as full: the
    /// journal write itself is the last line of defence.
    pub(crate) fn low(&self) -> Option<String> {
        if self.free_min_bytes == 0 {
            return None;
        }
        let Space { free, used } = space(&self.path)?;
        let store_bytes = used;
        // A compaction writes its output while writes still arrive: a quarter on top.
        let headroom = store_bytes.saturating_add(store_bytes / 4).min(COMPACTION_HEADROOM_MAX);
        let floor = self.free_min_bytes.max(headroom);
        (free < floor).then(|| {
            format!(
                "the data directory's disk has {} MiB free, under the floor of {} MiB (the larger of the configured floor and 1.25 times the {} MiB the disk holds, up to 2 GiB, room for compaction); writes are refused until space is freed or the volume grows",
                free / (1024 * 1024),
                floor / (1024 * 1024),
                store_bytes / (1024 * 1024)
            )
        })
    }
}

/// Space on a file system.
struct Space {
    /// Bytes an unprivileged writer may still use.
    free: u64,
    /// Bytes in use.
    used: u64,
}

fn space(path: &std::path::Path) -> Option<Space> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(Space {
        free: stat.f_bavail.saturating_mul(stat.f_frsize),
        used: stat.f_blocks.saturating_sub(stat.f_bfree).saturating_mul(stat.f_frsize),
    })
}
