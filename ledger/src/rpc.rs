//! [`RpcLedger`]: the [`Ledger`] over any EVM JSON-RPC endpoint, through alloy.

use std::time::Duration;

use alloy::contract::Error as ContractError;
use alloy::eips::BlockNumberOrTag;
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::{RpcError, TransportError};
use async_trait::async_trait;

use crate::bindings::{AgreementManager, AssetRegistry, TestToken};
use crate::did::{AgreementId, Did};
use crate::error::{LedgerError, Result};
use crate::ledger::Ledger;
use crate::retry::{Attempt, RetryPolicy, with_retries};
use crate::types::{
    Agreement, AgreementState, AgreementTerms, AssetRecord, ContractAddresses, OrderOutcome,
    RegisterAsset, ServiceOffer, TrainingJob, TxOutcome,
};

/// A [`Ledger`] on an EVM JSON-RPC endpoint (anvil, a testnet, a private chain, mainnet).
///
/// Reads are retried with backoff on transport failures and then fail closed with
/// [`LedgerError::Unavailable`]. Transactions are sent once and their receipts awaited.
#[derive(Debug, Clone)]
pub struct RpcLedger {
    provider: DynProvider,
    chain_id: u64,
    contracts: ContractAddresses,
    account: Option<Address>,
    confirmations: u64,
    from_block: u64,
    retry: RetryPolicy,
    endpoint: String,
    tx_timeout: Duration,
    send_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// Builder for [`RpcLedger`].
#[derive(Debug)]
pub struct RpcLedgerBuilder {
    url: String,
    chain_id: Option<u64>,
    contracts: Option<ContractAddresses>,
    signer: Option<PrivateKeySigner>,
    confirmations: u64,
    from_block: u64,
    retry: RetryPolicy,
    tx_timeout: Duration,
}

impl RpcLedgerBuilder {
    /// The chain id the configuration expects; `connect` refuses a node on another chain.
    pub fn with_chain_id(mut self, id: u64) -> Self {
        self.chain_id = Some(id);
        self
    }

    pub fn with_contracts(mut self, contracts: ContractAddresses) -> Self {
        self.contracts = Some(contracts);
        self
    }

    /// The account that signs this ledger's transactions. Without one the ledger is read-only.
    pub fn with_signer(mut self, signer: PrivateKeySigner) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Blocks an order needs on top of it (counting its own) before a provider trusts it.
    /// One means "included"; use more on chains that reorganise.
    pub fn with_confirmations(mut self, n: u64) -> Self {
        self.confirmations = n.max(1);
        self
    }

    /// First block to scan for agreement events (the contracts' deployment block).
    pub fn with_from_block(mut self, block: u64) -> Self {
        self.from_block = block;
        self
    }

    pub fn with_retries(mut self, attempts: u32, initial_backoff: Duration) -> Self {
        self.retry = RetryPolicy {
            attempts,
            initial_backoff,
        };
        self
    }

    /// How long to wait for a sent transaction's receipt.
    pub fn with_tx_timeout(mut self, timeout: Duration) -> Self {
        self.tx_timeout = timeout;
        self
    }

    /// Connects and checks that the node is on the expected chain.
    pub async fn connect(self) -> Result<RpcLedger> {
        let endpoint = endpoint_label(&self.url);
        let url = self.url.parse().map_err(|_| {
            LedgerError::Invalid(format!("RPC URL for {endpoint} is not a valid URL"))
        })?;
        let contracts = self
            .contracts
            .ok_or_else(|| LedgerError::Invalid("contract addresses are required".into()))?;
        let account = self.signer.as_ref().map(|s| s.address());
        // Nonces are asked of the node for every transaction rather than cached: the
        // provider key is also used by other processes (`insitu publish`, a second
        // replica), and a cached nonce goes stale the moment they send. Sends within this
        // process are serialised by `send_lock` so they cannot pick the same nonce.
        let provider = match self.signer {
            Some(signer) => ProviderBuilder::new()
                .disable_recommended_fillers()
                .with_gas_estimation()
                .with_simple_nonce_management()
                .fetch_chain_id()
                .wallet(EthereumWallet::from(signer))
                .connect_http(url)
                .erased(),
            None => ProviderBuilder::new().connect_http(url).erased(),
        };
        let retry = self.retry;
        let actual = with_retries(retry, || {
            let provider = provider.clone();
            let endpoint = endpoint.clone();
            async move {
                match provider.get_chain_id().await {
                    Ok(id) => Attempt::Done(id),
                    Err(e) => {
                        Attempt::Transient(unavailable(&endpoint, "reading the chain id", &e))
                    }
                }
            }
        })
        .await?;
        if let Some(expected) = self.chain_id
            && expected != actual
        {
            return Err(LedgerError::WrongChain { expected, actual });
        }
        Ok(RpcLedger {
            provider,
            chain_id: actual,
            contracts,
            account,
            confirmations: self.confirmations,
            from_block: self.from_block,
            retry,
            endpoint,
            tx_timeout: self.tx_timeout,
            send_lock: Default::default(),
        })
    }
}

impl RpcLedger {
    pub fn builder(url: impl Into<String>) -> RpcLedgerBuilder {
        RpcLedgerBuilder {
            url: url.into(),
            chain_id: None,
            contracts: None,
            signer: None,
            confirmations: 1,
            from_block: 0,
            retry: RetryPolicy::default(),
            tx_timeout: Duration::from_secs(120),
        }
    }

    /// The underlying alloy provider, for tests and tools that need raw RPC (e.g. anvil's
    /// `evm_increaseTime`).
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    fn registry(&self) -> AssetRegistry::AssetRegistryInstance<DynProvider> {
        AssetRegistry::new(self.contracts.registry, self.provider.clone())
    }

    fn manager(&self) -> AgreementManager::AgreementManagerInstance<DynProvider> {
        AgreementManager::new(self.contracts.agreements, self.provider.clone())
    }

    fn signer_account(&self, action: &str) -> Result<Address> {
        self.account.ok_or_else(|| {
            LedgerError::Key(format!(
                "{action} needs a signing key, and this ledger has none"
            ))
        })
    }

    /// Runs a read with retries, mapping reverts to `Reverted` and transport failures to
    /// `Unavailable`.
    async fn read<T, F, Fut>(&self, action: &str, f: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, ContractError>>,
    {
        with_retries(self.retry, || {
            let fut = f();
            async move {
                match fut.await {
                    Ok(v) => Attempt::Done(v),
                    Err(e) => classify(&self.endpoint, action, e),
                }
            }
        })
        .await
    }

    async fn read_rpc<T, F, Fut>(&self, action: &str, f: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, TransportError>>,
    {
        with_retries(self.retry, || {
            let fut = f();
            async move {
                match fut.await {
                    Ok(v) => Attempt::Done(v),
                    Err(e) => Attempt::Transient(unavailable(&self.endpoint, action, &e)),
                }
            }
        })
        .await
    }

    /// Waits for a sent transaction and turns its receipt into a [`TxOutcome`].
    async fn finish(
        &self,
        action: &str,
        pending: alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>,
    ) -> Result<(TxOutcome, TransactionReceipt)> {
        let receipt = pending
            .with_timeout(Some(self.tx_timeout))
            .get_receipt()
            .await
            .map_err(|e| LedgerError::Unavailable {
                endpoint: self.endpoint.clone(),
                action: format!("waiting for the receipt of {action}"),
                reason: redact_urls(&e.to_string()),
            })?;
        if !receipt.status() {
            return Err(LedgerError::Reverted {
                action: action.to_string(),
                reason: format!("transaction {} reverted", receipt.transaction_hash),
            });
        }
        let outcome = TxOutcome {
            hash: receipt.transaction_hash,
            gas_used: receipt.gas_used,
            block: receipt.block_number.unwrap_or_default(),
        };
        Ok((outcome, receipt))
    }

    async fn head(&self) -> Result<u64> {
        self.read_rpc("reading the block number", || {
            self.provider.get_block_number()
        })
        .await
    }
}

#[async_trait]
impl Ledger for RpcLedger {
    fn chain_id(&self) -> u64 {
        self.chain_id
    }

    fn contracts(&self) -> ContractAddresses {
        self.contracts
    }

    fn account(&self) -> Address {
        self.account.unwrap_or(Address::ZERO)
    }

    fn required_confirmations(&self) -> u64 {
        self.confirmations
    }

    async fn register_asset(&self, asset: RegisterAsset) -> Result<(Did, TxOutcome)> {
        let owner = self.signer_account("registering an asset")?;
        let services: Vec<_> = asset.services.iter().map(ServiceOffer::to_sol).collect();
        let registry = self.registry();
        let call = registry.register(
            asset.seed,
            asset.metadata_hash,
            asset.metadata_url.clone(),
            asset.providers.clone(),
            services,
        );
        let action = "registering the asset";
        let guard = self.send_lock.lock().await;
        let pending = call
            .send()
            .await
            .map_err(|e| fatal_or_unavailable(&self.endpoint, action, e))?;
        drop(guard);
        let (outcome, _) = self.finish(action, pending).await?;
        let did = Did::derive(owner, asset.seed);
        Ok((did, outcome))
    }

    async fn register_asset_for(
        &self,
        owner: Address,
        asset: RegisterAsset,
    ) -> Result<(Did, TxOutcome)> {
        self.signer_account("registering an asset for its owner")?;
        let services: Vec<_> = asset.services.iter().map(ServiceOffer::to_sol).collect();
        let registry = self.registry();
        let call = registry.registerFor(
            owner,
            asset.seed,
            asset.metadata_hash,
            asset.metadata_url.clone(),
            services,
        );
        let action = "registering the asset for its owner";
        let guard = self.send_lock.lock().await;
        let pending = call
            .send()
            .await
            .map_err(|e| fatal_or_unavailable(&self.endpoint, action, e))?;
        drop(guard);
        let (outcome, _) = self.finish(action, pending).await?;
        Ok((Did::derive(owner, asset.seed), outcome))
    }

    async fn asset(&self, did: Did) -> Result<Option<AssetRecord>> {
        let registry = self.registry();
        let owner = self
            .read("reading the asset owner", || async {
                registry.ownerOf(did.0).call().await
            })
            .await?;
        if owner == Address::ZERO {
            return Ok(None);
        }
        let a = self
            .read("reading the asset", || async {
                registry.getAsset(did.0).call().await
            })
            .await?;
        Ok(Some(AssetRecord::from_sol(did, a)?))
    }

    async fn set_metadata(&self, did: Did, metadata_hash: B256, url: String) -> Result<TxOutcome> {
        self.signer_account("updating metadata")?;
        let action = "updating the metadata hash";
        let registry = self.registry();
        let guard = self.send_lock.lock().await;
        let pending = registry
            .setMetadata(did.0, metadata_hash, url)
            .send()
            .await
            .map_err(|e| fatal_or_unavailable(&self.endpoint, action, e))?;
        drop(guard);
        Ok(self.finish(action, pending).await?.0)
    }

    async fn order(&self, did: Did, service_index: u64) -> Result<OrderOutcome> {
        let consumer = self.signer_account("ordering")?;
        let registry = self.registry();
        if registry.address() == &Address::ZERO {
            return Err(LedgerError::Invalid("registry address is zero".into()));
        }
        if self.asset(did).await?.is_none() {
            return Err(LedgerError::UnknownAsset(did));
        }
        let svc = self
            .read("reading the service terms", || async {
                registry
                    .getService(did.0, U256::from(service_index))
                    .call()
                    .await
            })
            .await
            .map_err(|e| match e {
                LedgerError::Reverted { .. } => LedgerError::UnknownService {
                    did,
                    index: service_index,
                },
                other => other,
            })?;
        let service = svc.service;
        let mut approval = None;
        let value = if service.token == Address::ZERO {
            service.price
        } else {
            if service.price > U256::ZERO {
                let token = TestToken::new(service.token, self.provider.clone());
                let allowance = self
                    .read("reading the token allowance", || async {
                        token
                            .allowance(consumer, self.contracts.agreements)
                            .call()
                            .await
                    })
                    .await?;
                if allowance < service.price {
                    let action = "approving the payment token";
                    let guard = self.send_lock.lock().await;
                    let pending = token
                        .approve(self.contracts.agreements, service.price)
                        .send()
                        .await
                        .map_err(|e| fatal_or_unavailable(&self.endpoint, action, e))?;
                    drop(guard);
                    approval = Some(self.finish(action, pending).await?.0);
                }
            }
            U256::ZERO
        };
        let action = "placing the order";
        let manager = self.manager();
        let guard = self.send_lock.lock().await;
        let pending = manager
            .order(did.0, U256::from(service_index))
            .value(value)
            .send()
            .await
            .map_err(|e| fatal_or_unavailable(&self.endpoint, action, e))?;
        drop(guard);
        let (tx, receipt) = self.finish(action, pending).await?;
        let event = receipt
            .decoded_log::<AgreementManager::Ordered>()
            .ok_or_else(|| LedgerError::Reverted {
                action: action.into(),
                reason: "the order transaction emitted no Ordered event".into(),
            })?;
        Ok(OrderOutcome {
            agreement_id: AgreementId(event.data.agreementId),
            approval,
            tx,
        })
    }

    async fn agreement(&self, id: AgreementId) -> Result<Option<Agreement>> {
        let manager = self.manager();
        let stored = self
            .read("reading the agreement", || async {
                manager.getAgreement(id.0).call().await
            })
            .await?;
        let Some(state) = AgreementState::from_code(id, stored.state)? else {
            return Ok(None);
        };
        let from_block = self.from_block;
        let logs = self
            .read("reading the order event", || async {
                manager
                    .Ordered_filter()
                    .topic1(id.0)
                    .from_block(from_block)
                    .query()
                    .await
            })
            .await?;
        // A lying or lagging node may return no event or a different one; the stored hash
        // decides which terms are real.
        let (event, log) = logs
            .into_iter()
            .find(|(ev, _)| {
                crate::types::sol_agreement_id(&ev.terms, self.contracts.agreements, self.chain_id)
                    == id.0
            })
            .ok_or_else(|| LedgerError::Unavailable {
                endpoint: self.endpoint.clone(),
                action: format!("reading the order event of agreement {id}"),
                reason: "the node returned no Ordered event matching the stored terms".into(),
            })?;
        let terms = AgreementTerms::from_sol(&event.terms)?;
        let ordered_block = log.block_number.unwrap_or_default();
        let head = self.head().await?;
        Ok(Some(Agreement {
            id,
            state,
            access_end: stored.accessEnd,
            terms,
            ordered_block,
            confirmations: head.saturating_sub(ordered_block) + 1,
        }))
    }

    async fn fulfill(&self, agreement: &Agreement) -> Result<TxOutcome> {
        self.signer_account("fulfilling")?;
        let action = format!("fulfilling agreement {}", agreement.id);
        let manager = self.manager();
        let guard = self.send_lock.lock().await;
        let pending = manager
            .fulfill(agreement.id.0, agreement.terms.to_sol())
            .send()
            .await
            .map_err(|e| fatal_or_unavailable(&self.endpoint, &action, e))?;
        drop(guard);
        Ok(self.finish(&action, pending).await?.0)
    }

    async fn refund(&self, agreement: &Agreement) -> Result<TxOutcome> {
        self.signer_account("refunding")?;
        let action = format!("refunding agreement {}", agreement.id);
        let manager = self.manager();
        let guard = self.send_lock.lock().await;
        let pending = manager
            .refund(agreement.id.0, agreement.terms.to_sol())
            .send()
            .await
            .map_err(|e| fatal_or_unavailable(&self.endpoint, &action, e))?;
        drop(guard);
        Ok(self.finish(&action, pending).await?.0)
    }

    async fn open_training(
        &self,
        job: B256,
        coordinator: Address,
        endpoint: String,
        agreements: Vec<AgreementId>,
    ) -> Result<TxOutcome> {
        self.signer_account("opening a training job")?;
        let action = "opening the training job";
        let manager = self.manager();
        let ids: Vec<B256> = agreements.iter().map(|a| a.0).collect();
        let guard = self.send_lock.lock().await;
        let pending = manager
            .openTraining(job, coordinator, endpoint, ids)
            .send()
            .await
            .map_err(|e| fatal_or_unavailable(&self.endpoint, action, e))?;
        drop(guard);
        Ok(self.finish(action, pending).await?.0)
    }

    async fn training_job(&self, job: B256) -> Result<Option<TrainingJob>> {
        let manager = self.manager();
        let j = self
            .read("reading the training job", || async {
                manager.getTrainingJob(job).call().await
            })
            .await?;
        Ok(crate::types::training_job_from(
            job,
            j.consumer,
            j.coordinator,
            j.modelDid,
            j.modelHash,
        ))
    }

    async fn training_agreements(&self, job: B256) -> Result<Vec<AgreementId>> {
        let manager = self.manager();
        let ids = self
            .read("reading the training job's agreements", || async {
                manager.trainingAgreements(job).call().await
            })
            .await?;
        Ok(ids.into_iter().map(AgreementId).collect())
    }

    async fn training_job_of(&self, agreement: AgreementId) -> Result<Option<B256>> {
        let manager = self.manager();
        let job = self
            .read("reading the agreement's training job", || async {
                manager.trainingJobOf(agreement.0).call().await
            })
            .await?;
        Ok((job != B256::ZERO).then_some(job))
    }

    async fn publish_model(&self, job: B256, model: Did, hash: B256) -> Result<TxOutcome> {
        self.signer_account("publishing a model")?;
        let action = "publishing the model";
        let manager = self.manager();
        let guard = self.send_lock.lock().await;
        let pending = manager
            .publishModel(job, model.0, hash)
            .send()
            .await
            .map_err(|e| fatal_or_unavailable(&self.endpoint, action, e))?;
        drop(guard);
        Ok(self.finish(action, pending).await?.0)
    }

    async fn is_entitled(&self, consumer: Address, did: Did, service_index: u64) -> Result<bool> {
        let manager = self.manager();
        self.read("reading the entitlement", || async {
            manager
                .isEntitled(consumer, did.0, U256::from(service_index))
                .call()
                .await
        })
        .await
    }

    async fn balance(&self, who: Address, token: Option<Address>) -> Result<U256> {
        match token {
            None => {
                self.read_rpc("reading a balance", || {
                    self.provider.get_balance(who).into_future()
                })
                .await
            }
            Some(token) => {
                let erc20 = TestToken::new(token, self.provider.clone());
                self.read("reading a token balance", || async {
                    erc20.balanceOf(who).call().await
                })
                .await
            }
        }
    }

    async fn chain_time(&self) -> Result<u64> {
        let block = self
            .read_rpc("reading the latest block", || async {
                self.provider
                    .get_block_by_number(BlockNumberOrTag::Latest)
                    .await
            })
            .await?;
        block
            .map(|b| b.header.timestamp)
            .ok_or_else(|| LedgerError::Unavailable {
                endpoint: self.endpoint.clone(),
                action: "reading the latest block".into(),
                reason: "the node returned no latest block".into(),
            })
    }
}

/// A short, secret-free name for an endpoint: scheme, host and port only. RPC URLs often
/// carry API keys in their path or query.
pub(crate) fn endpoint_label(url: &str) -> String {
    match url.parse::<reqwest_url::Url>() {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "<invalid rpc url>".into(),
    }
}

mod reqwest_url {
    pub use alloy::transports::http::reqwest::Url;
}

/// Removes anything that looks like a URL from an error text.
pub(crate) fn redact_urls(text: &str) -> String {
    text.split_inclusive(char::is_whitespace)
        .map(|word| {
            if word.contains("://") {
                let trailing: String = word
                    .chars()
                    .rev()
                    .take_while(|c| c.is_whitespace())
                    .collect();
                format!("<rpc>{trailing}")
            } else {
                word.to_string()
            }
        })
        .collect()
}

fn unavailable(endpoint: &str, action: &str, e: &dyn std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable {
        endpoint: endpoint.to_string(),
        action: action.to_string(),
        reason: redact_urls(&e.to_string()),
    }
}

/// A node's error response is an answer (usually a revert); anything else is the transport.
fn classify<T>(endpoint: &str, action: &str, e: ContractError) -> Attempt<T, LedgerError> {
    match &e {
        ContractError::TransportError(RpcError::ErrorResp(_)) => {
            Attempt::Fatal(reverted(action, &e))
        }
        ContractError::TransportError(_) => Attempt::Transient(unavailable(endpoint, action, &e)),
        _ => Attempt::Fatal(reverted(action, &e)),
    }
}

fn fatal_or_unavailable(endpoint: &str, action: &str, e: ContractError) -> LedgerError {
    match classify::<()>(endpoint, action, e) {
        Attempt::Fatal(e) | Attempt::Transient(e) => e,
        Attempt::Done(()) => LedgerError::Invalid("unreachable".into()),
    }
}

fn reverted(action: &str, e: &ContractError) -> LedgerError {
    let reason = if let Some(err) =
        e.as_decoded_interface_error::<AgreementManager::AgreementManagerErrors>()
    {
        format!("{err:?}")
    } else if let Some(err) = e.as_decoded_interface_error::<AssetRegistry::AssetRegistryErrors>() {
        format!("{err:?}")
    } else if let Some(err) = e.as_decoded_interface_error::<TestToken::TestTokenErrors>() {
        format!("{err:?}")
    } else {
        redact_urls(&e.to_string())
    };
    LedgerError::Reverted {
        action: action.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_labels_drop_paths_and_keys() {
        assert_eq!(
            endpoint_label("https://eth.example.com/v2/SECRETKEY?x=1"),
            "https://eth.example.com"
        );
        assert_eq!(
            endpoint_label("http://127.0.0.1:8545"),
            "http://127.0.0.1:8545"
        );
    }

    #[test]
    fn urls_are_redacted_from_error_text() {
        let text = "error sending request for url (https://node/KEY) boom";
        assert!(!redact_urls(text).contains("KEY"));
    }
}
