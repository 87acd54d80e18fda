//! The rules of a round every party checks: the Shamir threshold and the most
//! participants. A threshold of half the participants or fewer would let a coordinator
//! split the participants into two groups, each large enough to unmask, and show each a
//! different story about who dropped out; so `2t > n` is required, for the job's largest
//! `n`, and a participant refuses a roster larger than that.

use crate::crypto::MAX_PARTICIPANTS;
use crate::error::{FederatedError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RawRules")]
pub struct RoundRules {
    pub threshold: usize,
    pub max_participants: usize,
}

#[derive(serde::Deserialize)]
struct RawRules {
    threshold: usize,
    max_participants: usize,
}

impl TryFrom<RawRules> for RoundRules {
    type Error = FederatedError;
    fn try_from(r: RawRules) -> Result<Self> {
        RoundRules::new(r.threshold, r.max_participants)
    }
}

impl RoundRules {
    pub fn new(threshold: usize, max_participants: usize) -> Result<Self> {
        if max_participants > MAX_PARTICIPANTS {
            return Err(FederatedError::Invalid(format!(
                "{max_participants} participants; a round takes at most {MAX_PARTICIPANTS}"
            )));
        }
        if threshold < 2 {
            return Err(FederatedError::Invalid(
                "a threshold below 2 would let one participant's shares unmask another".into(),
            ));
        }
        if 2 * threshold <= max_participants {
            return Err(FederatedError::Invalid(format!(
                "threshold {threshold} is not more than half of {max_participants} participants"
            )));
        }
        if threshold > max_participants {
            return Err(FederatedError::Invalid(format!(
                "threshold {threshold} exceeds the {max_participants} participants allowed"
            )));
        }
        Ok(RoundRules {
            threshold,
            max_participants,
        })
    }

    /// The smallest threshold allowed for `n` participants: a majority, which keeps a
    /// single update hidden from an honest-but-curious server. Against an actively
    /// malicious one, use more than two thirds.
    pub fn majority(n: usize) -> Result<Self> {
        RoundRules::new(n / 2 + 1, n)
    }
}
