//! What participants, the coordinator and the aggregator send each other, in protocol
//! order. Signatures are 65-byte secp256k1 signatures by the sender's chain identity.

use alloy::primitives::Address;
use serde::{Deserialize, Serialize};

/// Round 0: a participant's two X25519 public keys, signed by its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAdvert {
    pub from: Address,
    /// Encrypts the shares sent to this participant.
    pub encryption_key: [u8; 32],
    /// Agrees this participant's pairwise mask seeds.
    pub masking_key: [u8; 32],
    /// A hash of the self-mask seed, so the seed rebuilt from shares can be checked.
    pub self_mask_commitment: [u8; 32],
    /// A hash of what this participant was told the round is (its global model, codec,
    /// rules and DP settings). Every participant refuses a roster whose members were
    /// told something else: a coordinator that gave the others a codec that flattens
    /// their updates could otherwise read one participant's update off the sum.
    pub config: [u8; 32],
    pub signature: Vec<u8>,
}

/// Round 1: one participant's Shamir shares for another, sealed to the recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedShares {
    pub from: Address,
    pub to: Address,
    pub ciphertext: Vec<u8>,
}

/// Round 2: a participant's update, masked. Only [`crate::Participant::masked_input`]
/// makes one from an update, and it always adds the masks: no constructor takes a
/// plain vector, so no code path hands the aggregator an unmasked update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedInput {
    pub(crate) from: Address,
    pub(crate) vector: Vec<u32>,
}

impl MaskedInput {
    pub fn from(&self) -> Address {
        self.from
    }

    pub fn len(&self) -> usize {
        self.vector.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vector.is_empty()
    }

    /// A masked input as the coordinator received it from `from`. Only the network
    /// side of the coordinator calls this: what arrives is whatever the participant sent,
    /// which [`crate::Participant::masked_input`] masked before it left.
    pub(crate) fn received(from: Address, vector: Vec<u32>) -> Self {
        MaskedInput { from, vector }
    }

    /// The masked words, as sent on the wire.
    pub fn words(&self) -> &[u32] {
        &self.vector
    }
}

/// Round 3: a participant's signature over the survivor set the coordinator announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurvivorSignature {
    pub from: Address,
    pub signature: Vec<u8>,
}

/// Round 4: the shares a participant reveals. For each survivor, its share of that
/// survivor's self-mask seed; for each participant that dropped after sharing, its share
/// of that one's masking key. Never both for the same participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmaskShares {
    pub from: Address,
    pub self_mask_shares: Vec<(Address, Vec<u8>)>,
    pub masking_key_shares: Vec<(Address, Vec<u8>)>,
}
