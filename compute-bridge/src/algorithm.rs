//! Which algorithms may run: the provider's allow-list.
//!
//! An algorithm is identified by the SHA-256 of its module bytes, never by a name. The
//! provider allows it either by that hash or because a publisher it trusts approved
//! that hash: an EIP-712 `AlgorithmApproval` signed by the publisher's key, bound to the
//! insitu domain (chain and deployment) and to an expiry. An empty allow-list allows
//! nothing: there is no "allow all" (Ocean's empty trusted-algorithm list meant exactly
//! that, and was a hole).

use std::collections::HashSet;

use alloy::primitives::{Address, B256, Signature};
use alloy::signers::SignerSync;
use alloy::sol_types::{Eip712Domain, SolStruct};
use sha2::{Digest, Sha256};

use crate::error::{ComputeError, Result};

alloy::sol! {
    /// A publisher's statement that the module with this SHA-256 may run until
    /// `expiresAt` (unix seconds). Field order and types are part of the protocol.
    #[derive(Debug, PartialEq, Eq)]
    struct AlgorithmApproval {
        bytes32 codeHash;
        uint64 expiresAt;
    }
}

/// The content hash of a module, as `sha256:<hex>`.
pub fn algorithm_hash(module: &[u8]) -> (B256, String) {
    let digest = B256::from_slice(&Sha256::digest(module));
    (digest, format!("sha256:{}", hex::encode(digest)))
}

/// Parses `sha256:<hex>` or bare hex.
pub fn parse_hash(text: &str) -> Result<B256> {
    let hex_part = text.trim().trim_start_matches("sha256:");
    let hex_part = hex_part.trim_start_matches("0x");
    let bytes = hex::decode(hex_part)
        .map_err(|_| ComputeError::Invalid(format!("'{text}' is not a SHA-256 hash")))?;
    if bytes.len() != 32 {
        return Err(ComputeError::Invalid(format!(
            "'{text}' is not a SHA-256 hash (32 bytes)"
        )));
    }
    Ok(B256::from_slice(&bytes))
}

/// A signed approval, as consumers send it with a submission.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedApproval {
    pub expires_at: u64,
    /// 65-byte signature, hex.
    pub signature: String,
}

/// Signs an approval of `module` for the domain, valid until `expires_at`.
pub fn approve(
    signer: &dyn SignerSync,
    domain: &Eip712Domain,
    module: &[u8],
    expires_at: u64,
) -> Result<SignedApproval> {
    let (code_hash, _) = algorithm_hash(module);
    let approval = AlgorithmApproval {
        codeHash: code_hash,
        expiresAt: expires_at,
    };
    let sig = signer
        .sign_hash_sync(&approval.eip712_signing_hash(domain))
        .map_err(|e| ComputeError::Internal(format!("signing the approval: {e}")))?;
    Ok(SignedApproval {
        expires_at,
        signature: hex::encode(sig.as_bytes()),
    })
}

/// The provider's allow-list. Deny by default.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    hashes: HashSet<B256>,
    publishers: HashSet<Address>,
}

impl AllowList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows the module with this hash (`sha256:<hex>`).
    pub fn with_hash(mut self, hash: &str) -> Result<Self> {
        self.hashes.insert(parse_hash(hash)?);
        Ok(self)
    }

    /// Allows modules approved by this publisher.
    pub fn with_publisher(mut self, publisher: Address) -> Self {
        self.publishers.insert(publisher);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty() && self.publishers.is_empty()
    }

    /// Whether `code_hash` may run, given an optional approval. Returns the reason for a
    /// refusal, in words for the consumer.
    pub fn check(
        &self,
        code_hash: B256,
        approval: Option<&SignedApproval>,
        domain: &Eip712Domain,
        now: u64,
    ) -> Result<()> {
        let shown = format!("sha256:{}", hex::encode(code_hash));
        if self.hashes.contains(&code_hash) {
            return Ok(());
        }
        let Some(approval) = approval else {
            return Err(ComputeError::Denied(format!(
                "algorithm {shown} is not on this provider's allow-list \
                 (allowed by hash or by a trusted publisher's approval; none was sent)"
            )));
        };
        if approval.expires_at <= now {
            return Err(ComputeError::Denied(format!(
                "the approval of algorithm {shown} expired"
            )));
        }
        let bytes = hex::decode(approval.signature.trim_start_matches("0x"))
            .map_err(|_| ComputeError::Invalid("the approval signature is not hex".into()))?;
        let sig = Signature::try_from(bytes.as_slice())
            .map_err(|_| ComputeError::Invalid("the approval signature is malformed".into()))?;
        let signed = AlgorithmApproval {
            codeHash: code_hash,
            expiresAt: approval.expires_at,
        };
        let publisher = sig
            .recover_address_from_prehash(&signed.eip712_signing_hash(domain))
            .map_err(|_| ComputeError::Denied("the approval signature does not verify".into()))?;
        if self.publishers.contains(&publisher) {
            Ok(())
        } else {
            Err(ComputeError::Denied(format!(
                "algorithm {shown} is approved by {publisher}, which this provider does not trust \
                 (or the approval was signed for another chain or deployment)"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;

    fn domain(chain: u64) -> Eip712Domain {
        insitu_ledger::eip712::insitu_domain(chain, Address::repeat_byte(9))
    }

    #[test]
    fn an_empty_list_denies_and_hashes_allow() {
        let module = b"\0asm module bytes";
        let (hash, shown) = algorithm_hash(module);
        let d = domain(1);
        assert!(AllowList::new().check(hash, None, &d, 10).is_err());
        let list = AllowList::new().with_hash(&shown).expect("hash");
        list.check(hash, None, &d, 10).expect("allowed");
        let (other, _) = algorithm_hash(b"other");
        assert!(list.check(other, None, &d, 10).is_err());
        assert!(AllowList::new().with_hash("sha256:12").is_err());
    }

    #[test]
    fn trusted_publishers_approve_within_their_domain_and_expiry() {
        let publisher = PrivateKeySigner::random();
        let stranger = PrivateKeySigner::random();
        let module = b"\0asm trained model";
        let (hash, _) = algorithm_hash(module);
        let d = domain(1);
        let list = AllowList::new().with_publisher(publisher.address());
        let ok = approve(&publisher, &d, module, 100).expect("sign");
        list.check(hash, Some(&ok), &d, 50).expect("trusted");
        // Expired, another chain, another module, an untrusted signer: all refused.
        assert!(list.check(hash, Some(&ok), &d, 100).is_err());
        assert!(list.check(hash, Some(&ok), &domain(2), 50).is_err());
        let (other, _) = algorithm_hash(b"\0asm other");
        assert!(list.check(other, Some(&ok), &d, 50).is_err());
        let theirs = approve(&stranger, &d, module, 100).expect("sign");
        assert!(list.check(hash, Some(&theirs), &d, 50).is_err());
        // A tampered expiry no longer matches the signature.
        let stretched = SignedApproval {
            expires_at: 1_000,
            ..ok
        };
        assert!(list.check(hash, Some(&stretched), &d, 500).is_err());
    }
}
