//! Step 7 of `insitu demo`: compute to the data. Alice runs an algorithm next to the
//! customer table in the provider's WASI sandbox; its output becomes an asset she owns,
//! which she can read and Bob cannot.
//!
//! The algorithm is the hand-written fallback example (`input_size.wat`, the input's
//! size in bytes), embedded so the demo needs no wasm toolchain.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use anyhow::{Result, bail};
use insitu_catalog::AssetStore;
use insitu_compute::{
    AllowList, ComputeActions, ComputeClient, ComputeService, JobState, JobStore, SubmitRequest,
    WasmBackend,
};
use insitu_ledger::{Did, Ledger, ServiceOffer, ServiceType};
use insitu_policy::{AccessClaims, PolicyEngine, sign_access_token};

use super::demo::{Person, Storefront, short_hash};

/// The demo's algorithm: reads `/data/input.arrow`, writes `/out/summary.csv`.
pub(crate) const ALGORITHM: &str =
    include_str!("../../../examples/algorithms/fallback/input_size.wat");

/// The compute service of the demo's provider, allowing only [`ALGORITHM`].
pub(crate) async fn service(
    engine: Arc<PolicyEngine>,
    catalog: &AssetStore,
    work_dir: PathBuf,
    endpoint: &str,
) -> Result<ComputeActions> {
    let jobs = JobStore::open(catalog.pool().clone(), false).await?;
    let allow =
        AllowList::new().with_hash(&insitu_compute::algorithm_hash(ALGORITHM.as_bytes()).1)?;
    let compute = ComputeService::builder(
        engine,
        catalog.clone(),
        jobs,
        Arc::new(WasmBackend::new()?),
        work_dir,
    )
    .with_allow_list(allow)
    .with_lineage(true)
    .with_metadata_url(endpoint)
    .build()?;
    compute.recover().await?;
    Ok(ComputeActions::new(compute))
}

fn compute_token(shop: &Storefront, who: &Person) -> Result<String> {
    Ok(sign_access_token(
        &who.signer,
        &AccessClaims {
            provider: shop.provider,
            chain_id: shop.chain_id,
            verifying_contract: shop.agreements,
            issued_at: super::unix_now(),
            lifetime: Duration::from_secs(600),
            scope: insitu_compute::COMPUTE_SCOPE.into(),
        },
    )?)
}

/// Runs the step: `asset` has a free compute service.
pub(crate) async fn run(shop: &Storefront, alice: &Person, bob: &Person, asset: Did) -> Result<()> {
    crate::output::outln!(
        "\n7. {} runs an algorithm where customer lives (WASI sandbox): only its output leaves",
        alice.name
    );
    let order = alice.ledger.order(asset, 0).await?;
    crate::output::outln!(
        "   {} orders compute on customer  agreement {}",
        alice.name,
        short_hash(order.agreement_id)
    );
    let mut client =
        ComputeClient::connect(&shop.endpoint, &compute_token(shop, alice)?, None).await?;
    let started = Instant::now();
    let job = client
        .submit(&SubmitRequest {
            did: asset,
            agreement: order.agreement_id,
            algorithm: ALGORITHM.as_bytes().to_vec(),
            args: vec![],
            approval: None,
        })
        .await?;
    let done = loop {
        let s = client.status(job.id).await?;
        if s.job.state.is_terminal() {
            break s.job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if done.state != JobState::Succeeded {
        bail!("the demo's compute job {}: {:?}", done.state, done.error);
    }
    let [result] = done.results.as_slice() else {
        bail!(
            "the demo's compute job published {} results",
            done.results.len()
        );
    };
    let owner = alice
        .ledger
        .asset(*result)
        .await?
        .map(|a| a.owner)
        .unwrap_or_default();
    crate::output::outln!(
        "   job {} {} in {} ms ({}): result {} owned by {}",
        &job.id.to_string()[..8],
        done.state,
        started.elapsed().as_millis(),
        &job.algorithm[..23],
        short_hash(result),
        if owner == alice.address {
            alice.name
        } else {
            "someone else (a bug)"
        }
    );
    let own = alice.ledger.order(*result, 0).await?;
    let (rows, _) = shop.download(alice, *result, own.agreement_id).await?;
    crate::output::outln!("   {} reads her result: {rows} row", alice.name);
    let theirs = bob.ledger.order(*result, 0).await?;
    match shop.download(bob, *result, theirs.agreement_id).await {
        Ok(_) => bail!("bob was served alice's compute result: this is a bug"),
        Err(e) => crate::output::outln!("   {} reads it with his own agreement: {e}", bob.name),
    }
    Ok(())
}

/// A compute-only offer, free.
pub(crate) fn offer() -> ServiceOffer {
    ServiceOffer {
        service_type: ServiceType::Compute,
        token: None,
        price: U256::ZERO,
        access_duration: 24 * 3600,
        fulfill_timeout: 3600,
    }
}
