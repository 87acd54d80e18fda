//! The rules of a round every party checks: the Shamir threshold, the most
//! participants, and, optionally, a sparse neighbourhood graph (SecAgg+).
//!
//! A threshold of half the participants or fewer would let a coordinator split the
//! participants into two groups, each large enough to unmask, and show each a different
//! story about who dropped out; so `2t > n` is required, for the job's largest `n`, and
//! a participant refuses a roster larger than that. The same `t` counts the survivor
//! signatures of the consistency round, with or without a graph.
//!
//! With a graph ([`Neighbours`]) each participant shares its secrets and masks only
//! with its `degree` neighbours, so its work grows with `log n`, not `n`, and a round
//! can hold more participants than a Shamir share has identifiers. The secrets are then
//! split among the `degree + 1` members of a neighbourhood with their own threshold,
//! which must exceed `degree / 2 + 1`: see `graph.rs` for why that keeps every
//! neighbourhood joined to the rest, so the aggregator can only ever unmask the sum of
//! all survivors.

use crate::crypto::MAX_PARTICIPANTS;
use crate::error::{FederatedError, Result};

/// Most participants in a round with a neighbourhood graph. Beyond it the roster (every
/// participant checks every advert's signature) outweighs the masks.
pub const MAX_SPARSE_PARTICIPANTS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RawRules")]
pub struct RoundRules {
    /// Participants needed at every phase, and survivor signatures needed to unmask.
    /// Without a graph, also the Shamir threshold.
    pub threshold: usize,
    pub max_participants: usize,
    /// The SecAgg+ neighbourhood graph, or `None` for everyone masking with everyone.
    pub neighbours: Option<Neighbours>,
}

/// A sparse graph: each participant is joined to `degree` others and its secrets are
/// split among those and itself, any `threshold` of which rebuild them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Neighbours {
    pub degree: usize,
    pub threshold: usize,
}

impl Neighbours {
    /// The default neighbourhood threshold: more than two thirds of the `degree + 1`
    /// members, which leaves room for colluders beyond the `degree / 2 + 2` floor.
    pub fn default_threshold(degree: usize) -> usize {
        2 * (degree + 1) / 3 + 1
    }
}

#[derive(serde::Deserialize)]
struct RawRules {
    threshold: usize,
    max_participants: usize,
    #[serde(default)]
    neighbours: Option<Neighbours>,
}

impl TryFrom<RawRules> for RoundRules {
    type Error = FederatedError;
    fn try_from(r: RawRules) -> Result<Self> {
        match r.neighbours {
            None => RoundRules::new(r.threshold, r.max_participants),
            Some(n) => {
                RoundRules::with_graph(r.threshold, r.max_participants, n.degree, n.threshold)
            }
        }
    }
}

impl RoundRules {
    /// Everyone masks with everyone: `threshold` of at most 255 participants.
    pub fn new(threshold: usize, max_participants: usize) -> Result<Self> {
        Self::checked(threshold, max_participants, MAX_PARTICIPANTS)?;
        Ok(RoundRules {
            threshold,
            max_participants,
            neighbours: None,
        })
    }

    fn checked(threshold: usize, max_participants: usize, most: usize) -> Result<()> {
        if max_participants > most {
            return Err(FederatedError::Invalid(format!(
                "{max_participants} participants; a round takes at most {most}"
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
        Ok(())
    }

    /// The smallest threshold allowed for `n` participants: a majority, which keeps a
    /// single update hidden from an honest-but-curious server. Against an actively
    /// malicious one, use more than two thirds.
    pub fn majority(n: usize) -> Result<Self> {
        RoundRules::new(n / 2 + 1, n)
    }

    /// A round of up to `n` participants (at most [`MAX_SPARSE_PARTICIPANTS`]) on a
    /// SecAgg+ graph of `degree` neighbours each, with the default thresholds: a
    /// majority of `n` overall, and more than two thirds of each neighbourhood.
    pub fn sparse(n: usize, degree: usize) -> Result<Self> {
        RoundRules::with_graph(n / 2 + 1, n, degree, Neighbours::default_threshold(degree))
    }

    /// A round of up to `max_participants` on a graph of `degree` neighbours each:
    /// `threshold` participants are needed at every phase, and any `hood_threshold` of
    /// a neighbourhood (`degree + 1` members) rebuild one of its secrets.
    pub fn with_graph(
        threshold: usize,
        max_participants: usize,
        degree: usize,
        hood_threshold: usize,
    ) -> Result<Self> {
        Self::checked(threshold, max_participants, MAX_SPARSE_PARTICIPANTS)?;
        if degree < 4 || !degree.is_multiple_of(2) {
            return Err(FederatedError::Invalid(format!(
                "a neighbourhood degree must be even and at least 4, not {degree}"
            )));
        }
        if degree + 1 > MAX_PARTICIPANTS {
            return Err(FederatedError::Invalid(format!(
                "a neighbourhood of {} is more than a share has identifiers ({MAX_PARTICIPANTS})",
                degree + 1
            )));
        }
        // An end of a run of survivors cut off by dropouts has at most degree/2 + 1
        // holders left (itself and its neighbours on one side): a threshold above that
        // means no cut-off group can be unmasked on its own.
        if hood_threshold < degree / 2 + 2 || hood_threshold > degree + 1 {
            return Err(FederatedError::Invalid(format!(
                "a neighbourhood threshold must be between {} and {} for degree {degree}, not {hood_threshold}",
                degree / 2 + 2,
                degree + 1
            )));
        }
        Ok(RoundRules {
            threshold,
            max_participants,
            neighbours: Some(Neighbours {
                degree,
                threshold: hood_threshold,
            }),
        })
    }
}
