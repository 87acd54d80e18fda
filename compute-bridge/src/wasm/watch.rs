//! What the epoch callback checks on every tick: cancellation, the deadline, and the
//! output directory's size and file count. WASI writes go straight to the host file
//! system, so the quota is enforced by watching: at most one tick (10 ms) of writing
//! can pass the quota before the run is stopped, and the final size is checked again
//! when the run ends. A job over its quota fails and its output is discarded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::limits::SandboxLimits;

/// Why the sandbox stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Cancelled,
    Deadline,
    OutputBytes,
    OutputFiles,
    Log,
}

/// Bytes and entries under a directory, without following links. Stops counting past
/// `max_entries`, so a guest that creates millions of files cannot make the walk slow.
pub(crate) fn usage(dir: &Path, max_entries: u64) -> (u64, u64) {
    let mut bytes = 0u64;
    let mut entries = 0u64;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in read.flatten() {
            entries += 1;
            if entries > max_entries {
                return (bytes, entries);
            }
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                bytes = bytes.saturating_add(meta.len());
            }
        }
    }
    (bytes, entries)
}

/// The checks of one run.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) out_dir: PathBuf,
    pub(crate) limits: SandboxLimits,
    pub(crate) started: Instant,
}

impl Watch {
    /// The first limit the run has broken, if any.
    pub(crate) fn check(&self, log: &super::log::BoundedLog) -> Option<Stop> {
        if self.cancel.load(Ordering::Relaxed) {
            return Some(Stop::Cancelled);
        }
        if log.overflowed() {
            return Some(Stop::Log);
        }
        if self.started.elapsed() >= self.limits.deadline {
            return Some(Stop::Deadline);
        }
        self.check_output()
    }

    pub(crate) fn check_output(&self) -> Option<Stop> {
        let (bytes, entries) = usage(&self.out_dir, self.limits.output_files);
        if entries > self.limits.output_files {
            return Some(Stop::OutputFiles);
        }
        if bytes > self.limits.output_bytes {
            return Some(Stop::OutputBytes);
        }
        None
    }

    /// The consumer-facing sentence for a stop.
    pub(crate) fn explain(&self, stop: Stop) -> String {
        let l = &self.limits;
        match stop {
            Stop::Cancelled => "cancelled".into(),
            Stop::Deadline => format!(
                "deadline exceeded: the algorithm ran longer than {} s and was stopped",
                l.deadline.as_secs_f64()
            ),
            Stop::OutputBytes => format!(
                "output quota exceeded: the algorithm wrote more than {} bytes under /out; \
                 its output was discarded",
                l.output_bytes
            ),
            Stop::OutputFiles => format!(
                "output quota exceeded: the algorithm created more than {} files under /out; \
                 its output was discarded",
                l.output_files
            ),
            Stop::Log => format!(
                "log limit exceeded: the algorithm wrote more than {} bytes to stdout and stderr",
                l.log_bytes
            ),
        }
    }
}
