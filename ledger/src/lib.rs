//! # insitu-ledger
//!
//! The bottom of the insitu stack: everything that touches the chain. It owns the Solidity
//! contracts (`contracts/`) and their compiled artifacts, the alloy bindings generated from
//! those artifacts, and the [`Ledger`] trait through which every other crate reads and
//! writes agreements. [`RpcLedger`] speaks to any EVM JSON-RPC endpoint. Identities
//! ([`Did`], [`AgreementId`], keys) and the EIP-712 domain live here too, because the
//! policy crate must sign and verify against exactly the contracts this crate deploys.
//!
//! Nothing here decides who may access what; it only reports what the chain says, with
//! enough context (confirmations, terms, chain time) for the policy crate to decide.

pub mod bindings;
mod deploy;
mod did;
pub mod eip712;
pub mod embedded;
mod error;
mod keys;
mod ledger;
mod retry;
mod rpc;
mod types;

pub use deploy::{DeployedContracts, deploy_contracts, deploy_test_token, mint_test_token};
pub use did::{AgreementId, Did};
pub use embedded::{EmbeddedChain, EmbeddedLedger};
pub use error::{LedgerError, Result};
pub use keys::{KeySource, Secret, load_signer, signer_from_hex, signer_from_mnemonic};
pub use ledger::Ledger;
pub use rpc::{RpcLedger, RpcLedgerBuilder};
pub use types::{
    Agreement, AgreementState, AgreementTerms, AssetRecord, ContractAddresses, OrderOutcome,
    RegisterAsset, ServiceOffer, ServiceType, TrainingJob, TxOutcome,
};

/// Re-exported so downstream crates name the same primitive types as the bindings.
pub use alloy::primitives::{Address, B256, U256};
