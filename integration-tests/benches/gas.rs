//! Gas used by an access: `order` (ERC-20 and ETH) and `fulfill`, on a real anvil chain.
//!
//! Baseline, measured in the same run: a plain ERC-20 `transfer` of the same amount,
//! the least any on-chain payment costs. Target: order + fulfill ≤ 250,000 gas.
//!
//! Run: `cargo bench -p insitu-integration-tests --bench gas`

use alloy::primitives::U256;
use anyhow::Result;
use insitu_integration_tests::data::{sample_batches, write_parquet};
use insitu_integration_tests::{CONSUMER, Provider, ProviderOptions, World, account};
use insitu_ledger::bindings::TestToken;
use insitu_ledger::{Ledger, ServiceOffer, ServiceType};

const TARGET: u64 = 250_000;

#[tokio::main]
async fn main() -> Result<()> {
    let world = World::start().await?;
    let provider = Provider::start(&world, ProviderOptions::default()).await?;
    let file = provider.path("gas.parquet");
    write_parquet(&file, &sample_batches(10)?)?;
    let price = U256::from(10u64.pow(18));
    world
        .mint(account(CONSUMER).address(), price * U256::from(10))
        .await?;
    let offer = |token| ServiceOffer {
        service_type: ServiceType::Download,
        token,
        price,
        access_duration: 3600,
        fulfill_timeout: 600,
    };
    let erc20 = provider
        .publish(&file, "erc20", offer(Some(world.token)))
        .await?;
    let eth = provider.publish(&file, "eth", offer(None)).await?;
    let consumer = world.ledger(CONSUMER).await?;

    // Warm the consumer's and owner's token balances the same way for every measurement.
    let baseline = {
        let rpc = alloy::providers::ProviderBuilder::new()
            .wallet(alloy::network::EthereumWallet::from(account(CONSUMER)))
            .connect_http(world.rpc_url().parse()?);
        let token = TestToken::new(world.token, &rpc);
        let receipt = token
            .transfer(account(5).address(), price)
            .send()
            .await?
            .get_receipt()
            .await?;
        receipt.gas_used
    };

    // Each payment type is sold twice: the first sale pays for storage slots that go from
    // zero to non-zero (the escrow's, the owner's and the fee receiver's first balance);
    // the repeat sale is the steady state of a provider that has sold before.
    let mut rows = Vec::new();
    for (name, did) in [("ERC-20", erc20), ("ETH", eth)] {
        for sale in ["first sale", "repeat sale"] {
            let ordered = consumer.order(did, 0).await?;
            let agreement = provider
                .ledger
                .agreement(ordered.agreement_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("agreement missing"))?;
            let fulfilled = provider.ledger.fulfill(&agreement).await?;
            rows.push((
                format!("{name}, {sale}"),
                ordered.tx.gas_used,
                fulfilled.gas_used,
                ordered.approval.map(|a| a.gas_used),
            ));
        }
    }

    println!("gas per paid access (anvil, solc 0.8.37, optimizer 10000 runs)");
    println!("baseline: plain ERC-20 transfer = {baseline} gas");
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>12} {:>8}",
        "payment", "order", "fulfill", "pair", "vs transfer", "target"
    );
    for (name, order, fulfill, approval) in rows {
        let pair = order + fulfill;
        println!(
            "{:<22} {:>9} {:>9} {:>9} {:>11.2}x {:>8}",
            name,
            order,
            fulfill,
            pair,
            pair as f64 / baseline as f64,
            if pair <= TARGET { "met" } else { "MISSED" }
        );
        if let Some(a) = approval {
            println!("         (ERC-20 approve sent before this order: {a} gas, not counted)");
        }
    }
    Ok(())
}
