//! The embedded chain's state and its persistence.
//!
//! The file is one JSON document: block height and time, the contracts, every account
//! (balance, nonce, code, non-zero storage) and every event. It is written to a temporary
//! file and renamed over the old one, so a crash leaves either the old or the new state,
//! never half of one.

use std::collections::BTreeMap;
use std::path::Path;

use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use revm::DatabaseRef;
use revm::database::{AccountState, InMemoryDB};
use revm::primitives::TxKind;
use revm::state::{AccountInfo, Bytecode};
use serde::{Deserialize, Serialize};

use super::evm::{BlockCtx, ExecError, Executed, Tx, execute};
use crate::error::{LedgerError, Result};
use crate::types::{ContractAddresses, TxOutcome};

/// File name of the persisted state inside the data directory.
pub const STATE_FILE: &str = "embedded-chain.json";
const FORMAT_VERSION: u32 = 1;

/// An event as recorded by the embedded chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredLog {
    pub block: u64,
    pub tx: B256,
    pub address: Address,
    pub topics: Vec<B256>,
    pub data: Bytes,
}

fn no_code(code: &Bytes) -> bool {
    code.is_empty()
}

#[derive(Debug, Serialize, Deserialize)]
struct AccountDump {
    balance: U256,
    nonce: u64,
    #[serde(default, skip_serializing_if = "no_code")]
    code: Bytes,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    storage: BTreeMap<U256, U256>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Dump {
    version: u32,
    chain_id: u64,
    block: u64,
    timestamp: u64,
    time_offset: u64,
    contracts: ContractAddresses,
    test_token: Address,
    deployer: Address,
    accounts: BTreeMap<Address, AccountDump>,
    logs: Vec<StoredLog>,
}

/// Everything the embedded chain knows.
#[derive(Debug)]
pub(crate) struct ChainState {
    pub chain_id: u64,
    pub db: InMemoryDB,
    /// Height of the latest block.
    pub block: u64,
    /// Timestamp of the latest block.
    pub timestamp: u64,
    /// Development time travel, added to the wall clock.
    pub time_offset: u64,
    pub contracts: ContractAddresses,
    pub test_token: Address,
    deployer: Address,
    pub logs: Vec<StoredLog>,
}

fn wall_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ChainState {
    pub fn empty(chain_id: u64) -> Self {
        ChainState {
            chain_id,
            db: InMemoryDB::default(),
            block: 0,
            timestamp: wall_clock(),
            time_offset: 0,
            contracts: ContractAddresses {
                registry: Address::ZERO,
                agreements: Address::ZERO,
            },
            test_token: Address::ZERO,
            deployer: Address::ZERO,
            logs: Vec::new(),
        }
    }

    pub fn deployer(&self) -> Address {
        self.deployer
    }

    /// The time the next block would carry: chain time never goes backwards.
    pub fn now(&self) -> u64 {
        (wall_clock() + self.time_offset).max(self.timestamp)
    }

    /// Moves chain time `seconds` past its current value. Blocks mined within one wall
    /// second each add a second, so chain time can run ahead of the wall clock; the
    /// offset is taken from chain time, not from the wall clock, to move it exactly.
    pub fn advance_time(&mut self, seconds: u64) {
        let target = self.now().saturating_add(seconds);
        self.time_offset = target.saturating_sub(wall_clock());
    }

    pub fn mine_block(&mut self) -> BlockCtx {
        self.block += 1;
        self.timestamp = self.now().max(self.timestamp + 1);
        BlockCtx {
            chain_id: self.chain_id,
            number: self.block,
            timestamp: self.timestamp,
        }
    }

    pub fn fund(&mut self, who: Address, amount: U256) {
        let mut info = self.db.basic_ref(who).ok().flatten().unwrap_or_default();
        info.balance = amount;
        self.db.insert_account_info(who, info);
    }

    pub fn eth_balance(&self, who: Address) -> U256 {
        self.db
            .basic_ref(who)
            .ok()
            .flatten()
            .map(|i| i.balance)
            .unwrap_or_default()
    }

    fn nonce(&self, who: Address) -> u64 {
        self.db
            .basic_ref(who)
            .ok()
            .flatten()
            .map(|i| i.nonce)
            .unwrap_or_default()
    }

    /// Deploys creation code from `from` at genesis.
    pub fn deploy(&mut self, from: Address, code: Bytes) -> Result<Address> {
        if self.deployer == Address::ZERO {
            self.deployer = from;
        }
        let block = self.mine_block();
        let nonce = self.nonce(from);
        let tx = Tx {
            caller: from,
            nonce,
            kind: TxKind::Create,
            data: code,
            value: U256::ZERO,
        };
        let done = execute(&mut self.db, block, tx, true)
            .map_err(|e| LedgerError::Invalid(format!("genesis deployment failed: {e:?}")))?;
        done.created
            .ok_or_else(|| LedgerError::Invalid("genesis deployment created no contract".into()))
    }

    /// Executes a transaction in a new block, recording its events.
    pub fn transact(
        &mut self,
        from: Address,
        kind: TxKind,
        data: Bytes,
        value: U256,
    ) -> std::result::Result<(TxOutcome, Vec<StoredLog>), ExecError> {
        let nonce = self.nonce(from);
        let hash = keccak256(
            [
                self.chain_id.to_be_bytes().as_slice(),
                from.as_slice(),
                nonce.to_be_bytes().as_slice(),
                data.as_ref(),
            ]
            .concat(),
        );
        let block = self.mine_block();
        let tx = Tx {
            caller: from,
            nonce,
            kind,
            data,
            value,
        };
        let Executed { gas_used, logs, .. } = execute(&mut self.db, block, tx, true)?;
        let stored: Vec<StoredLog> = logs
            .into_iter()
            .map(|l| StoredLog {
                block: block.number,
                tx: hash,
                address: l.address,
                topics: l.data.topics().to_vec(),
                data: l.data.data.clone(),
            })
            .collect();
        self.logs.extend(stored.iter().cloned());
        Ok((
            TxOutcome {
                hash,
                gas_used,
                block: block.number,
            },
            stored,
        ))
    }

    /// A read-only call at the current chain time; changes nothing.
    pub fn call(&mut self, to: Address, data: Bytes) -> std::result::Result<Bytes, ExecError> {
        let block = BlockCtx {
            chain_id: self.chain_id,
            number: self.block + 1,
            timestamp: self.now(),
        };
        let tx = Tx {
            caller: Address::ZERO,
            nonce: 0,
            kind: TxKind::Call(to),
            data,
            value: U256::ZERO,
        };
        execute(&mut self.db, block, tx, false).map(|e| e.output)
    }
}

pub(crate) fn save(state: &ChainState, path: &Path) -> Result<()> {
    let mut accounts = BTreeMap::new();
    for (addr, acct) in state.db.cache.accounts.iter() {
        if acct.account_state == AccountState::NotExisting {
            continue;
        }
        let code = acct
            .info
            .code
            .clone()
            .or_else(|| state.db.cache.contracts.get(&acct.info.code_hash).cloned())
            .map(|c| c.original_bytes())
            .unwrap_or_default();
        let storage = acct
            .storage
            .iter()
            .filter(|(_, v)| !v.is_zero())
            .map(|(k, v)| (*k, *v))
            .collect();
        accounts.insert(
            *addr,
            AccountDump {
                balance: acct.info.balance,
                nonce: acct.info.nonce,
                code,
                storage,
            },
        );
    }
    let dump = Dump {
        version: FORMAT_VERSION,
        chain_id: state.chain_id,
        block: state.block,
        timestamp: state.timestamp,
        time_offset: state.time_offset,
        contracts: state.contracts,
        test_token: state.test_token,
        deployer: state.deployer,
        accounts,
        logs: state.logs.clone(),
    };
    let json = serde_json::to_vec(&dump)
        .map_err(|e| LedgerError::Invalid(format!("cannot encode the chain state: {e}")))?;
    let tmp = path.with_extension("json.tmp");
    let io = |e: std::io::Error| {
        LedgerError::Invalid(format!(
            "cannot write the chain state to {}: {e}",
            path.display()
        ))
    };
    std::fs::write(&tmp, json).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

pub(crate) fn load(path: &Path) -> Result<ChainState> {
    let bytes = std::fs::read(path).map_err(|e| {
        LedgerError::Invalid(format!(
            "cannot read the chain state {}: {e}",
            path.display()
        ))
    })?;
    let dump: Dump = serde_json::from_slice(&bytes).map_err(|e| {
        LedgerError::Invalid(format!(
            "the chain state {} is corrupt: {e}",
            path.display()
        ))
    })?;
    if dump.version != FORMAT_VERSION {
        return Err(LedgerError::Invalid(format!(
            "the chain state {} has format {}, this build reads {FORMAT_VERSION}",
            path.display(),
            dump.version
        )));
    }
    let mut db = InMemoryDB::default();
    for (addr, a) in dump.accounts {
        let mut info = AccountInfo {
            balance: a.balance,
            nonce: a.nonce,
            ..Default::default()
        };
        if !a.code.is_empty() {
            info = info.with_code(Bytecode::new_raw(a.code));
        }
        db.insert_account_info(addr, info);
        for (slot, value) in a.storage {
            db.insert_account_storage(addr, slot, value)
                .map_err(|e| LedgerError::Invalid(format!("cannot restore storage: {e:?}")))?;
        }
    }
    Ok(ChainState {
        chain_id: dump.chain_id,
        db,
        block: dump.block,
        timestamp: dump.timestamp,
        time_offset: dump.time_offset,
        contracts: dump.contracts,
        test_token: dump.test_token,
        deployer: dump.deployer,
        logs: dump.logs,
    })
}
