//! What one sandboxed run may use. The defaults suit an algorithm that summarises or
//! trains on a staged asset on the provider's own machine; a provider raises them per
//! deployment, never per request (a consumer cannot ask for more).

use std::time::Duration;

/// Resource limits of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Wall time from the algorithm's start; the run is interrupted when it passes.
    pub deadline: Duration,
    /// Linear memory the module may grow to, in bytes.
    pub memory_bytes: u64,
    /// Bytes the job may write under `/out`, all files together.
    pub output_bytes: u64,
    /// Files (and directories) the job may create under `/out`.
    pub output_files: u64,
    /// Bytes of stdout and stderr kept, together. Writing more fails the job: logs are
    /// a channel out of the sandbox, so an unbounded one would be a leak.
    pub log_bytes: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            deadline: Duration::from_secs(300),
            memory_bytes: 512 << 20,
            output_bytes: 256 << 20,
            output_files: 64,
            log_bytes: 1 << 20,
        }
    }
}

impl SandboxLimits {
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn with_memory_bytes(mut self, bytes: u64) -> Self {
        self.memory_bytes = bytes;
        self
    }

    pub fn with_output_bytes(mut self, bytes: u64) -> Self {
        self.output_bytes = bytes;
        self
    }

    pub fn with_output_files(mut self, files: u64) -> Self {
        self.output_files = files;
        self
    }

    pub fn with_log_bytes(mut self, bytes: u64) -> Self {
        self.log_bytes = bytes;
        self
    }
}
