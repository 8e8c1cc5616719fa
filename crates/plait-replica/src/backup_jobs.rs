//! Backups run in the background (`Admin.StartBackup`, `Admin.GetBackupJob`): a caller
//! starts a job under a name of its choosing and polls it, instead of holding one call
//! open for as long as the backup takes.
//!
//! Jobs live in memory, bounded: at most [`RUNNING_MAX`] run at once, and the last
//! [`KEPT_MAX`] are remembered (the oldest finished one is forgotten first). A restart
//! forgets them all; a backup interrupted half-way never wrote its catalog entry, so the
//! caller simply starts another.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use plait_proto::pb;

use crate::error::{ReplicaError, ReplicaResult};

/// Jobs running at once.
pub(crate) const RUNNING_MAX: usize = 4;
/// Jobs remembered, running or finished.
pub(crate) const KEPT_MAX: usize = 64;
/// The longest job id.
pub(crate) const JOB_ID_BYTES_MAX: usize = 128;

/// How far a running backup has got, updated by the backup as it goes.
#[derive(Debug, Default)]
pub(crate) struct BackupProgress {
    pub(crate) logs_total: AtomicU32,
    pub(crate) logs_done: AtomicU32,
    pub(crate) bytes_written: AtomicU64,
}

/// How a job ended: what `Backup` would have answered, or the code and message it would
/// have failed with.
#[derive(Debug, Clone)]
pub(crate) enum Ending {
    Completed(pb::BackupResponse),
    Failed { code: i32, message: String },
}

/// One backup job.
#[derive(Debug)]
pub(crate) struct Job {
    id: String,
    request: pb::BackupRequest,
    started: Instant,
    pub(crate) progress: BackupProgress,
    ended: OnceLock<(Ending, Duration)>,
}

impl Job {
    /// Records how the job ended (once; a second ending is a bug).
    pub(crate) fn end(&self, ending: Ending) {
        let set = self.ended.set((ending, self.started.elapsed()));
        debug_assert!(set.is_ok(), "backup job {} ended twice", self.id);
    }

    fn running(&self) -> bool {
        self.ended.get().is_none()
    }

    /// The job as `GetBackupJob` reports it.
    pub(crate) fn report(&self) -> pb::BackupJob {
        let mut job = pb::BackupJob {
            job_id: self.id.clone(),
            state: pb::BackupJobState::Running as i32,
            logs_total: self.progress.logs_total.load(Ordering::Relaxed),
            logs_done: self.progress.logs_done.load(Ordering::Relaxed),
            bytes_written: self.progress.bytes_written.load(Ordering::Relaxed),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            ..pb::BackupJob::default()
        };
        if let Some((ending, took)) = self.ended.get() {
            job.elapsed_ms = took.as_millis() as u64;
            match ending {
                Ending::Completed(result) => {
                    job.state = pb::BackupJobState::Completed as i32;
                    job.result = Some(result.clone());
                }
                Ending::Failed { code, message } => {
                    job.state = pb::BackupJobState::Failed as i32;
                    job.error_code = *code;
                    job.error_message = message.clone();
                }
            }
        }
        job
    }
}

/// The jobs this replica knows.
#[derive(Debug, Default)]
pub(crate) struct BackupJobs {
    inner: Mutex<Jobs>,
}

#[derive(Debug, Default)]
struct Jobs {
    by_id: HashMap<String, Arc<Job>>,
    /// Ids, oldest first.
    order: VecDeque<String>,
}

/// What [`BackupJobs::admit`] decided.
#[derive(Debug)]
pub(crate) enum Admitted {
    /// A new job, to be run by the caller.
    New(Arc<Job>),
    /// The job of that id (and that request) already exists: nothing is started.
    Existing(Arc<Job>),
}

/// A job id is 1 to [`JOB_ID_BYTES_MAX`] characters of `[A-Za-z0-9._:-]`.
pub(crate) fn check_job_id(id: &str) -> ReplicaResult<()> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if id.is_empty() || id.len() > JOB_ID_BYTES_MAX || !id.chars().all(fine) {
        return Err(ReplicaError::Invalid(format!(
            "job_id must be 1 to {JOB_ID_BYTES_MAX} characters of [A-Za-z0-9._:-], got {} bytes",
            id.len()
        )));
    }
    Ok(())
}

impl BackupJobs {
    /// Admits a job: the existing one of that id, or a new one if fewer than
    /// [`RUNNING_MAX`] run (forgetting the oldest finished job when [`KEPT_MAX`] are
    /// remembered). Refuses an id taken by another request (ALREADY_EXISTS) and a job
    /// beyond the running bound (RESOURCE_EXHAUSTED), leaving nothing behind.
    pub(crate) fn admit(&self, id: &str, request: &pb::BackupRequest) -> ReplicaResult<Admitted> {
        check_job_id(id)?;
        let mut jobs = self.inner.lock().expect("backup jobs lock");
        if let Some(job) = jobs.by_id.get(id) {
            if job.request != *request {
                return Err(ReplicaError::AlreadyExists(format!(
                    "backup job {id} exists with another request; name a new job"
                )));
            }
            return Ok(Admitted::Existing(job.clone()));
        }
        let running = jobs.by_id.values().filter(|j| j.running()).count();
        if running >= RUNNING_MAX {
            return Err(ReplicaError::ResourceExhausted(format!(
                "{running} backup jobs are running, the most this replica runs at once; start this one when \
                 one has ended"
            )));
        }
        while jobs.order.len() >= KEPT_MAX {
            let Some(oldest) =
                jobs.order.iter().position(|id| jobs.by_id.get(id).is_some_and(|j| !j.running()))
            else {
                break;
            };
            let forgotten = jobs.order.remove(oldest).expect("a position in the queue");
            jobs.by_id.remove(&forgotten);
        }
        let job = Arc::new(Job {
            id: id.to_owned(),
            request: request.clone(),
            started: Instant::now(),
            progress: BackupProgress::default(),
            ended: OnceLock::new(),
        });
        jobs.by_id.insert(id.to_owned(), job.clone());
        jobs.order.push_back(id.to_owned());
        debug_assert_eq!(jobs.by_id.len(), jobs.order.len(), "every remembered job is queued once");
        debug_assert!(jobs.by_id.len() <= KEPT_MAX, "more backup jobs remembered than the bound");
        Ok(Admitted::New(job))
    }

    /// The job of that id, if this replica knows it.
    pub(crate) fn get(&self, id: &str) -> ReplicaResult<Arc<Job>> {
        check_job_id(id)?;
        self.inner.lock().expect("backup jobs lock").by_id.get(id).cloned().ok_or_else(|| {
            ReplicaError::NotFound(format!(
                "no backup job {id} on this replica (jobs are forgotten when it restarts); start it again"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(destination: &str) -> pb::BackupRequest {
        pb::BackupRequest { destination: destination.into(), ..pb::BackupRequest::default() }
    }

    /// The same id and request is the same job; the same id with another request is
    /// refused; at most RUNNING_MAX run; finished jobs make room for new ones and the
    /// oldest finished is forgotten first; bad ids are refused.
    #[test]
    fn jobs_are_named_bounded_and_forgotten_oldest_first() {
        let jobs = BackupJobs::default();
        let Admitted::New(first) = jobs.admit("a", &request("d")).unwrap() else { panic!("a new job") };
        assert!(
            matches!(jobs.admit("a", &request("d")).unwrap(), Admitted::Existing(j) if Arc::ptr_eq(&j, &first))
        );
        assert!(matches!(jobs.admit("a", &request("other")), Err(ReplicaError::AlreadyExists(_))));
        for id in ["b", "c", "d"] {
            assert!(matches!(jobs.admit(id, &request("d")).unwrap(), Admitted::New(_)));
        }
        assert!(matches!(jobs.admit("e", &request("d")), Err(ReplicaError::ResourceExhausted(_))));
        assert!(jobs.get("e").is_err(), "a refused job leaves nothing behind");
        first.end(Ending::Failed { code: 14, message: "gone".into() });
        assert_eq!(jobs.get("a").unwrap().report().state, pb::BackupJobState::Failed as i32);
        // Room again; fill up to the bound with finished jobs.
        for i in 0..KEPT_MAX {
            let Admitted::New(job) = jobs.admit(&format!("f{i}"), &request("d")).unwrap() else { panic!() };
            job.end(Ending::Completed(pb::BackupResponse::default()));
        }
        assert!(
            matches!(jobs.get("a"), Err(ReplicaError::NotFound(_))),
            "the oldest finished job is forgotten"
        );
        assert!(jobs.get("b").is_ok(), "running jobs are never forgotten");
        for bad in ["", "a/b", "a b", &"x".repeat(JOB_ID_BYTES_MAX + 1)] {
            assert!(matches!(jobs.admit(bad, &request("d")), Err(ReplicaError::Invalid(_))), "{bad:?}");
        }
    }
}
