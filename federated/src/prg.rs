//! Masks expanded from 32-byte seeds: AES-128 in counter mode, keyed by the seed's
//! first half with its second half as the initial counter block. AES-NI makes this the
//! cheapest keystream on the CPUs providers run; each mask is a pure function of its
//! seed, so the aggregator can regenerate exactly what a client added.

use aes::Aes128;
use ctr::Ctr128BE;
use ctr::cipher::{KeyIvInit, StreamCipher};

type Cipher = Ctr128BE<Aes128>;

/// Bytes of keystream made at a time: large enough for AES-NI's pipelining, small
/// enough to stay in L2.
const CHUNK_WORDS: usize = 16 * 1024;

/// A mask's direction in the sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    Add,
    Subtract,
}

/// Adds (or subtracts) the mask expanded from `seed` into `acc`, word by word, with
/// wrapping arithmetic.
pub fn apply_mask(acc: &mut [u32], seed: &[u8; 32], sign: Sign) {
    let (key, iv) = seed.split_at(16);
    let mut cipher = Cipher::new(key.into(), iv.into());
    let mut buf = vec![0u8; CHUNK_WORDS * 4];
    for chunk in acc.chunks_mut(CHUNK_WORDS) {
        let bytes = &mut buf[..chunk.len() * 4];
        bytes.fill(0);
        cipher.apply_keystream(bytes);
        let words = bytes
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        match sign {
            Sign::Add => {
                for (a, m) in chunk.iter_mut().zip(words) {
                    *a = a.wrapping_add(m);
                }
            }
            Sign::Subtract => {
                for (a, m) in chunk.iter_mut().zip(words) {
                    *a = a.wrapping_sub(m);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_added_then_subtracted_leaves_the_vector_unchanged() {
        let original: Vec<u32> = (0..100_003).map(|i| i * 7919).collect();
        let mut v = original.clone();
        let seed = [42u8; 32];
        apply_mask(&mut v, &seed, Sign::Add);
        assert_ne!(v, original);
        apply_mask(&mut v, &seed, Sign::Subtract);
        assert_eq!(v, original);
    }

    #[test]
    fn different_seeds_give_different_masks() {
        let mut a = vec![0u32; 64];
        let mut b = vec![0u32; 64];
        apply_mask(&mut a, &[1u8; 32], Sign::Add);
        apply_mask(&mut b, &[2u8; 32], Sign::Add);
        assert_ne!(a, b);
    }
}
