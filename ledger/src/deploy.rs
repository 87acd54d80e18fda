//! Deployment helpers for tests, benchmarks and development chains. Production
//! deployments use the same functions from `insitu dev deploy`, once per chain.

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};

use crate::bindings::{AgreementManager, AssetRegistry, TestToken};
use crate::error::{LedgerError, Result};
use crate::rpc::{endpoint_label, redact_urls};
use crate::types::ContractAddresses;

/// What [`deploy_contracts`] deployed, and the block to scan events from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployedContracts {
    pub chain_id: u64,
    pub addresses: ContractAddresses,
    pub deploy_block: u64,
}

fn deploy_error(url: &str, what: &str, e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable {
        endpoint: endpoint_label(url),
        action: format!("deploying {what}"),
        reason: redact_urls(&e.to_string()),
    }
}

/// An HTTP provider that signs with `signer`.
fn signing_provider(rpc_url: &str, signer: PrivateKeySigner) -> Result<impl Provider + Clone> {
    let url = rpc_url
        .parse()
        .map_err(|_| LedgerError::Invalid("RPC URL is not a valid URL".into()))?;
    Ok(ProviderBuilder::new()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url))
}

/// Deploys `AssetRegistry` and `AgreementManager` (with a marketplace fee of `fee_bps`
/// basis points paid to `fee_receiver`, or none) from `deployer`.
pub async fn deploy_contracts(
    rpc_url: &str,
    deployer: PrivateKeySigner,
    fee_bps: u16,
    fee_receiver: Option<Address>,
) -> Result<DeployedContracts> {
    let provider = signing_provider(rpc_url, deployer)?;
    let chain_id = provider
        .get_chain_id()
        .await
        .map_err(|e| deploy_error(rpc_url, "contracts", e))?;
    let registry = AssetRegistry::deploy(&provider)
        .await
        .map_err(|e| deploy_error(rpc_url, "AssetRegistry", e))?;
    let manager = AgreementManager::deploy(
        &provider,
        *registry.address(),
        fee_bps,
        fee_receiver.unwrap_or(Address::ZERO),
    )
    .await
    .map_err(|e| deploy_error(rpc_url, "AgreementManager", e))?;
    let deploy_block = provider
        .get_block_number()
        .await
        .map_err(|e| deploy_error(rpc_url, "contracts", e))?;
    Ok(DeployedContracts {
        chain_id,
        addresses: ContractAddresses {
            registry: *registry.address(),
            agreements: *manager.address(),
        },
        deploy_block: deploy_block.saturating_sub(2),
    })
}

/// Deploys the test ERC-20.
pub async fn deploy_test_token(rpc_url: &str, deployer: PrivateKeySigner) -> Result<Address> {
    let provider = signing_provider(rpc_url, deployer)?;
    let token = TestToken::deploy(&provider)
        .await
        .map_err(|e| deploy_error(rpc_url, "TestToken", e))?;
    Ok(*token.address())
}

/// Mints test tokens to `to`, signed by `minter` (anyone may mint the test token).
pub async fn mint_test_token(
    rpc_url: &str,
    minter: PrivateKeySigner,
    token: Address,
    to: Address,
    amount: U256,
) -> Result<()> {
    let provider = signing_provider(rpc_url, minter)?;
    TestToken::new(token, &provider)
        .mint(to, amount)
        .send()
        .await
        .map_err(|e| deploy_error(rpc_url, "a test-token mint", e))?
        .get_receipt()
        .await
        .map_err(|e| deploy_error(rpc_url, "a test-token mint", e))?;
    Ok(())
}
