//! The sandbox's stdout and stderr: one bounded buffer. Logs are a channel out of the
//! sandbox, so they are capped; a write past the cap traps the guest at once (rather
//! than truncating quietly, which would let an algorithm probe how much got through).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// The shared log of one run.
#[derive(Debug, Clone)]
pub(crate) struct BoundedLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    bytes: Mutex<Vec<u8>>,
    overflowed: AtomicBool,
}

impl BoundedLog {
    pub(crate) fn new(capacity: u64) -> Self {
        BoundedLog {
            inner: Arc::new(Inner {
                capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
                bytes: Mutex::new(Vec::new()),
                overflowed: AtomicBool::new(false),
            }),
        }
    }

    /// A copy of what was written so far.
    pub(crate) fn contents(&self) -> Vec<u8> {
        self.inner
            .bytes
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default()
    }

    pub(crate) fn len(&self) -> u64 {
        self.inner.bytes.lock().map(|b| b.len() as u64).unwrap_or(0)
    }

    /// Whether the guest tried to write past the cap.
    pub(crate) fn overflowed(&self) -> bool {
        self.inner.overflowed.load(Ordering::Relaxed)
    }

    /// Appends what fits; returns false if `data` did not fit whole.
    fn append(&self, data: &[u8]) -> bool {
        let Ok(mut buf) = self.inner.bytes.lock() else {
            return false;
        };
        let room = self.inner.capacity.saturating_sub(buf.len());
        let take = room.min(data.len());
        buf.extend_from_slice(&data[..take]);
        if take < data.len() {
            self.inner.overflowed.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn room(&self) -> usize {
        self.inner
            .bytes
            .lock()
            .map(|b| self.inner.capacity.saturating_sub(b.len()))
            .unwrap_or(0)
    }
}

fn limit_trap() -> StreamError {
    StreamError::Trap(wasmtime::Error::msg("log limit exceeded"))
}

impl IsTerminal for BoundedLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for BoundedLog {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for BoundedLog {
    async fn ready(&mut self) {}
}

impl OutputStream for BoundedLog {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        if self.append(&bytes) {
            Ok(())
        } else {
            Err(limit_trap())
        }
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        match self.room() {
            0 => {
                self.inner.overflowed.store(true, Ordering::Relaxed);
                Err(limit_trap())
            }
            n => Ok(n),
        }
    }
}

impl tokio::io::AsyncWrite for BoundedLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.append(buf) {
            Poll::Ready(Ok(buf.len()))
        } else {
            Poll::Ready(Err(io::Error::other("log limit exceeded")))
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_fits_and_flags_the_rest() {
        let mut log = BoundedLog::new(8);
        assert!(OutputStream::write(&mut log, Bytes::from_static(b"hello")).is_ok());
        assert_eq!(log.check_write().expect("room"), 3);
        assert!(OutputStream::write(&mut log, Bytes::from_static(b"world")).is_err());
        assert!(log.overflowed());
        assert_eq!(log.contents(), b"hellowor");
        assert!(log.check_write().is_err());
    }
}
