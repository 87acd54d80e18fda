//! Binding protocol keys to chain identities. Each participant signs its two public
//! keys for one job and round (EIP-712, in the insitu domain of the job's chain and
//! deployment), and later signs the set of participants whose masked inputs the
//! aggregator claims to hold. A key that its identity did not sign, or a signature for
//! another job, round, chain or deployment, is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use alloy::primitives::{Address, B256, Signature, keccak256};
use alloy::signers::SignerSync;
use alloy::sol_types::{Eip712Domain, SolStruct};

use crate::error::{FederatedError, Result};

alloy::sol! {
    /// A participant's public keys for one round of one job.
    struct SecAggKeys {
        bytes32 job;
        uint32 round;
        bytes32 encryptionKey;
        bytes32 maskingKey;
        bytes32 selfMaskCommitment;
        bytes32 config;
    }

    /// A participant's view of who sent masked inputs (the consistency check).
    struct SecAggSurvivors {
        bytes32 job;
        uint32 round;
        bytes32 survivors;
    }
}

/// Which job and round a message belongs to, and the domain it is signed in.
#[derive(Debug, Clone)]
pub struct RoundId {
    pub job: B256,
    pub round: u32,
    pub domain: Eip712Domain,
}

/// Recovered signers, shared by the participants of one process (the simulation):
/// a recovery is a pure function of its digest and signature, so memoising it changes
/// nothing but the time spent.
#[derive(Debug, Clone, Default)]
pub struct RecoveryCache(Arc<Mutex<Recovered>>);

/// (digest, signature) → signer.
type Recovered = HashMap<(B256, [u8; 65]), Address>;

impl RecoveryCache {
    pub fn recover(&self, digest: B256, sig: &[u8; 65]) -> Result<Address> {
        if let Some(a) = self
            .0
            .lock()
            .ok()
            .and_then(|m| m.get(&(digest, *sig)).copied())
        {
            return Ok(a);
        }
        let signature = Signature::try_from(&sig[..])
            .map_err(|e| FederatedError::Refused(format!("a malformed signature: {e}")))?;
        let address = signature
            .recover_address_from_prehash(&digest)
            .map_err(|e| FederatedError::Refused(format!("an unrecoverable signature: {e}")))?;
        if let Ok(mut m) = self.0.lock() {
            m.insert((digest, *sig), address);
        }
        Ok(address)
    }
}

fn sign(signer: &dyn SignerSync, digest: B256) -> Result<[u8; 65]> {
    let sig = signer
        .sign_hash_sync(&digest)
        .map_err(|e| FederatedError::Internal(format!("signing: {e}")))?;
    Ok(sig.as_bytes())
}

pub(crate) fn keys_digest(id: &RoundId, advert: &crate::messages::KeyAdvert) -> B256 {
    SecAggKeys {
        job: id.job,
        round: id.round,
        encryptionKey: B256::from(advert.encryption_key),
        maskingKey: B256::from(advert.masking_key),
        selfMaskCommitment: B256::from(advert.self_mask_commitment),
        config: B256::from(advert.config),
    }
    .eip712_signing_hash(&id.domain)
}

pub(crate) fn sign_keys(
    signer: &dyn SignerSync,
    id: &RoundId,
    advert: &crate::messages::KeyAdvert,
) -> Result<[u8; 65]> {
    sign(signer, keys_digest(id, advert))
}

/// The hash of a survivor set, in roster order.
pub(crate) fn survivors_hash(survivors: &[Address]) -> B256 {
    let mut bytes = Vec::with_capacity(survivors.len() * 20);
    for a in survivors {
        bytes.extend_from_slice(a.as_slice());
    }
    keccak256(bytes)
}

pub(crate) fn survivors_digest(id: &RoundId, survivors: &[Address]) -> B256 {
    SecAggSurvivors {
        job: id.job,
        round: id.round,
        survivors: survivors_hash(survivors),
    }
    .eip712_signing_hash(&id.domain)
}

pub(crate) fn sign_survivors(
    signer: &dyn SignerSync,
    id: &RoundId,
    survivors: &[Address],
) -> Result<[u8; 65]> {
    sign(signer, survivors_digest(id, survivors))
}
