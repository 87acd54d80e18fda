//! The primitives of the protocol, each behind one small function: X25519 agreement,
//! key derivation, sealing shares (ChaCha20-Poly1305), and Shamir sharing of 32-byte
//! secrets (vsss-rs, byte-wise over GF(2^8): any 32 bytes share, and up to 255
//! participants per round).

use alloy::primitives::Address;
use chacha20poly1305::aead::Aead;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use rand::seq::SliceRandom;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{FederatedError, Result};
use crate::identity::RoundId;

/// Most participants in one round: Shamir identifiers are the non-zero bytes.
pub const MAX_PARTICIPANTS: usize = 255;
/// One share of a 32-byte secret: its identifier byte, then 32 bytes.
pub const SHARE_BYTES: usize = 33;

/// 32 secret bytes, wiped when dropped and never printed.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    pub fn random() -> Self {
        let mut b = [0u8; 32];
        rand::fill(&mut b);
        Secret(b)
    }

    pub(crate) fn bytes(&self) -> [u8; 32] {
        self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// An X25519 key pair.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub secret: Secret,
    pub public: [u8; 32],
}

impl KeyPair {
    pub fn generate() -> Self {
        let secret = Secret::random();
        let public = public_of(&secret);
        KeyPair { secret, public }
    }
}

/// The X25519 shared secret of `secret` and `public`. A low-order public key (whose
/// shared secret anyone could compute) is refused.
/// The shared secret is wiped when dropped, like every key it derives.
pub fn dh(secret: &Secret, public: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>> {
    let shared = x25519_dalek::StaticSecret::from(secret.0)
        .diffie_hellman(&x25519_dalek::PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(FederatedError::Refused(
            "a low-order X25519 public key".into(),
        ));
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// The X25519 public key of `secret`: checks a rebuilt masking key against the roster.
pub fn public_of(secret: &Secret) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret.0)).to_bytes()
}

/// The commitment to a self-mask seed that a participant signs with its keys, so a
/// rebuilt seed can be checked.
pub fn commitment(secret: &Secret) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"insitu/secagg/self-mask-commitment");
    h.update(secret.0);
    h.finalize().into()
}

/// A key for one purpose, one round and one ordered pair, from a shared secret.
pub fn kdf(
    label: &str,
    id: &RoundId,
    shared: &[u8; 32],
    from: Address,
    to: Address,
) -> Zeroizing<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    h.update(id.job.as_slice());
    h.update(id.round.to_be_bytes());
    h.update(shared);
    h.update(from.as_slice());
    h.update(to.as_slice());
    Zeroizing::new(h.finalize().into())
}

/// The seed of the pairwise mask between the owner of `secret` and the owner of
/// `public`: the same from both sides.
pub fn pair_seed(id: &RoundId, secret: &Secret, public: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>> {
    let mut h = Sha256::new();
    h.update(b"insitu/secagg/pair-mask");
    h.update(id.job.as_slice());
    h.update(id.round.to_be_bytes());
    h.update(dh(secret, public)?.as_slice());
    Ok(Zeroizing::new(h.finalize().into()))
}

/// Seals `plain` under a key used for one message only (so a fixed nonce is safe).
pub fn seal(key: &[u8; 32], plain: &[u8]) -> Result<Vec<u8>> {
    ChaCha20Poly1305::new(key.into())
        .encrypt(&[0u8; 12].into(), plain)
        .map_err(|_| FederatedError::Internal("sealing shares".into()))
}

pub fn open(key: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>> {
    ChaCha20Poly1305::new(key.into())
        .decrypt(&[0u8; 12].into(), sealed)
        .map_err(|_| FederatedError::Refused("sealed shares do not open".into()))
}

/// Splits `secret` into `n` shares, any `t` of which rebuild it. Share `i` (0-based)
/// belongs to the `i`-th member of the owner's neighbourhood.
pub fn split(secret: &Secret, t: usize, n: usize) -> Result<Vec<Vec<u8>>> {
    if n > MAX_PARTICIPANTS {
        return Err(FederatedError::Invalid(format!(
            "{n} participants; a round takes at most {MAX_PARTICIPANTS}"
        )));
    }
    let rng = getrandom::rand_core::UnwrapErr(getrandom::SysRng);
    let shares = vsss_rs::Gf256::split_bytes(t, n, secret.0.as_slice(), rng)
        .map_err(|e| FederatedError::Internal(format!("splitting a secret: {e:?}")))?;
    Ok(shares)
}

/// Random `t`-subsets tried after the contiguous windows, when some shares are wrong.
/// With 100 shares, a threshold of 51 and 3 wrong shares, a subset is all correct with
/// probability 0.11, so 512 tries miss with probability below 10⁻²⁶.
const MAX_SUBSETS: usize = 512;

/// Rebuilds a secret from `t` or more shares, each with its holder's place in the
/// owner's neighbourhood, accepting only a result that passes `check`. A wrong share
/// yields a wrong secret, not an error. So malformed shares are set aside first; then
/// every contiguous window of `t` is tried, then random `t`-subsets, which outvote a
/// few wrong shares wherever they sit.
pub fn combine_checked(
    shares: &[(usize, Vec<u8>)],
    t: usize,
    check: impl Fn(&Secret) -> bool,
) -> Result<Secret> {
    let usable: Vec<&(usize, Vec<u8>)> = shares
        .iter()
        .filter(|(index, share)| well_formed(*index, share))
        .collect();
    if t == 0 || usable.len() < t {
        return Err(FederatedError::Aborted(format!(
            "{} well-formed shares, fewer than the threshold {t}",
            usable.len()
        )));
    }
    let attempt = |pick: &[&(usize, Vec<u8>)]| combine(pick).ok().filter(|s| check(s));
    for start in 0..=usable.len() - t {
        if let Some(s) = attempt(&usable[start..start + t]) {
            return Ok(s);
        }
    }
    if usable.len() > t {
        let mut pool = usable;
        let mut rng = rand::rng();
        for _ in 0..MAX_SUBSETS {
            let (chosen, _) = pool.partial_shuffle(&mut rng, t);
            if let Some(s) = attempt(chosen) {
                return Ok(s);
            }
        }
    }
    Err(FederatedError::Aborted(
        "no set of shares rebuilds the secret its owner committed to".into(),
    ))
}

/// A share's first byte is its identifier: the holder's index plus one.
fn well_formed(index: usize, share: &[u8]) -> bool {
    share.len() == SHARE_BYTES && usize::from(share[0]) == index + 1
}

/// Rebuilds a secret from well-formed shares, each with its holder's place.
fn combine(shares: &[&(usize, Vec<u8>)]) -> Result<Secret> {
    let picked: Zeroizing<Vec<Vec<u8>>> =
        Zeroizing::new(shares.iter().map(|(_, share)| share.clone()).collect());
    let bytes = Zeroizing::new(
        vsss_rs::Gf256::combine_bytes(picked.as_slice())
            .map_err(|e| FederatedError::Refused(format!("shares do not combine: {e:?}")))?,
    );
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| FederatedError::Refused("a rebuilt secret is not 32 bytes".into()))?;
    Ok(Secret(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares_of(secret: &Secret, t: usize, n: usize) -> Vec<(usize, Vec<u8>)> {
        split(secret, t, n)
            .expect("split")
            .into_iter()
            .enumerate()
            .collect()
    }

    #[test]
    fn wrong_shares_in_every_window_are_outvoted() {
        let secret = Secret::random();
        let (t, n) = (51, 100);
        let mut shares = shares_of(&secret, t, n);
        // Every contiguous window of 51 holds one of these.
        for i in [20, 50, 80] {
            shares[i].1[7] ^= 0x5a;
        }
        // And a malformed one: the wrong identifier.
        shares[3].1[0] = 99;
        let rebuilt = combine_checked(&shares, t, |s| s.0 == secret.0).expect("outvoted");
        assert_eq!(rebuilt.0, secret.0);
    }

    #[test]
    fn too_few_right_shares_abort() {
        let secret = Secret::random();
        let (t, n) = (6, 10);
        let mut shares = shares_of(&secret, t, n);
        // Wrong in every byte: errors confined to one byte could cancel out in some
        // subset, which would then rebuild the right secret.
        for share in shares.iter_mut().take(5) {
            rand::fill(&mut share.1[1..]);
        }
        let e = combine_checked(&shares, t, |s| s.0 == secret.0).expect_err("5 right of 6");
        assert!(matches!(e, FederatedError::Aborted(_)), "{e}");
        let e = combine_checked(&shares[..5], t, |_| true).expect_err("too few");
        assert!(e.to_string().contains("fewer than the threshold"), "{e}");
    }
}
