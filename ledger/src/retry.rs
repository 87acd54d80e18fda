//! Retries for RPC reads. A transient network error must not turn into a denial storm,
//! but a node that stays down must turn into a clear `Unavailable` quickly: callers fail
//! closed on it. Reverts are answers, not failures, and are never retried.

use std::future::Future;
use std::time::Duration;

/// How hard to try before declaring the chain unavailable.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub initial_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(100),
        }
    }
}

/// The outcome of one attempt, as the caller classifies it.
pub enum Attempt<T, E> {
    Done(T),
    /// Worth trying again (transport failure).
    Transient(E),
    /// Final (revert, decode error).
    Fatal(E),
}

pub async fn with_retries<T, E, F, Fut>(policy: RetryPolicy, mut f: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let mut backoff = policy.initial_backoff;
    let mut attempt = 1;
    loop {
        match f().await {
            Attempt::Done(v) => return Ok(v),
            Attempt::Fatal(e) => return Err(e),
            Attempt::Transient(e) if attempt >= policy.attempts.max(1) => return Err(e),
            Attempt::Transient(_) => {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
                attempt += 1;
            }
        }
    }
}
