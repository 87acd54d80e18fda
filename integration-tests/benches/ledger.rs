//! Order and fulfil latency: `EmbeddedLedger` (revm in-process, state persisted to disk
//! after every transaction) against `RpcLedger` on anvil (the baseline), in the same run.
//!
//! Run: `cargo bench -p insitu-integration-tests --bench ledger`

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{B256, U256};
use anyhow::Result;
use insitu_integration_tests::{CONSUMER, PROVIDER, World, account};
use insitu_ledger::embedded::EmbeddedChain;
use insitu_ledger::{Ledger, RegisterAsset, ServiceOffer, ServiceType};

const ROUNDS: usize = 50;

struct Timings {
    order: Vec<Duration>,
    fulfil: Vec<Duration>,
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn measure(
    provider: Arc<dyn Ledger>,
    consumer: Arc<dyn Ledger>,
    token: alloy::primitives::Address,
) -> Result<Timings> {
    let (did, _) = provider
        .register_asset(RegisterAsset {
            seed: B256::from(rand::random::<[u8; 32]>()),
            metadata_hash: B256::ZERO,
            metadata_url: String::new(),
            providers: vec![provider.account()],
            services: vec![ServiceOffer {
                service_type: ServiceType::Download,
                token: Some(token),
                price: U256::from(10u64),
                access_duration: 3600,
                fulfill_timeout: 3600,
            }],
        })
        .await?;
    let mut t = Timings {
        order: Vec::new(),
        fulfil: Vec::new(),
    };
    // Warm-up, and the one-time ERC-20 approval out of the measured rounds.
    let first = consumer.order(did, 0).await?;
    let ag = provider
        .agreement(first.agreement_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("missing"))?;
    provider.fulfill(&ag).await?;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let ordered = consumer.order(did, 0).await?;
        t.order.push(start.elapsed());
        let ag = provider
            .agreement(ordered.agreement_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("missing"))?;
        let start = Instant::now();
        provider.fulfill(&ag).await?;
        t.fulfil.push(start.elapsed());
    }
    Ok(t)
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (chain, genesis) = EmbeddedChain::open(Some(dir.path()))?;
    chain.mint_test_token(account(CONSUMER).address(), U256::from(1_000_000u64))?;
    let mut embedded = measure(
        Arc::new(chain.ledger(account(PROVIDER).address())?),
        Arc::new(chain.ledger(account(CONSUMER).address())?),
        genesis.test_token,
    )
    .await?;

    let world = World::start().await?;
    world
        .mint(account(CONSUMER).address(), U256::from(1_000_000u64))
        .await?;
    let mut anvil = measure(
        Arc::new(world.ledger(PROVIDER).await?),
        Arc::new(world.ledger(CONSUMER).await?),
        world.token,
    )
    .await?;

    println!("order and fulfil latency, {ROUNDS} rounds each, medians (ERC-20 priced asset)");
    println!("{:<10} {:>14} {:>14}", "", "order", "fulfil");
    let (eo, ef) = (median(&mut embedded.order), median(&mut embedded.fulfil));
    let (ao, af) = (median(&mut anvil.order), median(&mut anvil.fulfil));
    println!(
        "{:<10} {:>11.2} ms {:>11.2} ms",
        "embedded",
        eo.as_secs_f64() * 1e3,
        ef.as_secs_f64() * 1e3
    );
    println!(
        "{:<10} {:>11.2} ms {:>11.2} ms",
        "anvil",
        ao.as_secs_f64() * 1e3,
        af.as_secs_f64() * 1e3
    );
    println!(
        "ratio embedded/anvil: order {:.2}x, fulfil {:.2}x",
        eo.as_secs_f64() / ao.as_secs_f64(),
        ef.as_secs_f64() / af.as_secs_f64()
    );
    Ok(())
}
