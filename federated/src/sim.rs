//! Simulation: `n` participants, the coordinator and the aggregator in one process,
//! running the real protocol (real keys, signatures, sealed shares, masks), with
//! dropouts injected at any phase. Used by the exactness and privacy tests and the
//! benchmarks; a federation across providers runs the same state machines.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;

use crate::error::Result;
use crate::identity::{RecoveryCache, RoundId};
use crate::messages::MaskedInput;
use crate::participant::Participant;
use crate::rules::RoundRules;
use crate::server::Coordinator;

/// The phase at which a participant stops answering (it sends nothing from then on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropAt {
    Advertise,
    ShareKeys,
    MaskedInput,
    Consistency,
    Unmask,
}

/// One simulated round.
#[derive(Debug, Clone)]
pub struct Simulation {
    pub rules: RoundRules,
    /// Participant index → where it drops.
    pub drops: BTreeMap<usize, DropAt>,
    pub round: RoundId,
}

/// What a round produced.
#[derive(Debug, Clone)]
pub struct SimOutcome {
    /// Participants whose inputs are in the sum, by index.
    pub survivors: Vec<usize>,
    pub sum: Vec<u32>,
    /// Every masked input the aggregator received, for the privacy tests.
    pub masked: Vec<MaskedInput>,
}

impl Simulation {
    /// A round of job `job` under `rules`, with no dropouts.
    pub fn new(rules: RoundRules, job: B256) -> Self {
        Simulation {
            rules,
            drops: BTreeMap::new(),
            round: RoundId {
                job,
                round: 1,
                domain: insitu_ledger::eip712::insitu_domain(31337, Address::ZERO),
            },
        }
    }

    pub fn drop_at(mut self, participant: usize, at: DropAt) -> Self {
        self.drops.insert(participant, at);
        self
    }

    fn active(&self, i: usize, at: DropAt) -> bool {
        self.drops.get(&i).is_none_or(|d| *d > at)
    }

    /// Runs one round on `inputs` (one encoded vector per participant).
    pub fn run(&self, inputs: &[Vec<u32>]) -> Result<SimOutcome> {
        let n = inputs.len();
        let len = inputs.first().map_or(0, Vec::len);
        let cache = RecoveryCache::default();
        let signers: Vec<PrivateKeySigner> = (0..n).map(|_| PrivateKeySigner::random()).collect();
        let by_address: BTreeMap<Address, usize> = signers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.address(), i))
            .collect();
        let allowed: BTreeSet<Address> = by_address.keys().copied().collect();
        let members = Arc::new(allowed.clone());
        let mut people: Vec<Participant> = signers
            .iter()
            .map(|s| {
                Participant::new(
                    Arc::new(s.clone()),
                    s.address(),
                    self.round.clone(),
                    self.rules,
                    cache.clone(),
                )
                .with_members(members.clone())
            })
            .collect();
        let mut coordinator =
            Coordinator::new(self.round.clone(), self.rules, allowed, len, cache)?;

        let adverts = people
            .iter()
            .enumerate()
            .filter(|(i, _)| self.active(*i, DropAt::Advertise))
            .map(|(_, p)| p.advertise())
            .collect::<Result<Vec<_>>>()?;
        let roster = coordinator.collect_adverts(adverts)?;

        let mut sealed = Vec::new();
        for a in &roster {
            let i = by_address[&a.from];
            if self.active(i, DropAt::ShareKeys) {
                sealed.extend(people[i].share_keys(&roster)?);
            }
        }
        let inboxes = coordinator.route_shares(sealed)?;

        let mut masked = Vec::new();
        for (to, inbox) in &inboxes {
            let i = by_address[to];
            if self.active(i, DropAt::MaskedInput) {
                masked.push(people[i].masked_input(inbox, &inputs[i])?);
            }
        }
        let kept = masked.clone();
        let u3 = coordinator.collect_masked(masked)?;

        let mut signatures = Vec::new();
        for a in &u3 {
            let i = by_address[a];
            if self.active(i, DropAt::Consistency) {
                signatures.push(people[i].consistency(&u3)?);
            }
        }
        let signatures = coordinator.collect_signatures(signatures)?;

        let mut reveals = Vec::new();
        for s in &signatures {
            let i = by_address[&s.from];
            if self.active(i, DropAt::Unmask) {
                reveals.push(people[i].unmask(&signatures)?);
            }
        }
        let (survivors, sum) = coordinator.finish(reveals)?;
        let mut survivors: Vec<usize> = survivors.iter().map(|a| by_address[a]).collect();
        survivors.sort_unstable();
        Ok(SimOutcome {
            survivors,
            sum,
            masked: kept,
        })
    }
}
