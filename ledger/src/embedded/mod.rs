//! [`EmbeddedLedger`]: the same compiled contracts, executed in revm inside this process.
//!
//! This is the chain of `insitu demo` and of single-organisation deployments that want the
//! agreement model without running a node. Blocks are instant (one per transaction),
//! events are recorded, and the whole state (accounts, storage, code, events, block
//! height) is written to the data directory after every transaction, so a restart keeps
//! every asset, agreement and balance. Dev accounts are derived from a mnemonic and
//! funded at genesis.
//!
//! Transactions are not signed: the process that holds an `EmbeddedLedger` for an account
//! acts as that account. That is the trust model of an embedded chain (one operator); use
//! [`crate::RpcLedger`] where parties must not trust the operator.

mod evm;
mod state;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::sol_types::{SolCall, SolConstructor, SolEvent, SolInterface};
use async_trait::async_trait;
use revm::primitives::TxKind;

use crate::bindings::{AgreementManager, AssetRegistry, TestToken};
use crate::did::{AgreementId, Did};
use crate::error::{LedgerError, Result};
use crate::keys::{Secret, signer_from_mnemonic};
use crate::ledger::Ledger;
use crate::types::{
    Agreement, AgreementState, AgreementTerms, AssetRecord, ContractAddresses, OrderOutcome,
    RegisterAsset, ServiceOffer, TrainingJob, TxOutcome,
};

pub use state::STATE_FILE;
use state::{ChainState, StoredLog};

/// The deterministic development mnemonic (the same one anvil and Hardhat use), so the
/// embedded chain's dev accounts are the ones every Ethereum developer recognises.
pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";
/// Dev accounts funded at genesis.
pub const DEV_ACCOUNTS: u32 = 10;
/// Chain id of the embedded chain.
pub const EMBEDDED_CHAIN_ID: u64 = 31337;

fn reverted(action: &str, reason: impl Into<String>) -> LedgerError {
    LedgerError::Reverted {
        action: action.to_string(),
        reason: reason.into(),
    }
}

/// Decodes revert data into the contract's custom error, formatted like [`crate::RpcLedger`]
/// formats it, so callers see the same reasons on both ledgers.
fn revert_reason(data: &[u8]) -> String {
    if let Ok(e) = AgreementManager::AgreementManagerErrors::abi_decode(data) {
        return format!("{e:?}");
    }
    if let Ok(e) = AssetRegistry::AssetRegistryErrors::abi_decode(data) {
        return format!("{e:?}");
    }
    if let Ok(e) = TestToken::TestTokenErrors::abi_decode(data) {
        return format!("{e:?}");
    }
    format!("execution reverted (0x{})", alloy::hex::encode(data))
}

/// The shared in-process chain. Hand out one [`EmbeddedLedger`] per acting account.
#[derive(Debug)]
pub struct EmbeddedChain {
    state: Mutex<ChainState>,
    path: Option<PathBuf>,
    /// Held for the life of a writable chain: one writer per data directory, or a second
    /// process would overwrite the first one's transactions when it saves.
    _write_lock: Option<std::fs::File>,
    writable: bool,
}

/// Name of the lock file a writing process holds in the data directory.
const LOCK_FILE: &str = "embedded-chain.lock";

fn take_write_lock(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LedgerError::Invalid(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LedgerError::Invalid(format!(
            "the embedded chain in {} is in use by another process (a running `insitu serve`?); stop it first, or use an RPC chain for several processes",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(LedgerError::Invalid(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

/// What [`EmbeddedChain::open`] found or created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Genesis {
    pub contracts: ContractAddresses,
    pub test_token: Address,
    /// Whether the state was loaded from disk (false: a new chain was created).
    pub resumed: bool,
}

impl Genesis {
    fn resumed(state: &ChainState) -> Self {
        Genesis {
            contracts: state.contracts,
            test_token: state.test_token,
            resumed: true,
        }
    }
}

impl EmbeddedChain {
    /// Opens the chain persisted in `data_dir`, or creates it there: dev accounts funded,
    /// contracts and the test ERC-20 deployed. `None` keeps everything in memory.
    pub fn open(data_dir: Option<&Path>) -> Result<(Arc<Self>, Genesis)> {
        let path = data_dir.map(|d| d.join(STATE_FILE));
        if let Some(d) = data_dir {
            std::fs::create_dir_all(d).map_err(|e| {
                LedgerError::Invalid(format!("cannot create data directory {}: {e}", d.display()))
            })?;
        }
        let lock = data_dir.map(take_write_lock).transpose()?;
        if let Some(p) = &path
            && p.exists()
        {
            let state = state::load(p)?;
            let genesis = Genesis::resumed(&state);
            let chain = Arc::new(EmbeddedChain {
                state: Mutex::new(state),
                path,
                _write_lock: lock,
                writable: true,
            });
            return Ok((chain, genesis));
        }
        let mut state = ChainState::empty(EMBEDDED_CHAIN_ID);
        let phrase = Secret::new(DEV_MNEMONIC);
        let mut deployer = Address::ZERO;
        for i in 0..DEV_ACCOUNTS {
            let a = signer_from_mnemonic(&phrase, i)?.address();
            if i == 0 {
                deployer = a;
            }
            state.fund(
                a,
                U256::from(10_000u64) * U256::from(10u64).pow(U256::from(18)),
            );
        }
        let registry = state.deploy(deployer, AssetRegistry::BYTECODE.clone())?;
        let ctor = AgreementManager::constructorCall {
            registry_: registry,
            feeBps_: 0,
            feeReceiver_: Address::ZERO,
        }
        .abi_encode();
        let mut code = AgreementManager::BYTECODE.to_vec();
        code.extend_from_slice(&ctor);
        let agreements = state.deploy(deployer, Bytes::from(code))?;
        let token = state.deploy(deployer, TestToken::BYTECODE.clone())?;
        state.contracts = ContractAddresses {
            registry,
            agreements,
        };
        state.test_token = token;
        let genesis = Genesis {
            contracts: state.contracts,
            test_token: token,
            resumed: false,
        };
        let chain = Arc::new(EmbeddedChain {
            state: Mutex::new(state),
            path,
            _write_lock: lock,
            writable: true,
        });
        chain.persist()?;
        Ok((chain, genesis))
    }

    /// Opens a persisted chain to read it while another process may be writing it (the
    /// state file is replaced atomically, so a reader sees one whole state). Transactions
    /// on a read-only chain are refused.
    pub fn open_read_only(data_dir: &Path) -> Result<(Arc<Self>, Genesis)> {
        let path = data_dir.join(STATE_FILE);
        if !path.exists() {
            return Err(LedgerError::Invalid(format!(
                "no embedded chain in {} (run `insitu serve` or `insitu dev deploy --chain embedded` there first)",
                data_dir.display()
            )));
        }
        let state = state::load(&path)?;
        let genesis = Genesis::resumed(&state);
        let chain = Arc::new(EmbeddedChain {
            state: Mutex::new(state),
            path: None,
            _write_lock: None,
            writable: false,
        });
        Ok((chain, genesis))
    }

    fn check_writable(&self, action: &str) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(LedgerError::Invalid(format!(
                "{action} needs the embedded chain opened for writing; this process opened it read-only"
            )))
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, ChainState>> {
        self.state
            .lock()
            .map_err(|_| LedgerError::Invalid("embedded chain state lock poisoned".into()))
    }

    fn persist(&self) -> Result<()> {
        if let Some(p) = &self.path {
            let state = self.lock()?;
            state::save(&state, p)?;
        }
        Ok(())
    }

    /// A ledger acting as `account` on this chain.
    pub fn ledger(self: &Arc<Self>, account: Address) -> Result<EmbeddedLedger> {
        let contracts = self.lock()?.contracts;
        Ok(EmbeddedLedger {
            chain: self.clone(),
            account,
            contracts,
        })
    }

    /// The addresses of the deployed contracts.
    pub fn contracts(&self) -> Result<ContractAddresses> {
        Ok(self.lock()?.contracts)
    }

    /// Development control: moves chain time forward (for refund and expiry scenarios).
    pub fn advance_time(&self, seconds: u64) -> Result<()> {
        self.check_writable("advancing time")?;
        let mut s = self.lock()?;
        s.advance_time(seconds);
        s.mine_block();
        drop(s);
        self.persist()
    }

    /// Development control: mines `n` empty blocks.
    pub fn mine(&self, n: u64) -> Result<()> {
        self.check_writable("mining")?;
        let mut s = self.lock()?;
        for _ in 0..n {
            s.mine_block();
        }
        drop(s);
        self.persist()
    }

    /// Mints test tokens (anyone may mint the test token; the deployer sends the call).
    pub fn mint_test_token(&self, to: Address, amount: U256) -> Result<()> {
        let (token, from) = {
            let s = self.lock()?;
            (s.test_token, s.deployer())
        };
        let data = TestToken::mintCall { to, amount }.abi_encode();
        self.send(from, token, data.into(), U256::ZERO, "minting test tokens")?;
        Ok(())
    }

    /// The test ERC-20 deployed at genesis.
    pub fn test_token(&self) -> Result<Address> {
        Ok(self.lock()?.test_token)
    }

    /// Executes a transaction in a new block and persists the state.
    fn send(
        &self,
        from: Address,
        to: Address,
        data: Bytes,
        value: U256,
        action: &str,
    ) -> Result<(TxOutcome, Vec<StoredLog>)> {
        self.check_writable(action)?;
        let result = {
            let mut s = self.lock()?;
            s.transact(from, TxKind::Call(to), data, value)
        };
        let outcome = result.map_err(|e| match e {
            evm::ExecError::Reverted(data) => reverted(action, revert_reason(&data)),
            evm::ExecError::Invalid(msg) => reverted(action, msg),
        })?;
        self.persist()?;
        Ok(outcome)
    }

    /// Runs a read-only call against the latest state.
    fn view<C: SolCall>(&self, to: Address, call: C, action: &str) -> Result<C::Return> {
        let out = {
            let mut s = self.lock()?;
            s.call(to, call.abi_encode().into())
        }
        .map_err(|e| match e {
            evm::ExecError::Reverted(data) => reverted(action, revert_reason(&data)),
            evm::ExecError::Invalid(msg) => reverted(action, msg),
        })?;
        C::abi_decode_returns(&out)
            .map_err(|e| LedgerError::Invalid(format!("{action}: cannot decode the result: {e}")))
    }
}

/// A [`Ledger`] acting as one account on an [`EmbeddedChain`].
#[derive(Debug, Clone)]
pub struct EmbeddedLedger {
    chain: Arc<EmbeddedChain>,
    account: Address,
    contracts: ContractAddresses,
}

impl EmbeddedLedger {
    pub fn chain(&self) -> &Arc<EmbeddedChain> {
        &self.chain
    }

    /// Sends a call to the `AgreementManager` as this account.
    fn agreement_tx(&self, call: impl SolCall, action: &str) -> Result<TxOutcome> {
        Ok(self
            .chain
            .send(
                self.account,
                self.contracts.agreements,
                call.abi_encode().into(),
                U256::ZERO,
                action,
            )?
            .0)
    }
}

#[async_trait]
impl Ledger for EmbeddedLedger {
    fn chain_id(&self) -> u64 {
        EMBEDDED_CHAIN_ID
    }

    fn contracts(&self) -> ContractAddresses {
        self.contracts
    }

    fn account(&self) -> Address {
        self.account
    }

    fn required_confirmations(&self) -> u64 {
        1
    }

    async fn register_asset(&self, asset: RegisterAsset) -> Result<(Did, TxOutcome)> {
        let call = AssetRegistry::registerCall {
            seed: asset.seed,
            metadataHash: asset.metadata_hash,
            metadataUrl: asset.metadata_url.clone(),
            providers: asset.providers.clone(),
            services: asset.services.iter().map(ServiceOffer::to_sol).collect(),
        };
        let (tx, _) = self.chain.send(
            self.account,
            self.contracts.registry,
            call.abi_encode().into(),
            U256::ZERO,
            "registering the asset",
        )?;
        Ok((Did::derive(self.account, asset.seed), tx))
    }

    async fn register_asset_for(
        &self,
        owner: Address,
        asset: RegisterAsset,
    ) -> Result<(Did, TxOutcome)> {
        let call = AssetRegistry::registerForCall {
            owner,
            seed: asset.seed,
            metadataHash: asset.metadata_hash,
            metadataUrl: asset.metadata_url.clone(),
            services: asset.services.iter().map(ServiceOffer::to_sol).collect(),
        };
        let (tx, _) = self.chain.send(
            self.account,
            self.contracts.registry,
            call.abi_encode().into(),
            U256::ZERO,
            "registering the asset for its owner",
        )?;
        Ok((Did::derive(owner, asset.seed), tx))
    }

    async fn asset(&self, did: Did) -> Result<Option<AssetRecord>> {
        let owner = self.chain.view(
            self.contracts.registry,
            AssetRegistry::ownerOfCall { did: did.0 },
            "reading the asset owner",
        )?;
        if owner == Address::ZERO {
            return Ok(None);
        }
        let a = self.chain.view(
            self.contracts.registry,
            AssetRegistry::getAssetCall { did: did.0 },
            "reading the asset",
        )?;
        Ok(Some(AssetRecord::from_sol(did, a)?))
    }

    async fn set_metadata(&self, did: Did, metadata_hash: B256, url: String) -> Result<TxOutcome> {
        let call = AssetRegistry::setMetadataCall {
            did: did.0,
            metadataHash: metadata_hash,
            metadataUrl: url,
        };
        Ok(self
            .chain
            .send(
                self.account,
                self.contracts.registry,
                call.abi_encode().into(),
                U256::ZERO,
                "updating the metadata hash",
            )?
            .0)
    }

    async fn order(&self, did: Did, service_index: u64) -> Result<OrderOutcome> {
        if self.asset(did).await?.is_none() {
            return Err(LedgerError::UnknownAsset(did));
        }
        let svc = self
            .chain
            .view(
                self.contracts.registry,
                AssetRegistry::getServiceCall {
                    did: did.0,
                    index: U256::from(service_index),
                },
                "reading the service terms",
            )
            .map_err(|e| match e {
                LedgerError::Reverted { .. } => LedgerError::UnknownService {
                    did,
                    index: service_index,
                },
                other => other,
            })?
            .service;
        let mut approval = None;
        let value = if svc.token == Address::ZERO {
            svc.price
        } else {
            if svc.price > U256::ZERO {
                let allowance = self.chain.view(
                    svc.token,
                    TestToken::allowanceCall {
                        owner: self.account,
                        spender: self.contracts.agreements,
                    },
                    "reading the token allowance",
                )?;
                if allowance < svc.price {
                    let call = TestToken::approveCall {
                        spender: self.contracts.agreements,
                        value: svc.price,
                    };
                    approval = Some(
                        self.chain
                            .send(
                                self.account,
                                svc.token,
                                call.abi_encode().into(),
                                U256::ZERO,
                                "approving the payment token",
                            )?
                            .0,
                    );
                }
            }
            U256::ZERO
        };
        let call = AgreementManager::orderCall {
            did: did.0,
            serviceIndex: U256::from(service_index),
        };
        let (tx, logs) = self.chain.send(
            self.account,
            self.contracts.agreements,
            call.abi_encode().into(),
            value,
            "placing the order",
        )?;
        let ordered = logs
            .iter()
            .filter(|l| l.address == self.contracts.agreements)
            .find_map(|l| {
                AgreementManager::Ordered::decode_raw_log(l.topics.iter().copied(), &l.data).ok()
            })
            .ok_or_else(|| reverted("placing the order", "no Ordered event was emitted"))?;
        Ok(OrderOutcome {
            agreement_id: AgreementId(ordered.agreementId),
            approval,
            tx,
        })
    }

    async fn agreement(&self, id: AgreementId) -> Result<Option<Agreement>> {
        let stored = self.chain.view(
            self.contracts.agreements,
            AgreementManager::getAgreementCall { agreementId: id.0 },
            "reading the agreement",
        )?;
        let Some(state) = AgreementState::from_code(id, stored.state)? else {
            return Ok(None);
        };
        let (found, head) = {
            let s = self.chain.lock()?;
            let topic0 = AgreementManager::Ordered::SIGNATURE_HASH;
            let found = s
                .logs
                .iter()
                .filter(|l| {
                    l.address == self.contracts.agreements
                        && l.topics.first() == Some(&topic0)
                        && l.topics.get(1) == Some(&id.0)
                })
                .find_map(|l| {
                    AgreementManager::Ordered::decode_raw_log(l.topics.iter().copied(), &l.data)
                        .ok()
                        .filter(|ev| {
                            crate::types::sol_agreement_id(
                                &ev.terms,
                                self.contracts.agreements,
                                EMBEDDED_CHAIN_ID,
                            ) == id.0
                        })
                        .map(|ev| (ev, l.block))
                });
            (found, s.block)
        };
        let (event, block) = found.ok_or_else(|| {
            LedgerError::Invalid(format!("agreement {id} has no recorded Ordered event"))
        })?;
        Ok(Some(Agreement {
            id,
            state,
            access_end: stored.accessEnd,
            terms: AgreementTerms::from_sol(&event.terms)?,
            ordered_block: block,
            confirmations: head.saturating_sub(block) + 1,
        }))
    }

    async fn fulfill(&self, agreement: &Agreement) -> Result<TxOutcome> {
        let call = AgreementManager::fulfillCall {
            agreementId: agreement.id.0,
            t: agreement.terms.to_sol(),
        };
        self.agreement_tx(call, &format!("fulfilling agreement {}", agreement.id))
    }

    async fn refund(&self, agreement: &Agreement) -> Result<TxOutcome> {
        let call = AgreementManager::refundCall {
            agreementId: agreement.id.0,
            t: agreement.terms.to_sol(),
        };
        self.agreement_tx(call, &format!("refunding agreement {}", agreement.id))
    }

    async fn is_entitled(&self, consumer: Address, did: Did, service_index: u64) -> Result<bool> {
        self.chain.view(
            self.contracts.agreements,
            AgreementManager::isEntitledCall {
                consumer,
                did: did.0,
                serviceIndex: U256::from(service_index),
            },
            "reading the entitlement",
        )
    }

    async fn open_training(
        &self,
        job: B256,
        coordinator: Address,
        endpoint: String,
        agreements: Vec<AgreementId>,
    ) -> Result<TxOutcome> {
        let call = AgreementManager::openTrainingCall {
            jobId: job,
            coordinator,
            endpoint,
            agreementIds: agreements.iter().map(|a| a.0).collect(),
        };
        Ok(self
            .chain
            .send(
                self.account,
                self.contracts.agreements,
                call.abi_encode().into(),
                U256::ZERO,
                "opening the training job",
            )?
            .0)
    }

    async fn training_job(&self, job: B256) -> Result<Option<TrainingJob>> {
        let j = self.chain.view(
            self.contracts.agreements,
            AgreementManager::getTrainingJobCall { jobId: job },
            "reading the training job",
        )?;
        Ok(crate::types::training_job_from(
            job,
            j.consumer,
            j.coordinator,
            j.modelDid,
            j.modelHash,
        ))
    }

    async fn training_agreements(&self, job: B256) -> Result<Vec<AgreementId>> {
        let ids = self.chain.view(
            self.contracts.agreements,
            AgreementManager::trainingAgreementsCall { jobId: job },
            "reading the training job's agreements",
        )?;
        Ok(ids.into_iter().map(AgreementId).collect())
    }

    async fn training_job_of(&self, agreement: AgreementId) -> Result<Option<B256>> {
        let job = self.chain.view(
            self.contracts.agreements,
            AgreementManager::trainingJobOfCall {
                agreementId: agreement.0,
            },
            "reading the agreement's training job",
        )?;
        Ok((job != B256::ZERO).then_some(job))
    }

    async fn publish_model(&self, job: B256, model: Did, hash: B256) -> Result<TxOutcome> {
        let call = AgreementManager::publishModelCall {
            jobId: job,
            modelDid: model.0,
            modelHash: hash,
        };
        Ok(self
            .chain
            .send(
                self.account,
                self.contracts.agreements,
                call.abi_encode().into(),
                U256::ZERO,
                "publishing the model",
            )?
            .0)
    }

    async fn balance(&self, who: Address, token: Option<Address>) -> Result<U256> {
        match token {
            None => Ok(self.chain.lock()?.eth_balance(who)),
            Some(token) => self.chain.view(
                token,
                TestToken::balanceOfCall { account: who },
                "reading a token balance",
            ),
        }
    }

    async fn chain_time(&self) -> Result<u64> {
        Ok(self.chain.lock()?.now())
    }
}
