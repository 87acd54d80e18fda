//! The server side of one round: the [`Coordinator`] runs the phases and decides who is
//! in; the [`Aggregator`] holds the running sum of masked inputs and nothing else.
//!
//! The aggregator keeps no individual vector: each masked input is added into the sum
//! and dropped as it arrives, so its memory is one model whatever the number of
//! participants. At the end it subtracts the masks the coordinator reconstructed: the
//! self-masks of the survivors and the pairwise masks between survivors and their
//! neighbours who dropped (everyone is a neighbour unless the rules carry a graph). What is left is the exact sum of the survivors' encoded updates.

use std::collections::{BTreeMap, BTreeSet};

use alloy::primitives::Address;

use crate::crypto::{self, Secret};
use crate::error::{FederatedError, Result};
use crate::graph::Graph;
use crate::identity::{self, RecoveryCache, RoundId};
use crate::messages::{KeyAdvert, MaskedInput, SealedShares, SurvivorSignature, UnmaskShares};
use crate::participant::verify_roster;
use crate::prg::{Sign, apply_mask};
use crate::rules::RoundRules;

/// The running sum of masked inputs.
#[derive(Debug)]
pub struct Aggregator {
    sum: Vec<u32>,
    contributors: BTreeSet<Address>,
}

impl Aggregator {
    pub fn new(len: usize) -> Self {
        Aggregator {
            sum: vec![0; len],
            contributors: BTreeSet::new(),
        }
    }

    /// Adds one masked input into the sum; the input is consumed.
    pub fn add(&mut self, input: MaskedInput) -> Result<()> {
        if input.vector.len() != self.sum.len() {
            return Err(FederatedError::Refused(format!(
                "{} sent {} words, not {}",
                input.from,
                input.vector.len(),
                self.sum.len()
            )));
        }
        if !self.contributors.insert(input.from) {
            return Err(FederatedError::Refused(format!(
                "{} sent a second masked input",
                input.from
            )));
        }
        for (s, x) in self.sum.iter_mut().zip(&input.vector) {
            *s = s.wrapping_add(*x);
        }
        Ok(())
    }

    /// Who contributed, in address order.
    pub fn contributors(&self) -> Vec<Address> {
        self.contributors.iter().copied().collect()
    }

    /// Removes one mask from the sum.
    fn remove(&mut self, seed: &[u8; 32], added_as: Sign) {
        let undo = match added_as {
            Sign::Add => Sign::Subtract,
            Sign::Subtract => Sign::Add,
        };
        apply_mask(&mut self.sum, seed, undo);
    }

    fn into_sum(self) -> Vec<u32> {
        self.sum
    }
}

/// Phases of a round, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Advertise,
    ShareKeys,
    MaskedInput,
    Consistency,
    Unmask,
    Done,
    Aborted,
}

/// Runs one round. Each `collect_*` closes a phase with the messages that arrived
/// before its deadline; fewer than the threshold aborts the round.
#[derive(Debug)]
pub struct Coordinator {
    id: RoundId,
    rules: RoundRules,
    allowed: BTreeSet<Address>,
    cache: RecoveryCache,
    phase: Phase,
    roster: Vec<KeyAdvert>,
    graph: Option<Graph>,
    u2: Vec<Address>,
    u3: Vec<Address>,
    signatures: Vec<SurvivorSignature>,
    aggregator: Aggregator,
}

impl Coordinator {
    /// A round for the identities in `allowed` (those holding a training agreement),
    /// summing vectors of `len` words.
    pub fn new(
        id: RoundId,
        rules: RoundRules,
        allowed: BTreeSet<Address>,
        len: usize,
        cache: RecoveryCache,
    ) -> Result<Self> {
        Ok(Coordinator {
            id,
            rules,
            allowed,
            cache,
            phase: Phase::Advertise,
            roster: Vec::new(),
            graph: None,
            u2: Vec::new(),
            u3: Vec::new(),
            signatures: Vec::new(),
            aggregator: Aggregator::new(len),
        })
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    fn expect(&mut self, phase: Phase) -> Result<()> {
        if self.phase != phase {
            return Err(FederatedError::Phase(format!(
                "expected {phase:?}, the round is at {:?}",
                self.phase
            )));
        }
        Ok(())
    }

    /// Roster index of each member.
    fn index(&self) -> BTreeMap<Address, usize> {
        self.roster
            .iter()
            .enumerate()
            .map(|(i, a)| (a.from, i))
            .collect()
    }

    fn graph(&self) -> Result<&Graph> {
        self.graph
            .as_ref()
            .ok_or_else(|| FederatedError::Phase("no roster yet".into()))
    }

    fn enough(&mut self, n: usize, what: &str) -> Result<()> {
        if n < self.rules.threshold {
            self.phase = Phase::Aborted;
            return Err(FederatedError::Aborted(format!(
                "{n} participants {what}, fewer than the threshold {}",
                self.rules.threshold
            )));
        }
        Ok(())
    }

    /// Closes round 0: the roster every participant receives.
    pub fn collect_adverts(&mut self, adverts: Vec<KeyAdvert>) -> Result<Vec<KeyAdvert>> {
        self.expect(Phase::Advertise)?;
        let mut admitted = Vec::new();
        let mut senders = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for a in adverts {
            if !self.allowed.contains(&a.from) {
                tracing::warn!(participant = %a.from, "refused: no training agreement");
                continue;
            }
            if let Err(e) = verify_roster(std::slice::from_ref(&a), &self.id, &self.cache, 0) {
                tracing::warn!(participant = %a.from, error = %e, "advert refused");
                continue;
            }
            // One advert per identity, and no key twice: a participant copying someone
            // else's key is dropped, not allowed to spoil the roster for everyone.
            if !senders.insert(a.from)
                || keys.contains(&a.encryption_key)
                || keys.contains(&a.masking_key)
            {
                tracing::warn!(participant = %a.from, "advert refused: a repeated sender or key");
                continue;
            }
            keys.insert(a.encryption_key);
            keys.insert(a.masking_key);
            admitted.push(a);
        }
        if admitted.len() > self.rules.max_participants {
            admitted.truncate(self.rules.max_participants);
        }
        self.enough(admitted.len(), "advertised valid keys")?;
        self.roster = verify_roster(&admitted, &self.id, &self.cache, self.rules.threshold)?;
        let addresses: Vec<Address> = self.roster.iter().map(|a| a.from).collect();
        self.graph = Some(Graph::new(&self.id, &addresses, &self.rules));
        self.phase = Phase::ShareKeys;
        Ok(self.roster.clone())
    }

    /// Closes round 1: each participant's inbox of sealed shares.
    pub fn route_shares(
        &mut self,
        sealed: Vec<SealedShares>,
    ) -> Result<BTreeMap<Address, Vec<SealedShares>>> {
        self.expect(Phase::ShareKeys)?;
        let index = self.index();
        let graph = self.graph()?;
        let mut by_sender: BTreeMap<Address, Vec<SealedShares>> = BTreeMap::new();
        for s in sealed {
            if index.contains_key(&s.from) && index.contains_key(&s.to) {
                by_sender.entry(s.from).or_default().push(s);
            }
        }
        // A sender counts only with shares for every neighbour: partial sharing could
        // let the coordinator pick who can unmask whom.
        by_sender.retain(|from, v| {
            let to: BTreeSet<usize> = v.iter().map(|s| index[&s.to]).collect();
            let hood = graph.hood(index[from]);
            v.len() == hood.len() && to.iter().copied().eq(hood.iter().copied())
        });
        self.enough(by_sender.len(), "shared keys")?;
        self.u2 = by_sender.keys().copied().collect();
        let mut inboxes: BTreeMap<Address, Vec<SealedShares>> = BTreeMap::new();
        for s in by_sender.into_values().flatten() {
            inboxes.entry(s.to).or_default().push(s);
        }
        // U2 is in address order (the keys of a BTreeMap).
        inboxes.retain(|to, _| self.u2.binary_search(to).is_ok());
        self.phase = Phase::MaskedInput;
        Ok(inboxes)
    }

    /// Closes round 2: the survivor set `U3`.
    pub fn collect_masked(&mut self, inputs: Vec<MaskedInput>) -> Result<Vec<Address>> {
        self.expect(Phase::MaskedInput)?;
        for input in inputs {
            if self.u2.binary_search(&input.from).is_err() {
                tracing::warn!(participant = %input.from, "a masked input from outside U2");
                continue;
            }
            let from = input.from;
            // One bad input (wrong length, a replay) is that participant's loss only.
            if let Err(e) = self.aggregator.add(input) {
                tracing::warn!(participant = %from, error = %e, "masked input refused");
            }
        }
        let u3 = self.aggregator.contributors();
        self.enough(u3.len(), "sent masked inputs")?;
        self.u3 = u3.clone();
        self.phase = Phase::Consistency;
        Ok(u3)
    }

    /// Closes round 3: the signatures every survivor checks before revealing.
    pub fn collect_signatures(
        &mut self,
        signatures: Vec<SurvivorSignature>,
    ) -> Result<Vec<SurvivorSignature>> {
        self.expect(Phase::Consistency)?;
        let digest = identity::survivors_digest(&self.id, &self.u3);
        let mut valid = Vec::new();
        let mut seen = BTreeSet::new();
        for s in signatures {
            let Ok(sig) = <[u8; 65]>::try_from(s.signature.as_slice()) else {
                continue;
            };
            match self.cache.recover(digest, &sig) {
                Ok(who)
                    if who == s.from && self.u3.binary_search(&who).is_ok() && seen.insert(who) =>
                {
                    valid.push(s)
                }
                _ => tracing::warn!(participant = %s.from, "survivor signature refused"),
            }
        }
        self.enough(valid.len(), "confirmed the survivor set")?;
        self.signatures = valid.clone();
        self.phase = Phase::Unmask;
        Ok(valid)
    }

    /// Closes round 4: reconstructs the masks and returns the exact sum of the
    /// survivors' encoded updates.
    pub fn finish(mut self, reveals: Vec<UnmaskShares>) -> Result<(Vec<Address>, Vec<u32>)> {
        self.expect(Phase::Unmask)?;
        let signed: BTreeSet<_> = self.signatures.iter().map(|s| s.from).collect();
        let index = self.index();
        let graph = self.graph()?.clone();
        let u3: BTreeSet<_> = self.u3.iter().copied().collect();
        let dropped: BTreeSet<Address> = self
            .u2
            .iter()
            .filter(|a| !u3.contains(*a))
            .copied()
            .collect();
        let mut self_mask: BTreeMap<Address, Vec<(usize, Vec<u8>)>> = BTreeMap::new();
        let mut masking: BTreeMap<Address, Vec<(usize, Vec<u8>)>> = BTreeMap::new();
        let mut responders = BTreeSet::new();
        for r in reveals {
            if !signed.contains(&r.from) || !responders.insert(r.from) {
                continue;
            }
            let Some(&holder) = index.get(&r.from) else {
                continue;
            };
            // A share's identifier is its holder's place in the owner's neighbourhood;
            // a share from outside it is ignored.
            let place = |owner: &Address| index.get(owner).and_then(|&o| graph.position(o, holder));
            // One share per (owner, holder): a repeated one would be a duplicate
            // identifier, which must not be able to abort the round.
            let mut seen = BTreeSet::new();
            for (v, share) in r.self_mask_shares {
                if let Some(p) = place(&v)
                    && u3.contains(&v)
                    && seen.insert(v)
                {
                    self_mask.entry(v).or_default().push((p, share));
                }
            }
            for (v, share) in r.masking_key_shares {
                if let Some(p) = place(&v)
                    && dropped.contains(&v)
                    && seen.insert(v)
                {
                    masking.entry(v).or_default().push((p, share));
                }
            }
        }
        self.enough(responders.len(), "revealed their shares")?;
        // Every rebuilt secret is checked against what its owner signed: the self-mask
        // against its commitment, the masking key against its public key. A wrong share
        // is outvoted when more than t arrived, and aborts the round otherwise.
        for u in &self.u3 {
            let shares = self_mask.remove(u).unwrap_or_default();
            let commitment = self.roster[index[u]].self_mask_commitment;
            let b = crypto::combine_checked(&shares, graph.threshold(), |b| {
                crypto::commitment(b) == commitment
            })
            .map_err(|e| {
                FederatedError::Aborted(format!("the self-mask of {u} cannot be rebuilt: {e}"))
            })?;
            self.aggregator.remove(&b.bytes(), Sign::Add);
        }
        for v in &dropped {
            let shares = masking.remove(v).unwrap_or_default();
            let public = self.roster[index[v]].masking_key;
            let s_v: Secret = crypto::combine_checked(&shares, graph.threshold(), |s| {
                crypto::public_of(s) == public
            })
            .map_err(|e| {
                FederatedError::Aborted(format!("the masking key of {v} cannot be rebuilt: {e}"))
            })?;
            let v_index = index[v];
            for &u_index in graph.hood(v_index) {
                if !u3.contains(&self.roster[u_index].from) {
                    continue;
                }
                let u_key = &self.roster[u_index].masking_key;
                let seed = crypto::pair_seed(&self.id, &s_v, u_key)?;
                // u added +PRG when it came first in the roster, −PRG otherwise.
                let added_as = if u_index < v_index {
                    Sign::Add
                } else {
                    Sign::Subtract
                };
                self.aggregator.remove(&seed, added_as);
            }
        }
        self.phase = Phase::Done;
        let survivors = self.u3.clone();
        Ok((survivors, self.aggregator.into_sum()))
    }
}
