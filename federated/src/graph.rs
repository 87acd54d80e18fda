//! Who masks with whom, and who holds whose shares: everyone with everyone, or a sparse
//! SecAgg+ graph (Bell et al., 2020) when the rules carry [`crate::rules::Neighbours`].
//!
//! The sparse graph is a ring: the roster is ordered by a hash of (job, round, address)
//! and each member is joined to the `degree / 2` members on either side. Nobody chooses
//! the order: not the coordinator, and not a participant, whose address is fixed by its
//! agreement before the job opens. A new round gives a new order.
//!
//! Why the neighbourhood threshold must exceed `degree / 2 + 1`: the aggregator holds
//! each masked input separately, so it can add up any group of survivors with no mask
//! joining it to the other survivors. On the ring, such a group is cut off by at least
//! `degree / 2` non-survivors on each side, so its last member has at most
//! `degree / 2 + 1` surviving holders of its self-mask shares (itself and the members
//! before it). Only survivors ever reveal shares (a participant left out of the survivor
//! set refuses to sign it, and reveals nothing unsigned), so that self-mask stays
//! hidden, and so does the group's sum. What can be unmasked is the sum of all
//! survivors, as with everyone masking with everyone.

use alloy::primitives::{Address, keccak256};

use crate::identity::RoundId;
use crate::rules::RoundRules;

/// The neighbourhoods of one round's roster.
#[derive(Debug, Clone)]
pub(crate) struct Graph {
    /// Each member's neighbourhood (itself included), as ascending roster indices;
    /// `None` when everyone is everyone's neighbour.
    hoods: Option<Vec<Vec<usize>>>,
    all: Vec<usize>,
    threshold: usize,
}

impl Graph {
    /// The graph of `roster` (addresses in roster order) under `rules`. A roster no
    /// larger than one neighbourhood is complete, with the round's own threshold.
    pub(crate) fn new(id: &RoundId, roster: &[Address], rules: &RoundRules) -> Graph {
        let n = roster.len();
        let all: Vec<usize> = (0..n).collect();
        let Some(nb) = rules.neighbours.filter(|nb| n > nb.degree + 1) else {
            return Graph {
                hoods: None,
                all,
                threshold: rules.threshold,
            };
        };
        let mut ring: Vec<([u8; 32], usize)> = roster
            .iter()
            .enumerate()
            .map(|(i, a)| (place(id, *a), i))
            .collect();
        ring.sort_unstable();
        let half = nb.degree / 2;
        let mut hoods = vec![Vec::new(); n];
        for (p, &(_, member)) in ring.iter().enumerate() {
            let mut hood: Vec<usize> = (0..=nb.degree)
                .map(|j| ring[(p + n - half + j) % n].1)
                .collect();
            hood.sort_unstable();
            hoods[member] = hood;
        }
        Graph {
            hoods: Some(hoods),
            all,
            threshold: nb.threshold,
        }
    }

    /// Member `i`'s neighbourhood, itself included, as ascending roster indices: who
    /// holds its shares, and (but itself) whom it masks with.
    pub(crate) fn hood(&self, i: usize) -> &[usize] {
        match &self.hoods {
            Some(h) => h.get(i).map_or(&[], Vec::as_slice),
            None => &self.all,
        }
    }

    /// Where `holder` stands in `owner`'s neighbourhood: its share's identifier, less
    /// one. `None` when it holds none of the owner's shares.
    pub(crate) fn position(&self, owner: usize, holder: usize) -> Option<usize> {
        self.hood(owner).binary_search(&holder).ok()
    }

    /// Shares of one neighbourhood's secrets needed to rebuild them.
    pub(crate) fn threshold(&self) -> usize {
        self.threshold
    }
}

/// A member's place on the ring in one round.
fn place(id: &RoundId, who: Address) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(32 + 4 + 20 + 16);
    bytes.extend_from_slice(b"insitu/secagg+/ring");
    bytes.extend_from_slice(id.job.as_slice());
    bytes.extend_from_slice(&id.round.to_be_bytes());
    bytes.extend_from_slice(who.as_slice());
    keccak256(bytes).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::B256;

    fn id() -> RoundId {
        RoundId {
            job: B256::repeat_byte(4),
            round: 2,
            domain: insitu_ledger::eip712::insitu_domain(31337, Address::ZERO),
        }
    }

    fn roster(n: usize) -> Vec<Address> {
        (0..n)
            .map(|i| Address::with_last_byte(i as u8 + 1))
            .collect()
    }

    #[test]
    fn neighbourhoods_are_symmetric_and_of_degree_plus_one() {
        let rules = RoundRules::sparse(50, 8).expect("rules");
        let g = Graph::new(&id(), &roster(50), &rules);
        for i in 0..50 {
            let h = g.hood(i);
            assert_eq!(h.len(), 9, "member {i}");
            assert!(h.contains(&i));
            for &j in h {
                assert!(g.hood(j).contains(&i), "{i} sees {j} but not back");
            }
        }
        assert_eq!(g.threshold(), 7);
        assert_eq!(g.position(3, 3).map(|p| g.hood(3)[p]), Some(3));
    }

    #[test]
    fn a_roster_within_one_neighbourhood_is_complete_with_the_round_threshold() {
        let rules = RoundRules::sparse(9, 8).expect("rules");
        let g = Graph::new(&id(), &roster(9), &rules);
        assert_eq!(g.hood(4), (0..9).collect::<Vec<_>>().as_slice());
        assert_eq!(g.threshold(), 5);
    }

    #[test]
    fn the_ring_changes_with_the_round() {
        let rules = RoundRules::sparse(40, 4).expect("rules");
        let r = roster(40);
        let a = Graph::new(&id(), &r, &rules);
        let mut next = id();
        next.round = 3;
        let b = Graph::new(&next, &r, &rules);
        assert!((0..40).any(|i| a.hood(i) != b.hood(i)));
    }
}
