//! # insitu-policy
//!
//! The one door every request goes through. The flight server (downloads and queries),
//! `DoAction`, compute and federated jobs all call [`PolicyEngine::decide`]; there is no
//! second, weaker path. A decision runs: token verification (stateless, EIP-712) →
//! entitlement from the ledger (agreement, lock, window, confirmations) → fulfilment on
//! first use → a [`Grant`] carrying what the service may do. Every decision, allow or
//! deny, is appended to the [`AuditLog`].
//!
//! Failure modes are closed: if the chain or the audit log cannot answer, the answer is
//! a denial that says why.

mod audience;
mod audit;
mod budget;
mod cache;
pub mod constraints;
mod decision;
mod engine;
mod error;
mod rules;
mod token;

pub use audience::AssetAudience;
pub use audit::{AuditLog, AuditRecord, JsonlAuditLog, MemoryAuditLog, QueryAudit};
pub use budget::{BudgetState, PrivacyBudgets};
pub use constraints::{AggregateRule, Mask, Mechanism, PrivacyRule, QueryConstraints};
pub use decision::{Action, Decision, DenyReason, Grant};
pub use engine::{PolicyEngine, PolicyEngineBuilder, PolicyStats};
pub use error::{PolicyError, Result};
pub use rules::{ProviderRules, RuleDenial, SCHEMA as RULES_SCHEMA};
pub use token::{
    AccessClaims, AccessToken, Principal, TokenVerifier, TokenVerifierBuilder, decode_token,
    encode_token, sign_access_token,
};
