//! The revm glue: build an EVM over the chain's in-memory database for one block and run
//! one transaction or call in it.

use alloy::primitives::{Address, Bytes, U256};
use revm::context::TxEnv;
use revm::context::result::{ExecutionResult, Output};
use revm::database::InMemoryDB;
use revm::primitives::TxKind;
use revm::{Context, ExecuteCommitEvm, ExecuteEvm, MainBuilder, MainContext};

/// Gas limit of every embedded transaction (well above what insitu's calls need).
const TX_GAS: u64 = 10_000_000;

/// Why execution produced no result.
#[derive(Debug)]
pub(crate) enum ExecError {
    /// The contract reverted with this data.
    Reverted(Bytes),
    /// The transaction was invalid or halted (out of gas, bad nonce…).
    Invalid(String),
}

/// A successful execution.
#[derive(Debug)]
pub(crate) struct Executed {
    pub output: Bytes,
    pub gas_used: u64,
    pub created: Option<Address>,
    pub logs: Vec<alloy::primitives::Log>,
}

/// The block a transaction executes in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockCtx {
    pub chain_id: u64,
    pub number: u64,
    pub timestamp: u64,
}

/// One transaction (or read-only call) to execute.
#[derive(Debug, Clone)]
pub(crate) struct Tx {
    pub caller: Address,
    /// The caller's current nonce.
    pub nonce: u64,
    pub kind: TxKind,
    pub data: Bytes,
    pub value: U256,
}

/// Runs one transaction. With `commit`, the state changes are written into `db`;
/// otherwise `db` is left as it was.
pub(crate) fn execute(
    db: &mut InMemoryDB,
    block: BlockCtx,
    t: Tx,
    commit: bool,
) -> Result<Executed, ExecError> {
    let Tx {
        caller,
        nonce,
        kind,
        data,
        value,
    } = t;
    let owned = std::mem::take(db);
    let mut evm = Context::mainnet()
        .with_db(owned)
        .modify_cfg_chained(|cfg| {
            cfg.chain_id = block.chain_id;
            cfg.tx_gas_limit_cap = Some(u64::MAX);
            // Read-only calls come from an arbitrary address whose nonce we do not track.
            cfg.disable_nonce_check = !commit;
        })
        .modify_block_chained(|b| {
            b.number = U256::from(block.number);
            b.timestamp = U256::from(block.timestamp);
            b.basefee = 0;
            b.gas_limit = 30_000_000;
        })
        .build_mainnet();
    let tx = TxEnv::builder()
        .caller(caller)
        .nonce(nonce)
        .gas_limit(TX_GAS)
        .gas_price(0)
        .chain_id(Some(block.chain_id))
        .kind(kind)
        .data(data)
        .value(value)
        .build()
        .map_err(|e| ExecError::Invalid(format!("bad transaction: {e:?}")));
    let result = match tx {
        Ok(tx) if commit => evm
            .transact_commit(tx)
            .map_err(|e| ExecError::Invalid(e.to_string())),
        Ok(tx) => evm
            .transact(tx)
            .map(|r| r.result)
            .map_err(|e| ExecError::Invalid(e.to_string())),
        Err(e) => Err(e),
    };
    *db = evm.ctx.journaled_state.database;
    let result = result?;
    let gas_used = result.tx_gas_used();
    match result {
        ExecutionResult::Success { output, logs, .. } => {
            let (bytes, created) = match output {
                Output::Call(b) => (b, None),
                Output::Create(b, addr) => (b, addr),
            };
            Ok(Executed {
                output: bytes,
                gas_used,
                created,
                logs,
            })
        }
        ExecutionResult::Revert { output, .. } => Err(ExecError::Reverted(output)),
        ExecutionResult::Halt { reason, .. } => {
            Err(ExecError::Invalid(format!("execution halted: {reason:?}")))
        }
    }
}
