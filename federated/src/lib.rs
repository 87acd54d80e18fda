//! # insitu-federated
//!
//! Federated learning across providers, with secure aggregation in the style of
//! Bonawitz et al. (2017): the aggregator learns the sum of the participants' updates
//! and nothing about any single one, even when some participants drop out.
//!
//! Layout: `ring` (updates as exact integers mod 2^32, with the sample-count weight
//! inside), `rules` and `graph` (thresholds, and who masks with whom: everyone, or a
//! sparse SecAgg+ ring), `prg` (masks from seeds, AES-CTR), `crypto` (X25519, sealed shares, Shamir),
//! `identity` (keys and survivor sets signed by chain identities, EIP-712), `messages`,
//! `participant` (the client's rounds), `server` (the coordinator's phases and the
//! aggregator's running sum), `sim` (n participants in one process, with dropouts),
//! `model` (models as Arrow, one column per tensor), `strategy` (FedAvg, FedAvgM,
//! FedAdam; robust aggregators without secure aggregation), `wire` (the `DoExchange`
//! messages), `provider` (the provider's training service) and `coordinator` (the
//! per-job coordinator and aggregator that drive providers over Flight).

pub mod coordinator;
mod crypto;
pub mod dp;
mod error;
mod graph;
mod identity;
mod ipc_guard;
mod messages;
pub mod model;
mod participant;
mod prg;
pub mod provider;
mod ring;
mod rules;
mod server;
pub mod sim;
pub mod strategy;
pub mod wire;

pub use coordinator::{
    Progress, RoundReport, Site, TrainingJob, TrainingJobBuilder, TrainingOutcome,
};
pub use crypto::MAX_PARTICIPANTS;
pub use error::{FederatedError, Result};
pub use identity::{RecoveryCache, RoundId};
pub use messages::{KeyAdvert, MaskedInput, SealedShares, SurvivorSignature, UnmaskShares};
pub use model::{Model, Tensor};
pub use participant::{Participant, verify_roster};
pub use prg::{Sign, apply_mask};
pub use provider::{TrainExchange, TrainExchangeBuilder};
pub use ring::RingCodec;
pub use rules::{MAX_SPARSE_PARTICIPANTS, Neighbours, RoundRules};
pub use server::{Aggregator, Coordinator, Phase};
pub use strategy::Strategy;
pub use wire::TRAIN_SCOPE;

#[cfg(test)]
mod tests;
