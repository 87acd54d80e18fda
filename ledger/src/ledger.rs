use alloy::primitives::{Address, U256};
use async_trait::async_trait;

use crate::did::{AgreementId, Did};
use crate::error::Result;
use crate::types::{
    Agreement, AssetRecord, ContractAddresses, OrderOutcome, RegisterAsset, TrainingJob, TxOutcome,
};

/// The chain, as insitu needs it. Every implementation acts as one account (its signer):
/// a provider's ledger fulfils, a consumer's ledger orders and refunds.
///
/// Implementations must fail closed: when the chain cannot be asked, return
/// [`crate::LedgerError::Unavailable`], never a default that could be read as a grant.
#[async_trait]
pub trait Ledger: Send + Sync + std::fmt::Debug {
    /// The chain id this ledger is bound to (checked against the chain at connect time).
    fn chain_id(&self) -> u64;
    /// The contracts this ledger talks to.
    fn contracts(&self) -> ContractAddresses;
    /// The account that signs this ledger's transactions.
    fn account(&self) -> Address;
    /// Blocks an order needs (counting its own) before it is trusted for access.
    fn required_confirmations(&self) -> u64;

    /// Registers a new asset owned by this ledger's account.
    async fn register_asset(&self, asset: RegisterAsset) -> Result<(Did, TxOutcome)>;
    /// Registers a new asset owned by `owner` and served by this ledger's account alone
    /// (`registerFor`): how a provider publishes a compute result for its consumer.
    /// `asset.providers` is ignored.
    async fn register_asset_for(
        &self,
        owner: Address,
        asset: RegisterAsset,
    ) -> Result<(Did, TxOutcome)>;
    /// Reads an asset from the registry; `None` if it was never registered.
    async fn asset(&self, did: Did) -> Result<Option<AssetRecord>>;
    /// Updates the public-metadata hash of an asset owned by this account.
    async fn set_metadata(
        &self,
        did: Did,
        metadata_hash: alloy::primitives::B256,
        url: String,
    ) -> Result<TxOutcome>;

    /// Orders a service and locks its price in escrow (approving the ERC-20 first if needed).
    async fn order(&self, did: Did, service_index: u64) -> Result<OrderOutcome>;
    /// Reads an agreement; `None` if the id is unknown on this chain.
    async fn agreement(&self, id: AgreementId) -> Result<Option<Agreement>>;
    /// Fulfils an agreement as a provider of its asset: grants access, releases escrow.
    async fn fulfill(&self, agreement: &Agreement) -> Result<TxOutcome>;
    /// Refunds an unfulfilled agreement after its timeout, as its consumer.
    async fn refund(&self, agreement: &Agreement) -> Result<TxOutcome>;
    /// Whether `consumer` holds an open access window for this service.
    async fn is_entitled(&self, consumer: Address, did: Did, service_index: u64) -> Result<bool>;

    /// Opens federated training job `job` over this account's `agreements`, publishing the
    /// coordinator's signing key and endpoint for the providers to check.
    async fn open_training(
        &self,
        job: alloy::primitives::B256,
        coordinator: Address,
        endpoint: String,
        agreements: Vec<AgreementId>,
    ) -> Result<TxOutcome>;
    /// Reads a training job; `None` if it was never opened.
    async fn training_job(&self, job: alloy::primitives::B256) -> Result<Option<TrainingJob>>;
    /// The agreements training job `job` was opened over (none if it was never opened).
    async fn training_agreements(&self, job: alloy::primitives::B256) -> Result<Vec<AgreementId>>;
    /// The training job an agreement was committed to, if any.
    async fn training_job_of(
        &self,
        agreement: AgreementId,
    ) -> Result<Option<alloy::primitives::B256>>;
    /// Records the model asset a job produced and its file's hash, as the job's consumer.
    async fn publish_model(
        &self,
        job: alloy::primitives::B256,
        model: Did,
        hash: alloy::primitives::B256,
    ) -> Result<TxOutcome>;

    /// Balance of `who` in the native currency (`token == None`) or an ERC-20.
    async fn balance(&self, who: Address, token: Option<Address>) -> Result<U256>;
    /// Timestamp of the latest block: agreement windows are measured in chain time.
    async fn chain_time(&self) -> Result<u64>;
}
