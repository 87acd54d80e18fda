//! The provider's configuration file. Flags and `INSITU_*` variables override it.

use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use anyhow::{Context, Result};
use serde::Deserialize;

/// `insitu serve --config FILE`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub catalog: Option<String>,
    pub audit_log: Option<PathBuf>,
    #[serde(default)]
    pub chain: ChainConfig,
    #[serde(default)]
    pub key: Option<insitu_ledger::KeySource>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub storage: StorageConfig,
}

/// Object-store options for the assets' locations (credentials belong in `AWS_*`,
/// `GOOGLE_*` or `AZURE_*` environment variables, which are read as well).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

/// TLS for the Flight port: PEM files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// `rpc` or `embedded`.
    pub kind: Option<String>,
    pub rpc_url: Option<String>,
    pub chain_id: Option<u64>,
    pub registry: Option<Address>,
    pub agreements: Option<Address>,
    pub confirmations: Option<u64>,
    pub from_block: Option<u64>,
}

impl ServeConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}
