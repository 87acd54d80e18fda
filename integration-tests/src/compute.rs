//! Compute fixtures: the example algorithm, the attack modules, and a provider with a
//! compute-only asset of `../shared/data`.

use std::path::PathBuf;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use anyhow::{Context, Result};
use insitu_compute::{ComputeClient, JobId, JobRecord, JobState, SandboxLimits, algorithm_hash};
use insitu_ledger::{AgreementId, Did, Ledger, ServiceOffer, ServiceType};

use crate::provider::{ComputeOptions, token_with_scope};
use crate::{CONSUMER, OTHER_CONSUMER, Provider, ProviderOptions, World, account, workspace_root};

/// Price of the compute service, in test tokens (paid into escrow on order).
pub const COMPUTE_PRICE: u64 = 2_500_000;

/// The example algorithm: the Rust crate `examples/algorithms/summary` built for
/// wasm32-wasip1 (path in `INSITU_EXAMPLE_WASM`, set by scripts/test.sh), or, where that
/// target is missing, the hand-written fallback `examples/algorithms/fallback/input_size.wat`.
/// Returns the module and whether it is the Rust build.
pub fn example_algorithm() -> Result<(Vec<u8>, bool)> {
    if let Some(p) = std::env::var_os("INSITU_EXAMPLE_WASM") {
        let p = PathBuf::from(p);
        if p.exists() {
            return Ok((
                std::fs::read(&p).with_context(|| p.display().to_string())?,
                true,
            ));
        }
    }
    eprintln!("INSITU_EXAMPLE_WASM is not built; using the .wat fallback algorithm");
    let p = workspace_root().join("examples/algorithms/fallback/input_size.wat");
    Ok((
        std::fs::read(&p).with_context(|| p.display().to_string())?,
        false,
    ))
}

/// One of the modules of the escape suite, `integration-tests/tests/attacks/compute/<name>.wat`.
pub fn attack_module(name: &str) -> Result<Vec<u8>> {
    let p = workspace_root().join(format!(
        "integration-tests/tests/attacks/compute/{name}.wat"
    ));
    std::fs::read(&p).with_context(|| p.display().to_string())
}

/// `sha256:<hex>` of a module.
pub fn hash_of(module: &[u8]) -> String {
    algorithm_hash(module).1
}

/// The attack modules the escape suite runs. They are allowed by hash on purpose: the
/// sandbox, not the allow-list, must contain them.
pub const ATTACKS: &[&str] = &[
    "socket",
    "read_outside",
    "infinite_loop",
    "memory_bomb",
    "output_quota",
    "stdout_flood",
    "bad_output",
];

/// A provider with compute on and a compute-only asset (breast_cancer.csv).
#[derive(Debug)]
pub struct ComputeScene {
    pub world: World,
    pub provider: Provider,
    /// The compute-only asset.
    pub asset: Did,
    pub example: Vec<u8>,
    pub example_is_rust: bool,
}

impl ComputeScene {
    /// Starts anvil and the provider; `limits` are the sandbox's.
    pub async fn start(limits: SandboxLimits, lineage: bool) -> Result<ComputeScene> {
        Self::start_with(limits, lineage, vec![]).await
    }

    /// Like [`ComputeScene::start`], also trusting `publishers`' approvals.
    pub async fn start_with(
        limits: SandboxLimits,
        lineage: bool,
        publishers: Vec<Address>,
    ) -> Result<ComputeScene> {
        Self::start_on(limits, lineage, publishers, None).await
    }

    /// Like [`ComputeScene::start_with`], running jobs on `backend`.
    pub async fn start_on(
        limits: SandboxLimits,
        lineage: bool,
        publishers: Vec<Address>,
        backend: Option<std::sync::Arc<dyn insitu_compute::ComputeBackend>>,
    ) -> Result<ComputeScene> {
        let (example, example_is_rust) = example_algorithm()?;
        let mut allow = vec![hash_of(&example)];
        for a in ATTACKS {
            allow.push(hash_of(&attack_module(a)?));
        }
        let world = World::start().await?;
        let provider = Provider::start(
            &world,
            ProviderOptions {
                lineage,
                compute: Some(ComputeOptions {
                    allow,
                    publishers,
                    limits,
                    backend,
                }),
                ..ProviderOptions::default()
            },
        )
        .await?;
        let data = provider.path("breast_cancer.csv");
        crate::data::sklearn_table("breast_cancer.csv", &data)?;
        let asset = provider
            .publish(
                &data,
                "breast cancer (compute only)",
                ServiceOffer {
                    service_type: ServiceType::Compute,
                    token: Some(world.token),
                    price: U256::from(COMPUTE_PRICE),
                    access_duration: 3600,
                    fulfill_timeout: 600,
                },
            )
            .await?;
        for who in [CONSUMER, OTHER_CONSUMER] {
            world
                .mint(account(who).address(), U256::from(COMPUTE_PRICE * 10))
                .await?;
        }
        Ok(ComputeScene {
            world,
            provider,
            asset,
            example,
            example_is_rust,
        })
    }

    /// `who` orders service 0 of `did`.
    pub async fn order(&self, who: u32, did: Did) -> Result<AgreementId> {
        let ledger = self.world.ledger(who).await?;
        Ok(ledger.order(did, 0).await?.agreement_id)
    }

    /// A compute client for `who` (token scope `compute`).
    pub async fn client(&self, who: u32) -> Result<ComputeClient> {
        let token = token_with_scope(
            &self.world,
            &account(who),
            self.provider.address,
            insitu_compute::COMPUTE_SCOPE,
        )?;
        Ok(ComputeClient::connect(&self.provider.endpoint, &token, None).await?)
    }

    /// Submits `module` on the compute asset under `agreement`.
    pub async fn submit(
        &self,
        client: &mut ComputeClient,
        agreement: AgreementId,
        module: &[u8],
    ) -> std::result::Result<JobRecord, insitu_compute::ComputeError> {
        client
            .submit(&insitu_compute::SubmitRequest {
                did: self.asset,
                agreement,
                algorithm: module.to_vec(),
                args: vec![],
                approval: None,
            })
            .await
    }

    /// Directories of jobs still on the provider's disk (staged inputs, raw outputs).
    pub fn job_dirs(&self) -> Result<usize> {
        let dir = self.provider.path("compute/jobs");
        Ok(std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0))
    }
}

/// Polls `status` until the job ends (at most `limit`), as `insitu compute status
/// --follow` does. Returns the states seen, in order, and the final record.
pub async fn follow(
    client: &mut ComputeClient,
    job: JobId,
    limit: Duration,
) -> Result<(Vec<JobState>, JobRecord)> {
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    loop {
        let status = client.status(job).await?;
        if seen.last() != Some(&status.job.state) {
            seen.push(status.job.state);
        }
        if status.job.state.is_terminal() {
            return Ok((seen, status.job));
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "job {job} did not end in {limit:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The owner of `did` on chain.
pub async fn owner_of(world: &World, did: Did) -> Result<Address> {
    let ledger = world.ledger(CONSUMER).await?;
    Ok(ledger.asset(did).await?.context("unknown asset")?.owner)
}
