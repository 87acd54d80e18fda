//! Test harness for insitu's end-to-end tests and benchmarks: a real anvil chain started
//! on a free loopback port, the contracts deployed from their committed artifacts, a
//! provider serving Flight in-process, consumers with their own keys, and sample data.
//!
//! Everything talks to 127.0.0.1 only.

pub mod anvil;
pub mod catalog;
pub mod compute;
pub mod data;
pub mod feast;
pub mod kube_fake;
pub mod postgres;
pub mod provider;
pub mod tpch;

pub use anvil::{Anvil, TEST_MNEMONIC, account};
pub use provider::{
    CONSUMER, ComputeOptions, FEE_BPS, FEE_RECEIVER, OTHER_CONSUMER, PROVIDER, Provider,
    ProviderOptions, World, collect, download, now, token_for, token_with_scope,
};

use std::path::PathBuf;

/// The workspace root (the folder holding `Cargo.toml` of the workspace).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The `insitu` binary built from this workspace, for tests that run the real CLI.
pub fn insitu_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("INSITU_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test binary> → target/<profile>/insitu
    let candidate = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("insitu"));
    match candidate {
        Some(p) if p.exists() => Ok(p),
        _ => anyhow::bail!(
            "the insitu binary was not found next to the test binary; run `cargo build -p insitu` first or set INSITU_BIN"
        ),
    }
}

/// The Python interpreter of the client-test virtualenv (`.venv`, made by the test script).
pub fn python() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("INSITU_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let p = workspace_root().join(".venv/bin/python");
    if p.exists() {
        Ok(p)
    } else {
        anyhow::bail!(
            "no Python venv at {}: run scripts/test.sh (it creates it) or set INSITU_PYTHON",
            p.display()
        )
    }
}
