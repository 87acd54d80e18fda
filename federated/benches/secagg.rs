//! Secure aggregation at scale: 100 clients × 1M float parameters, one round of the
//! real protocol (keys, signatures, sealed shares, masks, unmasking), in one process.
//!
//! Prints, with the baseline measured in the same run:
//! - client masking time (encode + self mask + 99 pairwise masks), against encoding
//!   alone;
//! - server aggregation with 0 % and 10 % dropouts (the dropouts leave after sending
//!   their shares, the costliest place: their pairwise masks must be rebuilt), against
//!   summing the same vectors in the clear;
//! - the server's peak memory beyond the model (peak resident size during the
//!   server's part, over the resident size when it starts);
//! - upload bytes per client against the raw float32 model.
//!
//! Each with every client every other's neighbour (the complete graph), and again on a
//! SecAgg+ graph of degree 20. Flower's SecAgg+ runs the same round, on the same graph
//! (complete, or 21 shares with threshold 15), when its venv exists
//! (federated/benches/flower/README.md), in its simulation engine unless
//! `INSITU_FLOWER_MODE=direct`, and the ratio is printed.
//!
//! `cargo bench -p insitu-federated --bench secagg` (release). Documented in
//! docs/benchmarks.md.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use insitu_federated::{Coordinator, Participant, RecoveryCache, RingCodec, RoundId, RoundRules};

/// A field of /proc/self/status, in bytes.
fn status_bytes(field: &str) -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<usize>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// Resets the process's peak resident size to its current one (Linux: writing 5 to
/// clear_refs), so the next peak read covers only what follows.
fn reset_peak() -> usize {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_bytes("VmRSS:")
}

fn peak_since(base: usize) -> usize {
    status_bytes("VmHWM:").saturating_sub(base)
}

const CLIENTS: usize = 100;
/// Neighbours of each client in the SecAgg+ rounds.
const SPARSE_DEGREE: usize = 20;
const PARAMS: usize = 1_000_000;

fn mib(b: usize) -> f64 {
    b as f64 / (1 << 20) as f64
}

struct Round {
    aggregation: Duration,
    peak_beyond: usize,
    masking: Vec<Duration>,
    upload: Vec<usize>,
    sum: Vec<u32>,
}

fn round(updates: &[Vec<f32>], codec: &RingCodec, rules: RoundRules, dropouts: usize) -> Round {
    let id = RoundId {
        job: B256::repeat_byte(9),
        round: 1,
        domain: insitu_ledger::eip712::insitu_domain(31337, Address::ZERO),
    };
    let cache = RecoveryCache::default();
    let signers: Vec<PrivateKeySigner> = (0..CLIENTS).map(|_| PrivateKeySigner::random()).collect();
    let index: BTreeMap<Address, usize> = signers
        .iter()
        .enumerate()
        .map(|(i, s)| (s.address(), i))
        .collect();
    let mut people: Vec<Participant> = signers
        .iter()
        .map(|s| {
            Participant::new(
                Arc::new(s.clone()),
                s.address(),
                id.clone(),
                rules,
                cache.clone(),
            )
        })
        .collect();
    let allowed: BTreeSet<Address> = index.keys().copied().collect();
    let mut c = Coordinator::new(id, rules, allowed, PARAMS + 1, cache).expect("coordinator");
    let adverts: Vec<_> = people
        .iter()
        .map(|p| p.advertise().expect("advert"))
        .collect();
    let advert_bytes = serde_json::to_vec(&adverts[0]).expect("json").len();
    let roster = c.collect_adverts(adverts).expect("roster");
    let mut sealed = Vec::new();
    let mut share_bytes = vec![0usize; CLIENTS];
    for p in people.iter_mut() {
        let out = p.share_keys(&roster).expect("share");
        share_bytes[index[&p.address()]] = out.iter().map(|s| s.ciphertext.len() + 40).sum();
        sealed.extend(out);
    }
    let inboxes = c.route_shares(sealed).expect("route");
    let mut masked = Vec::new();
    let mut masking = Vec::new();
    let mut upload = vec![0usize; CLIENTS];
    for (to, inbox) in &inboxes {
        let i = index[to];
        if i >= CLIENTS - dropouts {
            continue; // drops after sharing its keys
        }
        let start = Instant::now();
        let encoded = codec.encode(&updates[i], 10).expect("encode");
        let m = people[i].masked_input(inbox, &encoded).expect("mask");
        masking.push(start.elapsed());
        upload[i] = advert_bytes + share_bytes[i] + m.len() * 4;
        masked.push(m);
    }
    // The server's part: collect (sum as they arrive), confirm, unmask.
    let base = reset_peak();
    let start = Instant::now();
    let u3 = c.collect_masked(masked).expect("collect");
    let mut aggregation = start.elapsed();
    let mut sigs = Vec::new();
    for a in &u3 {
        sigs.push(people[index[a]].consistency(&u3).expect("consistency"));
    }
    let start = Instant::now();
    let sigs = c.collect_signatures(sigs).expect("signatures");
    aggregation += start.elapsed();
    let mut reveals = Vec::new();
    for s in &sigs {
        let r = people[index[&s.from]].unmask(&sigs).expect("unmask");
        upload[index[&s.from]] += 65 + serde_json::to_vec(&r).expect("json").len();
        reveals.push(r);
    }
    let start = Instant::now();
    let (_, sum) = c.finish(reveals).expect("finish");
    aggregation += start.elapsed();
    let peak_beyond = peak_since(base);
    Round {
        aggregation,
        peak_beyond,
        masking,
        upload,
        sum,
    }
}

fn main() {
    let codec = RingCodec::new(1.0, 1_000_000).expect("codec");
    let updates: Vec<Vec<f32>> = (0..CLIENTS)
        .map(|i| {
            (0..PARAMS)
                .map(|j| ((i * 31 + j * 17) % 2001) as f32 / 1000.0 - 1.0)
                .collect()
        })
        .collect();
    println!("secure aggregation: {CLIENTS} clients x {PARAMS} float32 parameters");

    // Baselines: encoding alone, and the plain sum of the encoded vectors.
    let start = Instant::now();
    let encoded: Vec<Vec<u32>> = updates
        .iter()
        .map(|u| codec.encode(u, 10).expect("encode"))
        .collect();
    let encode_each = start.elapsed() / CLIENTS as u32;
    let start = Instant::now();
    let mut plain = vec![0u32; PARAMS + 1];
    for e in &encoded {
        RingCodec::add_into(&mut plain, e);
    }
    let plain_sum = start.elapsed();

    let complete = RoundRules::majority(CLIENTS).expect("rules");
    let sparse = RoundRules::sparse(CLIENTS, SPARSE_DEGREE).expect("sparse rules");
    // Flower's graph for each: every client (its default here), or the same degree
    // and neighbourhood threshold as ours (`num_shares` counts the share a client
    // keeps, so it is the degree plus one).
    let flower_sparse = Some((
        SPARSE_DEGREE + 1,
        insitu_federated::Neighbours::default_threshold(SPARSE_DEGREE),
    ));
    let configs = [
        ("0 % dropouts", complete, 0usize, None),
        ("10 % dropouts", complete, CLIENTS / 10, None),
        (
            "SecAgg+ graph of degree 20, 0 % dropouts",
            sparse,
            0,
            flower_sparse,
        ),
        (
            "SecAgg+ graph of degree 20, 10 % dropouts",
            sparse,
            CLIENTS / 10,
            flower_sparse,
        ),
    ];
    for (label, rules, dropouts, flower_graph) in configs {
        let r = round(&updates, &codec, rules, dropouts);
        let mut expect = vec![0u32; PARAMS + 1];
        for e in &encoded[..CLIENTS - dropouts] {
            RingCodec::add_into(&mut expect, e);
        }
        assert_eq!(r.sum, expect, "the secure sum must equal the plain sum");
        let mut m = r.masking.clone();
        m.sort();
        let median = m[m.len() / 2];
        let max = m[m.len() - 1];
        let upload = r.upload[..CLIENTS - dropouts]
            .iter()
            .max()
            .copied()
            .unwrap_or(0);
        let raw = PARAMS * 4;
        println!("\n{label}: the secure sum equals the plain sum bit for bit");
        println!(
            "  client masking      median {:8.1} ms  max {:8.1} ms   (target <= 500 ms)  encoding alone {:6.1} ms",
            median.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            encode_each.as_secs_f64() * 1e3
        );
        println!(
            "  server aggregation  {:8.1} ms   (target <= {} ms)  plain sum {:6.1} ms  ratio {:.1}x",
            r.aggregation.as_secs_f64() * 1e3,
            if dropouts == 0 { 1000 } else { 3000 },
            plain_sum.as_secs_f64() * 1e3,
            r.aggregation.as_secs_f64() / plain_sum.as_secs_f64()
        );
        println!(
            "  server peak memory beyond the model  {:6.1} MiB   (target <= 50 MB; the model is {:.1} MiB)",
            mib(r.peak_beyond.saturating_sub(raw + 4)),
            mib(raw)
        );
        println!(
            "  upload per client   {:.2} MiB against {:.2} MiB raw float32: {:.4}x   (target <= 1.05x)",
            mib(upload),
            mib(raw),
            upload as f64 / raw as f64
        );
        if let Some(flower) = flower_server_seconds(dropouts, flower_graph) {
            println!(
                "  Flower SecAgg+ server ({} mode, same sizes, this run)  {:8.1} ms   insitu is {:.1}x faster   (target >= 10x)",
                flower_mode(),
                flower * 1e3,
                flower / r.aggregation.as_secs_f64()
            );
        }
    }
}

/// How Flower runs: `simulation` (its Ray simulation engine, what the issue asks
/// for; the default) or `direct` (its protocol code driven in one process), from
/// `INSITU_FLOWER_MODE`.
fn flower_mode() -> String {
    std::env::var("INSITU_FLOWER_MODE").unwrap_or_else(|_| "simulation".into())
}

/// Flower's SecAgg+ server time for the same round, measured now by
/// `benches/flower/secaggplus_bench.py` in the venv its README sets up
/// (`INSITU_FLOWER_PYTHON`, default `~/.cache/insitu/flwr-venv/bin/python`). `None`,
/// with the reason printed, when that Python is not installed or the run fails.
/// `graph` is Flower's `num_shares` and `reconstruction_threshold` for a sparse graph,
/// `None` for the complete one.
fn flower_server_seconds(dropouts: usize, graph: Option<(usize, usize)>) -> Option<f64> {
    let python = std::env::var_os("INSITU_FLOWER_PYTHON")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| std::path::Path::new(&h).join(".cache/insitu/flwr-venv/bin/python"))
        })?;
    if !python.exists() {
        println!(
            "  Flower SecAgg+: skipped, {} is missing (see federated/benches/flower/README.md)",
            python.display()
        );
        return None;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/flower/secaggplus_bench.py"
    );
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(script);
    if let Some((shares, threshold)) = graph {
        cmd.args(["--num-shares", &shares.to_string()])
            .args(["--reconstruction-threshold", &threshold.to_string()]);
    }
    let out = cmd
        .args([
            "--clients",
            &CLIENTS.to_string(),
            "--params",
            &PARAMS.to_string(),
        ])
        .args([
            "--dropout-fraction",
            &(dropouts as f64 / CLIENTS as f64).to_string(),
        ])
        .args(["--mode", &flower_mode()])
        .stderr(std::process::Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            println!("  Flower SecAgg+: could not run {}: {e}", python.display());
            return None;
        }
    };
    let line = String::from_utf8_lossy(&out.stdout);
    let json = line
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    let Some(json) = json else {
        println!(
            "  Flower SecAgg+: the script printed no result ({})",
            out.status
        );
        return None;
    };
    if let Some(client) = json["client_masking_seconds_median"].as_f64() {
        println!(
            "  Flower SecAgg+ client masking, median  {:8.1} ms",
            client * 1e3
        );
    }
    json["server_seconds"].as_f64()
}
