//! Exactness, dropouts, privacy and refusals of one round, over the real protocol.

use alloy::primitives::B256;

use crate::sim::{DropAt, Simulation};
use crate::{FederatedError, RingCodec, RoundRules};

fn rules(n: usize) -> RoundRules {
    RoundRules::majority(n).expect("rules")
}

const PHASES: [DropAt; 5] = [
    DropAt::Advertise,
    DropAt::ShareKeys,
    DropAt::MaskedInput,
    DropAt::Consistency,
    DropAt::Unmask,
];

/// `n` encoded updates of `len` parameters, different for everyone.
fn inputs(n: usize, len: usize) -> Vec<Vec<u32>> {
    let codec = RingCodec::new(1.0, 1_000_000).expect("codec");
    (0..n)
        .map(|i| {
            let update: Vec<f32> = (0..len)
                .map(|j| (((i * 7919 + j * 104_729) % 2001) as f32 / 1000.0) - 1.0)
                .collect();
            codec.encode(&update, 10 + i as u32).expect("encode")
        })
        .collect()
}

fn plain_sum(inputs: &[Vec<u32>], who: &[usize]) -> Vec<u32> {
    let mut sum = vec![0u32; inputs[0].len()];
    for &i in who {
        RingCodec::add_into(&mut sum, &inputs[i]);
    }
    sum
}

/// Everyone in the sum who should be: those who sent a masked input.
fn expected_survivors(n: usize, sim: &Simulation) -> Vec<usize> {
    (0..n)
        .filter(|i| sim.drops.get(i).is_none_or(|d| *d > DropAt::MaskedInput))
        .collect()
}

fn check(n: usize, t: usize, len: usize, drops: &[(usize, DropAt)]) {
    let xs = inputs(n, len);
    let mut sim = Simulation::new(RoundRules::new(t, n).expect("rules"), B256::repeat_byte(7));
    for &(i, at) in drops {
        sim = sim.drop_at(i, at);
    }
    let out = sim
        .run(&xs)
        .unwrap_or_else(|e| panic!("n={n} t={t} drops={drops:?}: {e}"));
    let want = expected_survivors(n, &sim);
    assert_eq!(out.survivors, want, "n={n} drops={drops:?}");
    assert_eq!(
        out.sum,
        plain_sum(&xs, &want),
        "n={n} t={t} drops={drops:?}: the secure sum is not the plain sum"
    );
}

#[test]
fn the_secure_sum_equals_the_plain_sum_bit_for_bit_with_dropouts_in_every_phase() {
    for (n, len) in [(3usize, 257usize), (5, 257), (20, 129), (100, 33)] {
        let t = n / 2 + 1;
        let most = n - t;
        check(n, t, len, &[]);
        // The most dropouts the threshold allows, all in one phase…
        for at in PHASES {
            let drops: Vec<_> = (0..most).map(|i| (n - 1 - i, at)).collect();
            check(n, t, len, &drops);
        }
        // …and spread over every phase.
        let spread: Vec<_> = (0..most).map(|i| (i * 2 % n, PHASES[i % 5])).collect();
        check(n, t, len, &spread);
    }
}

#[test]
fn one_dropout_past_the_threshold_aborts_the_round_with_a_reason() {
    let (n, t) = (5, 3);
    let xs = inputs(n, 16);
    for at in PHASES {
        let mut sim = Simulation::new(RoundRules::new(t, n).expect("rules"), B256::repeat_byte(1));
        for i in 0..=(n - t) {
            sim = sim.drop_at(i, at);
        }
        match sim.run(&xs) {
            Err(FederatedError::Aborted(why)) => assert!(why.contains("threshold"), "{why}"),
            other => panic!("{at:?}: expected an abort, got {other:?}"),
        }
    }
}

#[test]
fn the_decoded_secure_sum_is_fedavg_of_the_survivors() {
    let codec = RingCodec::new(1.0, 1_000).expect("codec");
    let updates = [
        vec![0.5f32, -0.5, 0.25],
        vec![0.1, 0.2, 0.3],
        vec![-1.0, 1.0, 0.0],
    ];
    let weights = [100u32, 300, 600];
    let xs: Vec<Vec<u32>> = updates
        .iter()
        .zip(weights)
        .map(|(u, w)| codec.encode(u, w).expect("encode"))
        .collect();
    let out = Simulation::new(rules(3), B256::ZERO)
        .run(&xs)
        .expect("round");
    let (total, mean) = codec.decode_mean(&out.sum).expect("decode");
    assert_eq!(total, 1000);
    for (k, m) in mean.iter().enumerate() {
        let want: f32 = updates
            .iter()
            .zip(weights)
            .map(|(u, w)| u[k] * w as f32)
            .sum::<f32>()
            / 1000.0;
        assert!((m - want).abs() < 1e-4, "parameter {k}: {m} vs {want}");
    }
}

/// What the aggregator receives from one participant must look uniform, whatever the
/// update: here an all-zero update, whose masked words are tested for uniformity over
/// 256 buckets (chi-square, 255 degrees of freedom; the 99.9th percentile is 330.5).
#[test]
fn a_single_masked_input_is_indistinguishable_from_uniform() {
    let n = 3;
    let len = 1 << 16;
    let codec = RingCodec::new(1.0, 1000).expect("codec");
    let zero = codec.encode(&vec![0.0; len - 1], 1).expect("encode");
    let xs = vec![zero; n];
    let out = Simulation::new(rules(3), B256::repeat_byte(3))
        .run(&xs)
        .expect("round");
    for masked in &out.masked {
        let mut buckets = [0u64; 256];
        for w in masked.words() {
            buckets[(w >> 24) as usize] += 1;
            buckets[(w & 0xff) as usize] += 1;
        }
        let total: u64 = buckets.iter().sum();
        let expect = total as f64 / 256.0;
        let chi2: f64 = buckets
            .iter()
            .map(|&b| (b as f64 - expect).powi(2) / expect)
            .sum();
        assert!(chi2 < 330.5, "chi-square {chi2} for {}", masked.from());
        // And it is not the update: no word of an all-zero input survives as zero
        // more often than chance (about 16 of 65,536 words).
        let zeros = masked.words().iter().filter(|w| **w == 0).count();
        assert!(zeros < 16, "{zeros} zero words");
    }
}

mod refusals {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use alloy::primitives::{Address, B256};
    use alloy::signers::local::PrivateKeySigner;

    use crate::{Coordinator, FederatedError, Participant, RecoveryCache, RoundId, RoundRules};

    pub(super) fn round(job: u8) -> RoundId {
        RoundId {
            job: B256::repeat_byte(job),
            round: 1,
            domain: insitu_ledger::eip712::insitu_domain(31337, Address::ZERO),
        }
    }

    pub(super) fn people(n: usize, id: &RoundId, cache: &RecoveryCache) -> Vec<Participant> {
        (0..n)
            .map(|_| {
                let s = PrivateKeySigner::random();
                Participant::new(
                    Arc::new(s.clone()),
                    s.address(),
                    id.clone(),
                    RoundRules::majority(n.max(3)).expect("rules"),
                    cache.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn a_participant_without_an_agreement_is_left_out_of_the_roster() {
        let id = round(1);
        let cache = RecoveryCache::default();
        let ps = people(4, &id, &cache);
        // The fourth holds no training agreement.
        let allowed: BTreeSet<Address> = ps[..3].iter().map(|p| p.address()).collect();
        let mut c = Coordinator::new(id, RoundRules::new(3, 4).expect("rules"), allowed, 8, cache)
            .expect("coordinator");
        let adverts = ps.iter().map(|p| p.advertise().expect("advert")).collect();
        let roster = c.collect_adverts(adverts).expect("roster");
        assert_eq!(roster.len(), 3);
        assert!(roster.iter().all(|a| a.from != ps[3].address()));
    }

    #[test]
    fn keys_not_signed_by_their_identity_are_refused() {
        let id = round(2);
        let cache = RecoveryCache::default();
        let mut ps = people(3, &id, &cache);
        let mut adverts: Vec<_> = ps.iter().map(|p| p.advertise().expect("advert")).collect();
        // Someone swaps in their own masking key under participant 0's signature.
        adverts[0].masking_key = adverts[1].masking_key;
        let err = ps[2].share_keys(&adverts).expect_err("a forged roster");
        assert!(matches!(err, FederatedError::Refused(_)), "{err}");
        // A signature made for another job does not carry over either.
        let other = people(1, &round(3), &cache);
        let mut foreign = other[0].advertise().expect("advert");
        let mut good: Vec<_> = ps.iter().map(|p| p.advertise().expect("advert")).collect();
        foreign.from = good[0].from;
        good[0] = foreign;
        let err = ps[1].share_keys(&good).expect_err("a foreign signature");
        assert!(err.to_string().contains("signed by"), "{err}");
        // And the coordinator drops such adverts before anyone sees them.
        let allowed: BTreeSet<Address> = ps.iter().map(|p| p.address()).collect();
        let mut c = Coordinator::new(id, RoundRules::new(2, 3).expect("rules"), allowed, 8, cache)
            .expect("coordinator");
        let roster = c.collect_adverts(good).expect("roster of the others");
        assert_eq!(roster.len(), 2);
    }

    /// A coordinator that adds identities of its own to a round would hold shares of
    /// everyone's secrets; a participant admits only the providers of the job.
    #[test]
    fn a_roster_naming_someone_outside_the_job_is_refused() {
        let id = round(9);
        let cache = RecoveryCache::default();
        let honest = people(3, &id, &cache);
        let sybil = people(1, &id, &cache).remove(0);
        let members = Arc::new(honest.iter().map(|p| p.address()).collect::<BTreeSet<_>>());
        let mut honest: Vec<Participant> = honest
            .into_iter()
            .map(|p| p.with_members(members.clone()))
            .collect();
        let adverts: Vec<_> = honest
            .iter()
            .map(|p| p.advertise().expect("advert"))
            .collect();
        let mut forged = adverts[..2].to_vec();
        forged.push(sybil.advertise().expect("advert"));
        let err = honest[0]
            .share_keys(&forged)
            .expect_err("a stranger is refused");
        assert!(matches!(err, FederatedError::Refused(_)), "{err}");
        assert!(
            err.to_string().contains("none of the job's agreements"),
            "{err}"
        );
        honest[1].share_keys(&adverts).expect("a roster of members");
    }

    /// A coordinator that tells participants different things about the round (a codec
    /// that flattens the others' updates, say) is caught: every advert carries the hash
    /// of what its sender was told, and a roster must agree on it.
    #[test]
    fn a_roster_told_another_round_configuration_is_refused() {
        let id = round(10);
        let cache = RecoveryCache::default();
        let mut ps: Vec<Participant> = people(3, &id, &cache)
            .into_iter()
            .enumerate()
            .map(|(i, p)| p.with_config([u8::from(i == 2); 32]))
            .collect();
        let adverts: Vec<_> = ps.iter().map(|p| p.advertise().expect("advert")).collect();
        let err = ps[0].share_keys(&adverts).expect_err("told otherwise");
        assert!(
            err.to_string().contains("another model, codec or rules"),
            "{err}"
        );
        // The config is signed: rewriting it in transit breaks the signature.
        let mut forged = adverts.clone();
        forged[2].config = [0; 32];
        let err = ps[1].share_keys(&forged).expect_err("forged");
        assert!(err.to_string().contains("signed by"), "{err}");
    }

    #[test]
    fn a_survivor_set_that_leaves_out_a_sender_or_is_too_small_is_not_signed() {
        let id = round(4);
        let cache = RecoveryCache::default();
        let mut ps = people(3, &id, &cache);
        let adverts: Vec<_> = ps.iter().map(|p| p.advertise().expect("advert")).collect();
        let mut sealed = Vec::new();
        for p in ps.iter_mut() {
            sealed.extend(p.share_keys(&adverts).expect("share"));
        }
        let me = ps[0].address();
        let inbox: Vec<_> = sealed.iter().filter(|s| s.to == me).cloned().collect();
        ps[0].masked_input(&inbox, &[1, 2, 3]).expect("mask");
        let others: Vec<Address> = ps[1..].iter().map(|p| p.address()).collect();
        let err = ps[0].consistency(&others).expect_err("left out");
        assert!(err.to_string().contains("leaves out"), "{err}");
        let err = ps[0].consistency(&[me]).expect_err("too small");
        assert!(matches!(err, FederatedError::Aborted(_)), "{err}");
    }
}

mod malicious_coordinator {
    use alloy::primitives::Address;

    use super::refusals::{people, round};
    use crate::{FederatedError, RecoveryCache, RoundRules};

    /// A coordinator that asks a participant for a second masked input (with a smaller
    /// inbox, after learning masks) or a second survivor signature (on another set)
    /// could unmask one update; every step runs once, in order.
    #[test]
    fn every_step_runs_once_and_in_order() {
        let cache = RecoveryCache::default();
        let mut ps = people(3, &round(5), &cache);
        let adverts: Vec<_> = ps.iter().map(|p| p.advertise().expect("advert")).collect();
        // Out of order: masking before sharing.
        assert!(matches!(
            ps[0].masked_input(&[], &[1]),
            Err(FederatedError::Phase(_))
        ));
        let mut sealed = Vec::new();
        for p in ps.iter_mut() {
            sealed.extend(p.share_keys(&adverts).expect("share"));
        }
        assert!(matches!(
            ps[0].share_keys(&adverts),
            Err(FederatedError::Phase(_))
        ));
        let me = ps[0].address();
        let inbox: Vec<_> = sealed.iter().filter(|s| s.to == me).cloned().collect();
        ps[0].masked_input(&inbox, &[1, 2]).expect("mask");
        let fewer: Vec<_> = inbox.iter().take(2).cloned().collect();
        assert!(matches!(
            ps[0].masked_input(&fewer, &[1, 2]),
            Err(FederatedError::Phase(_))
        ));
        let all: Vec<Address> = {
            let mut a: Vec<Address> = ps.iter().map(|p| p.address()).collect();
            a.sort();
            a
        };
        ps[0].consistency(&all).expect("sign");
        assert!(matches!(
            ps[0].consistency(&all[..2]),
            Err(FederatedError::Phase(_))
        ));
    }

    #[test]
    fn a_threshold_of_half_or_less_is_refused() {
        assert!(RoundRules::new(2, 4).is_err());
        assert!(RoundRules::new(50, 100).is_err());
        assert!(RoundRules::new(51, 100).is_ok());
        assert!(RoundRules::new(1, 1).is_err());
        assert!(
            RoundRules::new(200, 300).is_err(),
            "more than 255 participants"
        );
    }
}

mod sparse {
    use std::collections::BTreeSet;

    use alloy::primitives::{Address, B256};

    use super::{PHASES, inputs, plain_sum};
    use crate::graph::Graph;
    use crate::identity::RoundId;
    use crate::sim::{DropAt, Simulation};
    use crate::{FederatedError, RoundRules};

    /// On a SecAgg+ graph the sum is still bit-exact, with dropouts in every phase up to
    /// what one neighbourhood tolerates (`degree + 1 - threshold`, wherever they fall),
    /// and for more participants than a Shamir share has identifiers.
    #[test]
    fn the_sum_on_a_neighbourhood_graph_is_exact_with_dropouts_in_every_phase() {
        for (n, degree, len) in [(40usize, 8usize, 65usize), (300, 20, 17)] {
            let rules = RoundRules::sparse(n, degree).expect("rules");
            let hood = rules.neighbours.expect("a graph");
            let tolerated = degree + 1 - hood.threshold;
            let xs = inputs(n, len);
            let mut sim = Simulation::new(rules, B256::repeat_byte(11));
            for i in 0..tolerated {
                sim = sim.drop_at(i * 7 % n, PHASES[i % PHASES.len()]);
            }
            let out = sim
                .run(&xs)
                .unwrap_or_else(|e| panic!("n={n} degree={degree}: {e}"));
            let want: Vec<usize> = (0..n)
                .filter(|i| sim.drops.get(i).is_none_or(|d| *d > DropAt::MaskedInput))
                .collect();
            assert_eq!(out.survivors, want);
            assert_eq!(out.sum, plain_sum(&xs, &want), "n={n}: not the plain sum");
        }
    }

    #[test]
    fn graph_rules_are_checked() {
        assert!(RoundRules::sparse(1000, 20).is_ok());
        assert!(RoundRules::sparse(1000, 7).is_err(), "odd degree");
        assert!(RoundRules::sparse(1000, 2).is_err(), "too small");
        assert!(
            RoundRules::sparse(1000, 300).is_err(),
            "more than 255 in a hood"
        );
        assert!(
            RoundRules::sparse(20_000, 20).is_err(),
            "too many participants"
        );
        // A neighbourhood threshold at degree/2 + 1 would let a cut-off run unmask.
        assert!(RoundRules::with_graph(51, 100, 10, 6).is_err());
        assert!(RoundRules::with_graph(51, 100, 10, 7).is_ok());
        assert!(
            RoundRules::with_graph(50, 100, 10, 7).is_err(),
            "global majority"
        );
        let json = serde_json::json!({
            "threshold": 51, "max_participants": 100,
            "neighbours": {"degree": 10, "threshold": 6}
        });
        assert!(serde_json::from_value::<RoundRules>(json).is_err());
    }

    /// The argument of `graph.rs`, checked exhaustively on small rings and at random on
    /// larger ones: whenever every survivor's self-mask can be rebuilt from surviving
    /// holders, the survivors are one connected group, so no sum smaller than all of
    /// theirs can be unmasked.
    #[test]
    fn whenever_every_survivor_can_be_unmasked_the_survivors_are_connected() {
        let id = RoundId {
            job: B256::repeat_byte(2),
            round: 1,
            domain: insitu_ledger::eip712::insitu_domain(31337, Address::ZERO),
        };
        // Whether `alive` could be unmasked while cut into separate groups.
        let split = |g: &Graph, alive: &BTreeSet<usize>| -> bool {
            let rebuildable = alive
                .iter()
                .all(|&u| g.hood(u).iter().filter(|h| alive.contains(h)).count() >= g.threshold());
            if !rebuildable || alive.is_empty() {
                return false;
            }
            // Connected components of the survivors.
            let start = *alive.iter().next().expect("one");
            let mut seen = BTreeSet::from([start]);
            let mut todo = vec![start];
            while let Some(u) = todo.pop() {
                for &v in g.hood(u) {
                    if alive.contains(&v) && seen.insert(v) {
                        todo.push(v);
                    }
                }
            }
            &seen != alive
        };
        // Every subset of a 14-member ring with degree 4 (threshold 4).
        let n = 14;
        let roster: Vec<Address> = (0..n)
            .map(|i| Address::with_last_byte(i as u8 + 1))
            .collect();
        let g = Graph::new(
            &id,
            &roster,
            &RoundRules::with_graph(8, n, 4, 4).expect("rules"),
        );
        let subsets =
            || (0u32..(1 << n)).map(move |mask| (0..n).filter(|i| mask & (1 << i) != 0).collect());
        assert!(subsets().all(|alive: BTreeSet<usize>| !split(&g, &alive)));
        // The bound is tight: one less, which the rules refuse, lets a group be cut off.
        let loose = RoundRules {
            neighbours: Some(crate::Neighbours {
                degree: 4,
                threshold: 3,
            }),
            ..RoundRules::with_graph(8, n, 4, 4).expect("rules")
        };
        let g3 = Graph::new(&id, &roster, &loose);
        assert!(subsets().any(|alive: BTreeSet<usize>| split(&g3, &alive)));
        // Random survivor sets, with runs of dropouts, on a 120-member ring of degree 10.
        let n = 120;
        let roster: Vec<Address> = (0..n)
            .map(|i| Address::with_last_byte(i as u8 + 1))
            .collect();
        let g = Graph::new(&id, &roster, &RoundRules::sparse(n, 10).expect("rules"));
        for trial in 0..2000u64 {
            let alive: BTreeSet<usize> = (0..n)
                .filter(|&i| {
                    let h =
                        (i as u64 / (1 + trial % 7)).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ trial;
                    h.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 61 != 0
                })
                .collect();
            assert!(
                !split(&g, &alive),
                "trial {trial}: a cut-off group could be unmasked"
            );
        }
    }

    /// A coordinator routing shares from outside a participant's neighbourhood (to make
    /// it mask with someone the graph does not join it to) is refused.
    #[test]
    fn shares_from_a_non_neighbour_are_refused() {
        use std::sync::Arc;

        use alloy::signers::local::PrivateKeySigner;

        use crate::{Participant, RecoveryCache};

        let id = super::refusals::round(8);
        let cache = RecoveryCache::default();
        let n = 12;
        let rules = RoundRules::sparse(n, 4).expect("rules");
        let mut ps: Vec<Participant> = (0..n)
            .map(|_| {
                let s = PrivateKeySigner::random();
                Participant::new(
                    Arc::new(s.clone()),
                    s.address(),
                    id.clone(),
                    rules,
                    cache.clone(),
                )
            })
            .collect();
        let adverts: Vec<_> = ps.iter().map(|p| p.advertise().expect("advert")).collect();
        let mut sealed = Vec::new();
        for p in ps.iter_mut() {
            sealed.extend(p.share_keys(&adverts).expect("share"));
        }
        // Each sends its 5 neighbours (itself included) shares, not all 12.
        assert_eq!(sealed.len(), n * 5);
        let me = ps[0].address();
        let mut inbox: Vec<_> = sealed.iter().filter(|s| s.to == me).cloned().collect();
        assert_eq!(inbox.len(), 5);
        let senders: BTreeSet<Address> = inbox.iter().map(|s| s.from).collect();
        let stranger = ps
            .iter()
            .map(|p| p.address())
            .find(|a| !senders.contains(a))
            .expect("a non-neighbour");
        let mut forged = inbox[0].clone();
        forged.from = stranger;
        inbox.push(forged);
        let err = ps[0].masked_input(&inbox, &[1, 2, 3]).expect_err("refused");
        assert!(matches!(err, FederatedError::Refused(_)), "{err}");
        assert!(err.to_string().contains("not a neighbour"), "{err}");
    }
}
