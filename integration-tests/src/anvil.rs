//! A real anvil node (from the npm package `@foundry-rs/anvil`, installed by `npm ci` in
//! `ledger/contracts`) on a free loopback port, killed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result, bail};
use insitu_ledger::{Secret, signer_from_mnemonic};

/// anvil's default mnemonic; its accounts are funded with 10,000 ETH each.
pub const TEST_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// Account `index` of the test mnemonic.
pub fn account(index: u32) -> PrivateKeySigner {
    #[allow(clippy::expect_used)]
    signer_from_mnemonic(&Secret::new(TEST_MNEMONIC), index).expect("the test mnemonic derives")
}

/// A running anvil.
#[derive(Debug)]
pub struct Anvil {
    child: Option<Child>,
    pub port: u16,
}

fn anvil_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("INSITU_ANVIL") {
        return Ok(PathBuf::from(p));
    }
    // Use the platform package's binary, not the `.bin/anvil` node wrapper: killing the
    // wrapper would leave the real node running (and the chain "up" in outage tests).
    let modules = crate::workspace_root().join("ledger/contracts/node_modules/@foundry-rs");
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let p = modules.join(format!("anvil-linux-{arch}/bin/anvil"));
    if p.exists() {
        Ok(p)
    } else {
        bail!(
            "anvil not found at {}: run `npm ci` in ledger/contracts (scripts/test.sh does) or set INSITU_ANVIL",
            p.display()
        )
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Anvil {
    /// Starts anvil with automatic mining and waits until it answers.
    pub async fn start() -> Result<Self> {
        let bin = anvil_binary()?;
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port()?;
            let child = Command::new(&bin)
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--silent",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            let mut anvil = Anvil {
                child: Some(child),
                port,
            };
            match anvil.wait_ready(Duration::from_secs(30)).await {
                Ok(()) => return Ok(anvil),
                Err(e) => {
                    anvil.kill();
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("anvil did not start")))
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("anvil exited early with {status}");
            }
            if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let req = format!(
                    "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                if stream.write_all(req.as_bytes()).await.is_ok() {
                    let mut buf = Vec::new();
                    let _ = stream.read_to_end(&mut buf).await;
                    if String::from_utf8_lossy(&buf).contains("\"result\"") {
                        return Ok(());
                    }
                }
            }
            if start.elapsed() > limit {
                bail!(
                    "anvil did not answer on port {} within {limit:?}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the node (to simulate an RPC outage).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        self.kill();
    }
}
