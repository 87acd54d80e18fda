//! The training jobs this provider has joined, kept on disk. A provider joins a job
//! once, ever: a coordinator that could open a second session would run a round again
//! on the same global model without one provider, and the difference of the two sums
//! would be that provider's update. Rounds and models are checked within the session;
//! this closes the way around those checks, across sessions and restarts.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

use alloy::primitives::B256;

use crate::error::{FederatedError, Result};

/// Joined jobs, one hex id per line in `<work_dir>/joined-jobs`.
#[derive(Debug)]
pub(crate) struct JoinedJobs {
    path: PathBuf,
    jobs: Mutex<BTreeSet<B256>>,
}

impl JoinedJobs {
    /// Reads the record in `dir`; a missing file is an empty record, an unreadable one
    /// an error (forgetting the jobs would reopen them).
    pub(crate) fn open(dir: &std::path::Path) -> Result<Self> {
        let path = dir.join("joined-jobs");
        let jobs = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    l.trim().parse::<B256>().map_err(|e| {
                        FederatedError::Internal(format!("the joined-jobs record is damaged: {e}"))
                    })
                })
                .collect::<Result<BTreeSet<_>>>()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => {
                return Err(FederatedError::Internal(format!(
                    "reading the joined-jobs record: {e}"
                )));
            }
        };
        Ok(JoinedJobs {
            path,
            jobs: Mutex::new(jobs),
        })
    }

    /// Records `job` as joined, or refuses if it already was. The record is on disk
    /// (written whole, then renamed into place) before this returns.
    pub(crate) fn claim(&self, job: B256) -> Result<()> {
        let mut jobs = self
            .jobs
            .lock()
            .map_err(|_| FederatedError::Internal("the joined-jobs record is poisoned".into()))?;
        if jobs.contains(&job) {
            return Err(FederatedError::Refused(format!(
                "this provider already joined training job {job}; a job is joined once"
            )));
        }
        let mut text: String = jobs.iter().map(|j| format!("{j}\n")).collect();
        text.push_str(&format!("{job}\n"));
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| FederatedError::Internal(format!("recording the joined job: {e}")))?;
        jobs.insert(job);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_joined_once_even_after_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let joined = JoinedJobs::open(dir.path()).expect("open");
        joined.claim(B256::repeat_byte(1)).expect("first");
        joined.claim(B256::repeat_byte(2)).expect("another job");
        assert!(joined.claim(B256::repeat_byte(1)).is_err());
        let again = JoinedJobs::open(dir.path()).expect("reopen");
        let err = again.claim(B256::repeat_byte(2)).expect_err("remembered");
        assert!(err.to_string().contains("joined once"), "{err}");
        std::fs::write(dir.path().join("joined-jobs"), "not a job\n").expect("write");
        assert!(
            JoinedJobs::open(dir.path()).is_err(),
            "a damaged record fails closed"
        );
    }
}
