//! A participant's side of one round of secure aggregation (Bonawitz et al., 2017).
//!
//! 0. **Advertise** two fresh X25519 public keys, signed by the chain identity.
//! 1. **Share**: check every advert's signature against the roster, pick a self-mask
//!    seed `b`, split `b` and the masking secret key with Shamir, and seal each
//!    neighbour's shares to it. Without a graph every member is a neighbour and the
//!    threshold is `t`; with one (SecAgg+, see `graph.rs`) the neighbourhood is
//!    `degree + 1` members with its own threshold.
//! 2. **Mask**: open the shares addressed here; the neighbours who sent them form this
//!    participant's `U2`. Add `PRG(b)` and, for every other member `v` of `U2`,
//!    `±PRG(s_uv)` (the sign by roster order, so each pair cancels in the sum).
//! 3. **Consistency**: sign the survivor set `U3` the coordinator announces, after
//!    checking it names only roster members, has at least `t` members, and names no
//!    neighbour outside this participant's `U2`.
//! 4. **Unmask**: with at least `t` valid signatures over that same `U3`, reveal the
//!    `b` shares of survivors and the masking-key shares of those who dropped: never
//!    both for one participant, which is what keeps a single update hidden.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use alloy::primitives::Address;
use alloy::signers::SignerSync;
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::{self, KeyPair, Secret};
use crate::error::{FederatedError, Result};
use crate::graph::Graph;
use crate::identity::{self, RecoveryCache, RoundId};
use crate::messages::{KeyAdvert, MaskedInput, SealedShares, SurvivorSignature, UnmaskShares};
use crate::prg::{Sign, apply_mask};
use crate::rules::RoundRules;

/// The shares one peer sent this participant.
struct Held {
    self_mask: Vec<u8>,
    masking_key: Vec<u8>,
}

/// Shares are secrets' pieces: wiped when the round's state goes, not left in freed
/// memory.
impl Drop for Held {
    fn drop(&mut self) {
        self.self_mask.zeroize();
        self.masking_key.zeroize();
    }
}

/// One participant in one round.
pub struct Participant {
    signer: Arc<dyn SignerSync + Send + Sync>,
    address: Address,
    id: RoundId,
    rules: RoundRules,
    cache: RecoveryCache,
    step: Step,
    encryption: KeyPair,
    masking: KeyPair,
    self_mask: Secret,
    members: Option<Arc<BTreeSet<Address>>>,
    config: [u8; 32],
    roster: Vec<KeyAdvert>,
    graph: Option<Graph>,
    held: BTreeMap<Address, Held>,
    u2: Vec<Address>,
    u3: Vec<Address>,
}

/// Where a participant is. Each step runs once, in order: a coordinator that asks for a
/// second masked input (with a different inbox) or a second signature (on a different
/// survivor set) could otherwise unmask a single update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Fresh,
    Shared,
    Masked,
    Confirmed,
    Revealed,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participant")
            .field("address", &self.address)
            .field("round", &self.id.round)
            .finish_non_exhaustive()
    }
}

fn sig65(bytes: &[u8], who: Address) -> Result<[u8; 65]> {
    bytes
        .try_into()
        .map_err(|_| FederatedError::Refused(format!("{who}: a signature is not 65 bytes")))
}

impl Participant {
    /// A participant signing as `signer`, for round `id`, under the job's `rules`.
    pub fn new(
        signer: Arc<dyn SignerSync + Send + Sync>,
        address: Address,
        id: RoundId,
        rules: RoundRules,
        cache: RecoveryCache,
    ) -> Self {
        Participant {
            signer,
            address,
            id,
            rules,
            cache,
            step: Step::Fresh,
            encryption: KeyPair::generate(),
            masking: KeyPair::generate(),
            self_mask: Secret::random(),
            members: None,
            config: [0; 32],
            roster: Vec::new(),
            graph: None,
            held: BTreeMap::new(),
            u2: Vec::new(),
            u3: Vec::new(),
        }
    }

    /// Admits to the roster only `members`: the providers of the job's agreements. A
    /// coordinator could otherwise fill a round with identities of its own, whose shares
    /// of this participant's secrets would unmask its update.
    pub fn with_members(mut self, members: Arc<BTreeSet<Address>>) -> Self {
        self.members = Some(members);
        self
    }

    /// The hash of this round's configuration as this participant received it (see
    /// [`KeyAdvert::config`]); every roster member must carry the same.
    pub fn with_config(mut self, config: [u8; 32]) -> Self {
        self.config = config;
        self
    }

    /// Moves from `from` to the next step, or refuses: every step runs once, in order.
    fn advance(&mut self, from: Step, to: Step) -> Result<()> {
        if self.step != from {
            return Err(FederatedError::Phase(format!(
                "asked for {to:?} while at {:?}: each step runs once, in order",
                self.step
            )));
        }
        self.step = to;
        Ok(())
    }

    pub fn address(&self) -> Address {
        self.address
    }

    /// Round 0.
    pub fn advertise(&self) -> Result<KeyAdvert> {
        let mut advert = KeyAdvert {
            from: self.address,
            encryption_key: self.encryption.public,
            masking_key: self.masking.public,
            self_mask_commitment: crypto::commitment(&self.self_mask),
            config: self.config,
            signature: Vec::new(),
        };
        advert.signature = identity::sign_keys(self.signer.as_ref(), &self.id, &advert)?.to_vec();
        Ok(advert)
    }

    /// Round 1: checks the roster and seals shares for every neighbour (itself included).
    pub fn share_keys(&mut self, roster: &[KeyAdvert]) -> Result<Vec<SealedShares>> {
        self.advance(Step::Fresh, Step::Shared)?;
        if roster.len() > self.rules.max_participants {
            return Err(FederatedError::Refused(format!(
                "a roster of {}, more than the job's {} participants",
                roster.len(),
                self.rules.max_participants
            )));
        }
        if let Some(members) = &self.members
            && let Some(stranger) = roster.iter().find(|a| !members.contains(&a.from))
        {
            return Err(FederatedError::Refused(format!(
                "the roster names {}, who provides none of the job's agreements",
                stranger.from
            )));
        }
        let roster = verify_roster(roster, &self.id, &self.cache, self.rules.threshold)?;
        if let Some(other) = roster.iter().find(|a| a.config != self.config) {
            return Err(FederatedError::Refused(format!(
                "{} was given another model, codec or rules for this round",
                other.from
            )));
        }
        let me = roster
            .iter()
            .position(|a| a.from == self.address)
            .ok_or_else(|| {
                FederatedError::Refused("this participant is not on the roster".into())
            })?;
        if roster[me].encryption_key != self.encryption.public
            || roster[me].masking_key != self.masking.public
        {
            return Err(FederatedError::Refused(
                "the roster carries other keys for this participant".into(),
            ));
        }
        let addresses: Vec<Address> = roster.iter().map(|a| a.from).collect();
        let graph = Graph::new(&self.id, &addresses, &self.rules);
        let hood = graph.hood(me);
        let b_shares = Zeroizing::new(crypto::split(
            &self.self_mask,
            graph.threshold(),
            hood.len(),
        )?);
        let s_shares = Zeroizing::new(crypto::split(
            &self.masking.secret,
            graph.threshold(),
            hood.len(),
        )?);
        let mut out = Vec::with_capacity(hood.len());
        for (i, &member) in hood.iter().enumerate() {
            let peer = &roster[member];
            let key = crypto::kdf(
                "insitu/secagg/shares",
                &self.id,
                &*crypto::dh(&self.encryption.secret, &peer.encryption_key)?,
                self.address,
                peer.from,
            );
            // The two shares, back to back (identifier byte, then 32 bytes, each).
            let plain = Zeroizing::new([b_shares[i].as_slice(), s_shares[i].as_slice()].concat());
            out.push(SealedShares {
                from: self.address,
                to: peer.from,
                ciphertext: crypto::seal(&key, &plain)?,
            });
        }
        self.roster = roster;
        self.graph = Some(graph);
        Ok(out)
    }

    /// Round 2: opens the shares sent here and masks `encoded` (see [`crate::RingCodec`]).
    pub fn masked_input(&mut self, inbox: &[SealedShares], encoded: &[u32]) -> Result<MaskedInput> {
        self.advance(Step::Shared, Step::Masked)?;
        let me = self.index(self.address)?;
        let (hood, hood_threshold) = {
            let graph = self.graph()?;
            (graph.hood(me).to_vec(), graph.threshold())
        };
        let mut held = BTreeMap::new();
        for sealed in inbox {
            if sealed.to != self.address {
                return Err(FederatedError::Refused(format!(
                    "shares from {} are addressed to {}",
                    sealed.from, sealed.to
                )));
            }
            if hood.binary_search(&self.index(sealed.from)?).is_err() {
                return Err(FederatedError::Refused(format!(
                    "shares from {}, who is not a neighbour",
                    sealed.from
                )));
            }
            let peer = self.member(sealed.from)?;
            let key = crypto::kdf(
                "insitu/secagg/shares",
                &self.id,
                &*crypto::dh(&self.encryption.secret, &peer.encryption_key)?,
                sealed.from,
                self.address,
            );
            let plain = Zeroizing::new(crypto::open(&key, &sealed.ciphertext).map_err(|_| {
                FederatedError::Refused(format!("shares from {} do not open", sealed.from))
            })?);
            if plain.len() != 2 * crypto::SHARE_BYTES {
                return Err(FederatedError::Refused(format!(
                    "shares from {} are malformed",
                    sealed.from
                )));
            }
            let (self_mask, masking_key) = plain.split_at(crypto::SHARE_BYTES);
            let (self_mask, masking_key) = (self_mask.to_vec(), masking_key.to_vec());
            if held
                .insert(
                    sealed.from,
                    Held {
                        self_mask,
                        masking_key,
                    },
                )
                .is_some()
            {
                return Err(FederatedError::Refused(format!(
                    "{} sent shares twice",
                    sealed.from
                )));
            }
        }
        if !held.contains_key(&self.address) {
            return Err(FederatedError::Refused(
                "the coordinator withheld this participant's own shares".into(),
            ));
        }
        // Fewer would leave this participant's self-mask beyond rebuilding.
        if held.len() < hood_threshold {
            return Err(FederatedError::Aborted(format!(
                "{} neighbours shared keys, fewer than the threshold {hood_threshold}",
                held.len(),
            )));
        }
        self.u2 = self
            .roster
            .iter()
            .map(|a| a.from)
            .filter(|a| held.contains_key(a))
            .collect();
        self.held = held;

        let mut vector = encoded.to_vec();
        apply_mask(&mut vector, &self.self_mask.bytes(), Sign::Add);
        for v in &self.u2 {
            if *v == self.address {
                continue;
            }
            let peer = self.member(*v)?;
            let seed = crypto::pair_seed(&self.id, &self.masking.secret, &peer.masking_key)?;
            let sign = if me < self.index(*v)? {
                Sign::Add
            } else {
                Sign::Subtract
            };
            apply_mask(&mut vector, &seed, sign);
        }
        Ok(MaskedInput {
            from: self.address,
            vector,
        })
    }

    /// Round 3: signs the announced survivor set after checking it.
    pub fn consistency(&mut self, u3: &[Address]) -> Result<SurvivorSignature> {
        // Refusing does not use up the step; signing does: one set is ever signed.
        if self.step != Step::Masked {
            return Err(FederatedError::Phase(format!(
                "asked for a survivor signature while at {:?}: each step runs once, in order",
                self.step
            )));
        }
        let u2: BTreeSet<_> = self.u2.iter().collect();
        let me = self.index(self.address)?;
        let graph = self.graph()?;
        for a in u3 {
            let i = self.index(*a)?;
            if graph.position(me, i).is_some() && !u2.contains(a) {
                return Err(FederatedError::Refused(
                    "the survivor set names a neighbour who did not share keys".into(),
                ));
            }
        }
        let near = u3.iter().filter(|a| self.u2.contains(a)).count();
        if near < graph.threshold() {
            return Err(FederatedError::Aborted(format!(
                "{near} neighbours survived, fewer than the threshold {}",
                graph.threshold()
            )));
        }
        let distinct: BTreeSet<_> = u3.iter().collect();
        if distinct.len() != u3.len() {
            return Err(FederatedError::Refused(
                "the survivor set repeats a member".into(),
            ));
        }
        if u3.len() < self.rules.threshold {
            return Err(FederatedError::Aborted(format!(
                "{} survivors, fewer than the threshold {}",
                u3.len(),
                self.rules.threshold
            )));
        }
        if !u3.contains(&self.address) {
            return Err(FederatedError::Refused(
                "the survivor set leaves out this participant, whose input was sent".into(),
            ));
        }
        self.advance(Step::Masked, Step::Confirmed)?;
        let signature = identity::sign_survivors(self.signer.as_ref(), &self.id, u3)?;
        self.u3 = u3.to_vec();
        Ok(SurvivorSignature {
            from: self.address,
            signature: signature.to_vec(),
        })
    }

    /// Round 4: reveals shares once at least `t` survivors signed the same set.
    pub fn unmask(&mut self, signatures: &[SurvivorSignature]) -> Result<UnmaskShares> {
        self.advance(Step::Confirmed, Step::Revealed)?;
        let u3 = self.u3.clone();
        let digest = identity::survivors_digest(&self.id, &u3);
        let members: BTreeSet<_> = u3.iter().copied().collect();
        let mut signed = BTreeSet::new();
        for s in signatures {
            let sig = sig65(&s.signature, s.from)?;
            let who = self.cache.recover(digest, &sig)?;
            if who != s.from {
                return Err(FederatedError::Refused(format!(
                    "a survivor signature claims {} but was made by {who}",
                    s.from
                )));
            }
            if !members.contains(&who) {
                return Err(FederatedError::Refused(format!(
                    "{who} signed the survivor set without being in it"
                )));
            }
            signed.insert(who);
        }
        if signed.len() < self.rules.threshold {
            return Err(FederatedError::Aborted(format!(
                "{} survivors confirmed the set, fewer than the threshold {}",
                signed.len(),
                self.rules.threshold
            )));
        }
        let mut self_mask_shares = Vec::new();
        let mut masking_key_shares = Vec::new();
        for v in &self.u2 {
            let Some(h) = self.held.get(v) else { continue };
            if members.contains(v) {
                self_mask_shares.push((*v, h.self_mask.clone()));
            } else {
                masking_key_shares.push((*v, h.masking_key.clone()));
            }
        }
        Ok(UnmaskShares {
            from: self.address,
            self_mask_shares,
            masking_key_shares,
        })
    }

    fn graph(&self) -> Result<&Graph> {
        self.graph
            .as_ref()
            .ok_or_else(|| FederatedError::Phase("no roster has been shared yet".into()))
    }

    fn member(&self, who: Address) -> Result<&KeyAdvert> {
        Ok(&self.roster[self.index(who)?])
    }

    /// `who`'s place in the roster, which [`verify_roster`] sorted by address.
    fn index(&self, who: Address) -> Result<usize> {
        self.roster
            .binary_search_by_key(&who, |a| a.from)
            .map_err(|_| FederatedError::Refused(format!("{who} is not on the roster")))
    }
}

/// Checks a roster: each advert signed by its sender for this round, no sender twice,
/// no key reused, sorted by address, at least `t` members. Returns it sorted.
pub fn verify_roster(
    roster: &[KeyAdvert],
    id: &RoundId,
    cache: &RecoveryCache,
    threshold: usize,
) -> Result<Vec<KeyAdvert>> {
    let mut seen = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for a in roster {
        let sig = sig65(&a.signature, a.from)?;
        let who = cache.recover(identity::keys_digest(id, a), &sig)?;
        if who != a.from {
            return Err(FederatedError::Refused(format!(
                "the keys advertised for {} were signed by {who}",
                a.from
            )));
        }
        if !seen.insert(a.from) {
            return Err(FederatedError::Refused(format!(
                "{} advertised twice",
                a.from
            )));
        }
        if !keys.insert(a.encryption_key) || !keys.insert(a.masking_key) {
            return Err(FederatedError::Refused(format!("{} reuses a key", a.from)));
        }
    }
    if roster.len() < threshold {
        return Err(FederatedError::Aborted(format!(
            "{} participants advertised keys, fewer than the threshold {threshold}",
            roster.len()
        )));
    }
    let mut sorted = roster.to_vec();
    sorted.sort_by_key(|a| a.from);
    Ok(sorted)
}
