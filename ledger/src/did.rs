use std::fmt;
use std::str::FromStr;

use alloy::primitives::B256;
use serde::{Deserialize, Serialize};

use crate::error::LedgerError;

/// Decentralised identifier of an asset: `did:insitu:0x` + keccak256(owner, seed).
///
/// The DID is derived on chain from the owner, so a DID cannot be claimed by anyone else.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Did(pub B256);

const DID_PREFIX: &str = "did:insitu:";

impl Did {
    /// The DID the registry assigns to `owner` registering with `seed`:
    /// keccak256(abi.encodePacked(owner, seed)), as `AssetRegistry.computeDid` does.
    pub fn derive(owner: alloy::primitives::Address, seed: B256) -> Did {
        Did(alloy::primitives::keccak256(
            [owner.as_slice(), seed.as_slice()].concat(),
        ))
    }

    /// The raw 32-byte identifier used on chain.
    pub fn as_b256(&self) -> B256 {
        self.0
    }
}

impl fmt::Display for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{DID_PREFIX}{}", self.0)
    }
}

impl fmt::Debug for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn parse_b256(hex_part: &str) -> Option<B256> {
    let digits = hex_part.strip_prefix("0x")?;
    if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    B256::from_str(hex_part).ok()
}

impl FromStr for Did {
    type Err = LedgerError;

    /// Accepts `did:insitu:0x…` and, for convenience at the command line, the bare `0x…`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_part = s.strip_prefix(DID_PREFIX).unwrap_or(s);
        parse_b256(hex_part)
            .map(Did)
            .ok_or_else(|| LedgerError::MalformedDid { input: truncate(s) })
    }
}

impl TryFrom<String> for Did {
    type Error = LedgerError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Did> for String {
    fn from(d: Did) -> String {
        d.to_string()
    }
}

/// Identifier of one agreement in the `AgreementManager` contract.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgreementId(pub B256);

impl fmt::Display for AgreementId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for AgreementId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for AgreementId {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_b256(s)
            .map(AgreementId)
            .ok_or_else(|| LedgerError::MalformedAgreementId { input: truncate(s) })
    }
}

impl TryFrom<String> for AgreementId {
    type Error = LedgerError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<AgreementId> for String {
    fn from(a: AgreementId) -> String {
        a.to_string()
    }
}

/// Echoing unbounded user input into errors lets a client make the server log megabytes.
fn truncate(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        s.to_string()
    } else {
        let cut = (0..=MAX)
            .rev()
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        format!("{}…", &s[..cut])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_round_trips_through_its_text_form() {
        let did = Did(B256::repeat_byte(0xab));
        let text = did.to_string();
        assert!(text.starts_with("did:insitu:0xabab"));
        assert_eq!(text.parse::<Did>().expect("parse"), did);
    }

    #[test]
    fn malformed_dids_are_rejected_with_the_input_named() {
        for bad in [
            "",
            "did:insitu:",
            "did:insitu:0x12",
            "did:other:0x00",
            "0xzz",
        ] {
            let err = bad.parse::<Did>().expect_err(bad);
            assert!(err.to_string().contains("malformed DID"), "{err}");
        }
        let long = "x".repeat(10_000);
        let err = long.parse::<Did>().expect_err("long");
        assert!(err.to_string().len() < 300);
    }
}
