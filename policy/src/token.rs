//! The bearer token: an EIP-712 `AccessToken` signed by the consumer's chain key.
//!
//! The provider verifies it without state or round trips: the signature recovers the
//! consumer, the audience is this provider, the domain binds the chain and the
//! deployment, and the lifetime is short and bounded. The wire form is
//! `base64url(version ‖ abi.encode(token) ‖ signature)`, so any HTTP client can carry it as
//! `Authorization: Bearer …` or as the password of a Basic-auth handshake.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use alloy::primitives::{Address, B256, Signature, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolStruct, SolValue};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use insitu_ledger::eip712::insitu_domain;

use crate::error::{PolicyError, Result};

alloy::sol! {
    /// The signed struct. Field order and types are part of the protocol.
    #[derive(Debug, PartialEq, Eq)]
    struct AccessToken {
        address consumer;
        address provider;
        uint256 chainId;
        uint64 issuedAt;
        uint64 expiresAt;
        bytes32 nonce;
        string scope;
    }
}

const WIRE_VERSION: u8 = 1;
/// Tokens are small; anything bigger is an attack on the decoder.
const MAX_TOKEN_CHARS: usize = 2048;
/// Room for a Flight SQL scope of 15 agreement ids; the whole token stays under
/// `MAX_TOKEN_CHARS`.
const MAX_SCOPE_BYTES: usize = 1024;
/// Scopes with this prefix are single-use: their nonce is remembered until expiry.
const ONE_SHOT_PREFIX: &str = "once:";

/// What a consumer asks to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    pub provider: Address,
    pub chain_id: u64,
    /// The `AgreementManager` of the deployment the token is for.
    pub verifying_contract: Address,
    pub issued_at: u64,
    pub lifetime: Duration,
    pub scope: String,
}

/// Signs an access token for `claims` with the consumer's key and returns the bearer string.
pub fn sign_access_token(signer: &PrivateKeySigner, claims: &AccessClaims) -> Result<String> {
    if claims.scope.len() > MAX_SCOPE_BYTES {
        return Err(PolicyError::Signing(format!(
            "scope is {} bytes; at most {MAX_SCOPE_BYTES} are allowed",
            claims.scope.len()
        )));
    }
    let token = AccessToken {
        consumer: signer.address(),
        provider: claims.provider,
        chainId: U256::from(claims.chain_id),
        issuedAt: claims.issued_at,
        expiresAt: claims.issued_at.saturating_add(claims.lifetime.as_secs()),
        nonce: B256::from(rand::random::<[u8; 32]>()),
        scope: claims.scope.clone(),
    };
    let domain = insitu_domain(claims.chain_id, claims.verifying_contract);
    let hash = token.eip712_signing_hash(&domain);
    let sig = signer
        .sign_hash_sync(&hash)
        .map_err(|e| PolicyError::Signing(e.to_string()))?;
    Ok(encode_token(&token, &sig))
}

/// The wire form of a signed token: `base64url(version ‖ abi.encode(token) ‖ signature)`.
/// Public so that clients in other languages have a reference implementation to test
/// against.
pub fn encode_token(token: &AccessToken, sig: &Signature) -> String {
    let mut wire = vec![WIRE_VERSION];
    wire.extend_from_slice(&token.abi_encode());
    wire.extend_from_slice(&sig.as_bytes());
    URL_SAFE_NO_PAD.encode(wire)
}

/// Splits a bearer string into the token and its signature, without verifying anything.
pub fn decode_token(bearer: &str) -> Result<(AccessToken, Signature)> {
    if bearer.len() > MAX_TOKEN_CHARS {
        return Err(invalid("token is too long"));
    }
    let wire = URL_SAFE_NO_PAD
        .decode(bearer.trim())
        .map_err(|_| invalid("token is not base64url"))?;
    let (version, rest) = wire
        .split_first()
        .ok_or_else(|| invalid("token is empty"))?;
    if *version != WIRE_VERSION {
        return Err(invalid(format!("unsupported token version {version}")));
    }
    if rest.len() < 65 {
        return Err(invalid("token is truncated"));
    }
    let (body, sig_bytes) = rest.split_at(rest.len() - 65);
    let token = AccessToken::abi_decode(body).map_err(|_| invalid("token body is malformed"))?;
    // ABI decoding tolerates dirty padding; a token has exactly one valid encoding, so
    // any other byte string is a tampered token even if it decodes to the same values.
    if token.abi_encode() != body {
        return Err(invalid("token body is not canonically encoded"));
    }
    let sig =
        Signature::from_raw(sig_bytes).map_err(|_| invalid("token signature is malformed"))?;
    Ok((token, sig))
}

/// The authenticated caller of a request, as proven by a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub consumer: Address,
    pub expires_at: u64,
    pub scope: String,
    pub nonce: B256,
}

/// Verifies bearer tokens addressed to one provider on one deployment.
#[derive(Debug)]
pub struct TokenVerifier {
    provider: Address,
    chain_id: u64,
    verifying_contract: Address,
    max_lifetime: Duration,
    max_skew: Duration,
    used_nonces: Mutex<HashMap<B256, u64>>,
}

/// Builder for [`TokenVerifier`].
#[derive(Debug)]
pub struct TokenVerifierBuilder {
    provider: Address,
    chain_id: u64,
    verifying_contract: Address,
    max_lifetime: Duration,
    max_skew: Duration,
}

impl TokenVerifierBuilder {
    /// Longest lifetime accepted (issuedAt to expiresAt). SECURITY.md caps it at 24 h.
    pub fn with_max_lifetime(mut self, d: Duration) -> Self {
        self.max_lifetime = d.min(Duration::from_secs(24 * 3600));
        self
    }

    /// Tolerated clock difference between consumer and provider.
    pub fn with_max_skew(mut self, d: Duration) -> Self {
        self.max_skew = d;
        self
    }

    pub fn build(self) -> TokenVerifier {
        TokenVerifier {
            provider: self.provider,
            chain_id: self.chain_id,
            verifying_contract: self.verifying_contract,
            max_lifetime: self.max_lifetime,
            max_skew: self.max_skew,
            used_nonces: Mutex::new(HashMap::new()),
        }
    }
}

fn invalid(msg: impl Into<String>) -> PolicyError {
    PolicyError::InvalidToken(msg.into())
}

impl TokenVerifier {
    /// A verifier for tokens addressed to `provider` on the deployment whose
    /// `AgreementManager` is `verifying_contract` on `chain_id`.
    pub fn builder(
        provider: Address,
        chain_id: u64,
        verifying_contract: Address,
    ) -> TokenVerifierBuilder {
        TokenVerifierBuilder {
            provider,
            chain_id,
            verifying_contract,
            max_lifetime: Duration::from_secs(24 * 3600),
            max_skew: Duration::from_secs(60),
        }
    }

    /// The provider address tokens must be addressed to.
    pub fn provider(&self) -> Address {
        self.provider
    }

    /// Verifies `bearer` at wall-clock time `now` (unix seconds).
    pub fn verify(&self, bearer: &str, now: u64) -> Result<Principal> {
        let (token, sig) = decode_token(bearer)?;

        // The domain is ours, not the token's: a token for another chain or deployment
        // recovers to a different address and fails the consumer check below.
        let domain = insitu_domain(self.chain_id, self.verifying_contract);
        let hash = token.eip712_signing_hash(&domain);
        let signer = sig
            .recover_address_from_prehash(&hash)
            .map_err(|_| invalid("token signature does not verify"))?;
        if signer != token.consumer {
            return Err(invalid(
                "token signature does not match its consumer (forged, or signed for another chain or deployment)",
            ));
        }
        if token.chainId != U256::from(self.chain_id) {
            return Err(invalid(format!(
                "token is for chain {}, this provider is on chain {}",
                token.chainId, self.chain_id
            )));
        }
        if token.provider != self.provider {
            return Err(invalid(format!(
                "token is addressed to provider {}, not to this provider ({})",
                token.provider, self.provider
            )));
        }
        let skew = self.max_skew.as_secs();
        if token.issuedAt > now.saturating_add(skew) {
            return Err(invalid("token is issued in the future; check the clock"));
        }
        if token.expiresAt <= token.issuedAt
            || token.expiresAt - token.issuedAt > self.max_lifetime.as_secs()
        {
            return Err(invalid(format!(
                "token lifetime must be positive and at most {} s",
                self.max_lifetime.as_secs()
            )));
        }
        if token.expiresAt <= now.saturating_sub(skew) {
            return Err(invalid(format!(
                "token expired at {} (now {now}); run `insitu token` for a new one",
                token.expiresAt
            )));
        }
        if token.scope.len() > MAX_SCOPE_BYTES {
            return Err(invalid("token scope is too long"));
        }
        if token.scope.starts_with(ONE_SHOT_PREFIX) {
            self.consume_nonce(token.nonce, token.expiresAt, now)?;
        }
        Ok(Principal {
            consumer: token.consumer,
            expires_at: token.expiresAt,
            scope: token.scope,
            nonce: token.nonce,
        })
    }

    fn consume_nonce(&self, nonce: B256, expires_at: u64, now: u64) -> Result<()> {
        let mut used = self
            .used_nonces
            .lock()
            .map_err(|_| invalid("nonce store is unavailable"))?;
        used.retain(|_, exp| *exp + self.max_skew.as_secs() > now);
        if used.insert(nonce, expires_at).is_some() {
            return Err(invalid("one-shot token was already used"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(provider: Address) -> AccessClaims {
        AccessClaims {
            provider,
            chain_id: 31337,
            verifying_contract: Address::repeat_byte(0x11),
            issued_at: 1_000_000,
            lifetime: Duration::from_secs(3600),
            scope: "access".into(),
        }
    }

    fn verifier(provider: Address) -> TokenVerifier {
        TokenVerifier::builder(provider, 31337, Address::repeat_byte(0x11)).build()
    }

    #[test]
    fn a_token_verifies_for_its_audience_and_names_its_consumer() {
        let consumer = PrivateKeySigner::random();
        let provider = Address::repeat_byte(0x22);
        let token = sign_access_token(&consumer, &claims(provider)).expect("sign");
        let p = verifier(provider)
            .verify(&token, 1_000_010)
            .expect("verify");
        assert_eq!(p.consumer, consumer.address());
    }

    #[test]
    fn a_token_for_another_provider_is_refused() {
        let consumer = PrivateKeySigner::random();
        let token =
            sign_access_token(&consumer, &claims(Address::repeat_byte(0x22))).expect("sign");
        let err = verifier(Address::repeat_byte(0x33))
            .verify(&token, 1_000_010)
            .expect_err("aud");
        assert!(err.to_string().contains("addressed to provider"), "{err}");
    }

    #[test]
    fn a_token_for_another_chain_is_refused() {
        let consumer = PrivateKeySigner::random();
        let provider = Address::repeat_byte(0x22);
        let mut c = claims(provider);
        c.chain_id = 1;
        let token = sign_access_token(&consumer, &c).expect("sign");
        assert!(verifier(provider).verify(&token, 1_000_010).is_err());
    }

    #[test]
    fn expired_and_future_tokens_are_refused() {
        let consumer = PrivateKeySigner::random();
        let provider = Address::repeat_byte(0x22);
        let token = sign_access_token(&consumer, &claims(provider)).expect("sign");
        let v = verifier(provider);
        assert!(v.verify(&token, 1_000_000 + 3600 + 61).is_err());
        assert!(v.verify(&token, 1_000_000 - 3600).is_err());
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let consumer = PrivateKeySigner::random();
        let provider = Address::repeat_byte(0x22);
        let token = sign_access_token(&consumer, &claims(provider)).expect("sign");
        let raw = URL_SAFE_NO_PAD.decode(&token).expect("b64");
        // Every single-bit change anywhere in the token must be refused.
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 1;
            let forged = URL_SAFE_NO_PAD.encode(bad);
            assert!(
                verifier(provider).verify(&forged, 1_000_010).is_err(),
                "byte {i} flipped was accepted"
            );
        }
    }

    #[test]
    fn a_one_shot_token_is_accepted_once() {
        let consumer = PrivateKeySigner::random();
        let provider = Address::repeat_byte(0x22);
        let mut c = claims(provider);
        c.scope = "once:publish".into();
        let token = sign_access_token(&consumer, &c).expect("sign");
        let v = verifier(provider);
        assert!(v.verify(&token, 1_000_010).is_ok());
        assert!(v.verify(&token, 1_000_011).is_err());
    }
}
