//! One module per subcommand, plus the helpers they share.

pub mod compute;
mod compute_pod;
pub mod constraints;
pub mod demo;
mod demo_compute;
pub mod dev;
pub mod get;
pub mod init;
pub mod keys;
pub mod order;
pub mod publish;
pub mod query;
pub mod refund;
pub mod search;
pub mod serve;
pub mod status;
pub mod token;
pub mod train;
pub mod update;

use std::time::Duration;

use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result, anyhow, bail};
use std::sync::Arc;

use insitu_ledger::embedded::EmbeddedChain;
use insitu_ledger::{ContractAddresses, KeySource, Ledger, RpcLedger, load_signer};

use crate::args::{ChainArgs, KeyArgs};

/// Resolves the key source from the arguments: keystore, then mnemonic, then private key.
pub fn key_source(k: &KeyArgs) -> KeySource {
    if let Some(path) = &k.keystore {
        KeySource::Keystore {
            path: path.clone(),
            password_env: k.password_env.clone(),
        }
    } else if let Some(var) = &k.mnemonic_env {
        KeySource::MnemonicEnv {
            var: var.clone(),
            index: k.account_index,
        }
    } else {
        KeySource::PrivateKeyEnv {
            var: k.key_env.clone(),
        }
    }
}

pub fn load_key(k: &KeyArgs) -> Result<PrivateKeySigner> {
    load_signer(&key_source(k)).context("loading the signing key")
}

pub fn contracts(c: &ChainArgs) -> Result<ContractAddresses> {
    if is_embedded(c)? {
        let (_, genesis) = EmbeddedChain::open_read_only(&c.data_dir.join("chain"))?;
        return Ok(genesis.contracts);
    }
    match (c.registry, c.agreements) {
        (Some(registry), Some(agreements)) => Ok(ContractAddresses {
            registry,
            agreements,
        }),
        _ => bail!(
            "contract addresses are not set: pass --registry and --agreements (or INSITU_REGISTRY and INSITU_AGREEMENTS)"
        ),
    }
}

/// Whether `--chain` selects the embedded chain.
pub fn is_embedded(c: &ChainArgs) -> Result<bool> {
    match c.kind.as_str() {
        "embedded" => Ok(true),
        "rpc" => Ok(false),
        other => bail!("--chain must be `rpc` or `embedded`, not `{other}`"),
    }
}

/// Opens (or creates) the embedded chain in `--data-dir`.
pub fn embedded_chain(c: &ChainArgs) -> Result<Arc<EmbeddedChain>> {
    let (chain, _) = EmbeddedChain::open(Some(&c.data_dir.join("chain")))
        .with_context(|| format!("opening the embedded chain in {}", c.data_dir.display()))?;
    Ok(chain)
}

/// Connects to the chain as `signer` (or read-only).
pub async fn connect(c: &ChainArgs, signer: Option<PrivateKeySigner>) -> Result<Arc<dyn Ledger>> {
    if is_embedded(c)? {
        // Only a process that signs opens the chain for writing (and takes its lock);
        // readers see the last saved state while `insitu serve` keeps running.
        let chain = match &signer {
            Some(_) => embedded_chain(c)?,
            None => {
                EmbeddedChain::open_read_only(&c.data_dir.join("chain"))
                    .context("opening the embedded chain read-only")?
                    .0
            }
        };
        let account = signer.map(|s| s.address()).unwrap_or_default();
        return Ok(Arc::new(chain.ledger(account)?));
    }
    let mut b = RpcLedger::builder(c.rpc_url.clone())
        .with_contracts(contracts(c)?)
        .with_confirmations(c.confirmations)
        .with_from_block(c.from_block);
    if let Some(id) = c.chain_id {
        b = b.with_chain_id(id);
    }
    if let Some(s) = signer {
        b = b.with_signer(s);
    }
    Ok(Arc::new(
        b.connect().await.context("connecting to the chain")?,
    ))
}

/// Parses `3600`, `90s`, `15m`, `24h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| anyhow!("'{text}' is not a duration (examples: 3600, 90s, 15m, 24h, 7d)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("'{text}' has an unknown unit '{unit}' (use s, m, h or d)"),
    };
    if secs == 0 {
        bail!("duration '{text}' must be positive");
    }
    Ok(Duration::from_secs(secs))
}

/// Parses an amount in base units.
pub fn parse_amount(text: &str) -> Result<U256> {
    text.trim()
        .parse::<U256>()
        .map_err(|_| anyhow!("'{text}' is not an amount in base units (a whole number)"))
}

/// A one-hour bearer token of `signer` for `provider` on `ledger`'s deployment.
pub fn sign_token(
    signer: &PrivateKeySigner,
    ledger: &dyn Ledger,
    provider: alloy::primitives::Address,
    scope: String,
) -> Result<String> {
    Ok(insitu_policy::sign_access_token(
        signer,
        &insitu_policy::AccessClaims {
            provider,
            chain_id: ledger.chain_id(),
            verifying_contract: ledger.contracts().agreements,
            issued_at: unix_now(),
            lifetime: Duration::from_secs(3600),
            scope,
        },
    )?)
}

/// The provider to talk to for `did`: the one given, or the asset's only provider.
pub async fn provider_of(
    ledger: &dyn Ledger,
    did: insitu_ledger::Did,
    explicit: Option<alloy::primitives::Address>,
) -> Result<alloy::primitives::Address> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let asset = ledger
        .asset(did)
        .await?
        .with_context(|| format!("asset {did} is not registered on this chain"))?;
    match asset.providers.as_slice() {
        [only] => Ok(*only),
        [] => anyhow::bail!("asset {did} lists no provider"),
        many => anyhow::bail!(
            "asset {did} has {} providers; pick one with --provider",
            many.len()
        ),
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap checks argument names only when a command is built: this builds them all,
    /// so a clash (a flag named twice through flattened groups) fails here, not in use.
    #[test]
    fn every_command_line_is_consistent() {
        use clap::CommandFactory;
        crate::args::Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("90").expect("s").as_secs(), 90);
        assert_eq!(parse_duration("15m").expect("m").as_secs(), 900);
        assert_eq!(parse_duration("24h").expect("h").as_secs(), 86_400);
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
