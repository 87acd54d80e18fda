//! `insitu train …`: federated training across providers, coordinated from here.
//!
//! `start` is the job's coordinator and aggregator for as long as the job runs: it
//! orders the agreements, opens the job on chain with a coordinator key made for this
//! job alone (and dropped with it), drives every round over Flight, and publishes the
//! model. The job's record (`<data-dir>/train/<job>.json`) is rewritten after every
//! round, so `status` and `result` read it from another terminal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use insitu_federated::dp::DEFAULT_DELTA;
use insitu_federated::{Progress, RoundReport, Site, Strategy, TrainingJob};
use insitu_ledger::{AgreementId, Did, Ledger, RegisterAsset, ServiceType};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::args::{ChainArgs, TrainCommand, TrainStartArgs};
use crate::output::outln;

/// What this machine records of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobRecord {
    job: B256,
    coordinator: Address,
    consumer: Address,
    assets: Vec<Did>,
    agreements: Vec<AgreementId>,
    rounds_planned: u32,
    strategy: String,
    secure_aggregation: bool,
    state: String,
    rounds: Vec<RoundReport>,
    refused: Vec<(Address, String)>,
    error: Option<String>,
    model_file: Option<PathBuf>,
    model_did: Option<Did>,
    model_sha256: Option<B256>,
}

fn record_path(chain: &ChainArgs, job: B256) -> PathBuf {
    chain.data_dir.join("train").join(format!("{job}.json"))
}

fn save(chain: &ChainArgs, r: &JobRecord) -> Result<()> {
    let path = record_path(chain, r.job);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(r)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn load(chain: &ChainArgs, job: B256) -> Result<JobRecord> {
    let path = record_path(chain, job);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "no record of job {job} in {} (status is read on the machine that ran `train start`)",
            path.display()
        )
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))
}

pub async fn run(cmd: TrainCommand) -> Result<()> {
    match cmd {
        TrainCommand::Start(a) => start(*a).await,
        TrainCommand::Status { job, json, chain } => {
            let job: B256 = job.parse().context("a job id is 0x and 64 hex digits")?;
            let record = load(&chain, job)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&record)?);
                return Ok(());
            }
            outln!(
                "job {}  {}  round {}/{}  strategy {}{}",
                record.job,
                record.state,
                record.rounds.len(),
                record.rounds_planned,
                record.strategy,
                if record.secure_aggregation {
                    ", secure aggregation"
                } else {
                    ", plain updates"
                }
            );
            for r in &record.rounds {
                let privacy = r
                    .epsilon
                    .map(|e| format!(", DP spent ε = {e:.3} (δ = {DEFAULT_DELTA:e})"))
                    .unwrap_or_default();
                outln!(
                    "  round {:>3}: {} providers, {} samples, {} dropped, {} ms{privacy}",
                    r.round,
                    r.contributors.len(),
                    r.samples,
                    r.dropped.len(),
                    r.millis
                );
            }
            for (who, why) in &record.refused {
                outln!("  refused by {who}: {why}");
            }
            if let Some(e) = &record.error {
                outln!("  error: {e}");
            }
            if let (Some(did), Some(hash)) = (record.model_did, record.model_sha256) {
                outln!("  model {did} (sha256 {hash})");
            }
            Ok(())
        }
        TrainCommand::Result { job, out, chain } => {
            let job: B256 = job.parse().context("a job id is 0x and 64 hex digits")?;
            let ledger = super::connect(&chain, None).await?;
            let on_chain = ledger
                .training_job(job)
                .await?
                .with_context(|| format!("training job {job} is not on this chain"))?;
            let Some((did, hash)) = on_chain.model else {
                bail!("job {job} has published no model yet (see `insitu train status {job}`)");
            };
            outln!("{did}");
            eprintln!("model of job {job}: asset {did}, sha256 {hash} (on chain)");
            if let Ok(record) = load(&chain, job)
                && let Some(file) = record.model_file
            {
                let bytes = std::fs::read(&file)
                    .with_context(|| format!("reading the model file {}", file.display()))?;
                let actual = B256::from(<[u8; 32]>::from(sha2::Sha256::digest(&bytes)));
                if actual != hash {
                    bail!(
                        "the model file {} does not match the hash on chain",
                        file.display()
                    );
                }
                eprintln!("model file: {} (matches the chain)", file.display());
                if let Some(out) = out {
                    std::fs::write(&out, &bytes)
                        .with_context(|| format!("writing {}", out.display()))?;
                    eprintln!("wrote {}", out.display());
                }
            } else if out.is_some() {
                bail!("this machine holds no model file for job {job}");
            }
            Ok(())
        }
    }
}

/// The endpoint overrides given as `DID=URL`.
fn endpoints(given: &[String]) -> Result<Vec<(Did, String)>> {
    given
        .iter()
        .map(|e| {
            let (did, url) = e
                .split_once('=')
                .with_context(|| format!("--endpoint '{e}' is not DID=URL"))?;
            Ok((did.parse()?, url.to_string()))
        })
        .collect()
}

async fn start(a: TrainStartArgs) -> Result<()> {
    let strategy = Strategy::parse(&a.strategy)?;
    let module = std::fs::read(&a.algorithm)
        .with_context(|| format!("reading the training module {}", a.algorithm.display()))?;
    let approval = a
        .approval
        .as_deref()
        .map(|p| -> Result<insitu_compute::SignedApproval> {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the approval {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not an approval", p.display()))
        })
        .transpose()?;
    let dids = a
        .assets
        .iter()
        .map(|d| d.parse::<Did>())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if !a.agreement_ids.is_empty() && a.agreement_ids.len() != dids.len() {
        bail!(
            "{} agreements for {} assets: give one per asset, in the same order, or none",
            a.agreement_ids.len(),
            dids.len()
        );
    }
    let overrides = endpoints(&a.endpoints)?;
    let ca = a
        .ca_cert
        .as_deref()
        .map(std::fs::read)
        .transpose()
        .context("reading --ca-cert")?;
    let signer = super::load_key(&a.key)?;
    let consumer = signer.address();
    let ledger = super::connect(&a.chain, Some(signer)).await?;

    let mut sites = Vec::new();
    for (i, did) in dids.iter().enumerate() {
        let asset = ledger
            .asset(*did)
            .await?
            .with_context(|| format!("asset {did} is not registered on this chain"))?;
        let provider = super::provider_of(ledger.as_ref(), *did, None).await?;
        let agreement = match a.agreement_ids.get(i) {
            Some(text) => text.parse::<AgreementId>()?,
            None => {
                let index = asset
                    .services
                    .iter()
                    .position(|s| s.service_type == ServiceType::Train)
                    .with_context(|| format!("asset {did} offers no train service"))?;
                let price = asset.services[index].price;
                let outcome = ledger.order(*did, index as u64).await?;
                eprintln!(
                    "ordered the train service of {did} (price {price}): agreement {} in tx {}",
                    outcome.agreement_id, outcome.tx.hash
                );
                outcome.agreement_id
            }
        };
        let endpoint = overrides
            .iter()
            .find(|(d, _)| d == did)
            .map(|(_, u)| u.clone())
            .unwrap_or_else(|| asset.metadata_url.clone());
        if endpoint.is_empty() {
            bail!("asset {did} has no endpoint on chain; give one with --endpoint {did}=URL");
        }
        sites.push(Site {
            did: *did,
            agreement,
            endpoint,
            provider,
            ca_pem: ca.clone(),
        });
    }

    // A key for this job alone: providers answer only tokens it signs, and it is
    // dropped when the job ends.
    let coordinator = PrivateKeySigner::random();
    let job = B256::from(rand::random::<[u8; 32]>());
    let agreements: Vec<AgreementId> = sites.iter().map(|s| s.agreement).collect();
    let opened = ledger
        .open_training(
            job,
            coordinator.address(),
            a.coordinator_endpoint.clone(),
            agreements.clone(),
        )
        .await?;
    eprintln!(
        "opened training job {job} with coordinator {} in tx {}",
        coordinator.address(),
        opened.hash
    );
    outln!("{job}");
    let mut record = JobRecord {
        job,
        coordinator: coordinator.address(),
        consumer,
        assets: dids.clone(),
        agreements,
        rounds_planned: a.rounds,
        strategy: a.strategy.clone(),
        secure_aggregation: !a.no_secure_aggregation,
        state: "running".into(),
        rounds: Vec::new(),
        refused: Vec::new(),
        error: None,
        model_file: None,
        model_did: None,
        model_sha256: None,
    };
    save(&a.chain, &record)?;

    let mut builder = TrainingJob::builder(
        job,
        coordinator,
        ledger.chain_id(),
        ledger.contracts().agreements,
        module,
        sites,
    )
    .with_args(a.module_args.clone())
    .with_approval(approval)
    .with_rounds(a.rounds)
    .with_strategy(strategy)
    .with_secure_aggregation(!a.no_secure_aggregation)
    .with_clip(a.clip)
    .with_max_total_samples(a.max_samples)
    .with_train_timeout(super::parse_duration(&a.train_timeout)?)
    .with_phase_timeout(super::parse_duration(&a.phase_timeout)?);
    if let Some(t) = a.threshold {
        builder = builder.with_threshold(t);
    }
    if let Some(d) = a.neighbours {
        builder = builder.with_neighbours(d);
    }
    if let (Some(c), Some(z)) = (a.dp_clip, a.dp_noise) {
        builder = builder.with_dp(c, z);
    }
    let training = builder.build()?;

    let bar = ProgressBar::new(u64::from(a.rounds));
    bar.set_style(
        ProgressStyle::with_template("{spinner} round {pos}/{len} {bar:30} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar.set_message("joining providers");
    let chain_args = a.chain.clone();
    let mut progress_record = record.clone();
    let outcome = training
        .run(|p| match p {
            Progress::Joined { provider } => bar.println(format!("joined: {provider}")),
            Progress::Refused { site, reason } => {
                bar.println(format!("refused by {}: {reason}", site.provider));
                progress_record.refused.push((site.provider, reason));
            }
            Progress::Round(r) => {
                bar.set_position(u64::from(r.round));
                bar.set_message(format!(
                    "{} providers, {} samples",
                    r.contributors.len(),
                    r.samples
                ));
                for (who, why) in &r.dropped {
                    bar.println(format!("round {}: dropped {who}: {why}", r.round));
                }
                progress_record.rounds.push(r);
                if let Err(e) = save(&chain_args, &progress_record) {
                    bar.println(format!("warning: could not record the round: {e:#}"));
                }
            }
        })
        .await;
    bar.finish_and_clear();
    record.rounds = progress_record.rounds;
    record.refused = progress_record.refused;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            record.state = "failed".into();
            record.error = Some(e.to_string());
            save(&a.chain, &record)?;
            return Err(e).context(format!("training job {job}"));
        }
    };
    let bytes = outcome.model.to_ipc()?;
    let hash = B256::from(<[u8; 32]>::from(sha2::Sha256::digest(&bytes)));
    let file = record_path(&a.chain, job).with_extension("model.arrow");
    write_model(&file, &bytes)?;
    if let Some(out) = &a.out {
        write_model(out, &bytes)?;
    }
    record.model_file = Some(file.clone());
    record.model_sha256 = Some(hash);
    record.state = "publishing".into();
    save(&a.chain, &record)?;
    let did = publish(ledger.as_ref(), job, hash).await?;
    record.model_did = Some(did);
    record.state = "succeeded".into();
    save(&a.chain, &record)?;
    let last = outcome.rounds.last();
    eprintln!(
        "trained {} rounds; the last summed {} samples from {} providers",
        outcome.rounds.len(),
        last.map_or(0, |r| r.samples),
        last.map_or(0, |r| r.contributors.len())
    );
    if let Some(e) = last.and_then(|r| r.epsilon) {
        eprintln!(
            "DP-FedAvg spent ε = {e:.3} at δ = {DEFAULT_DELTA:e}, each provider's data the unit"
        );
    }
    eprintln!(
        "model {did} (sha256 {hash}, {} parameters) in {}",
        outcome.model.parameters(),
        file.display()
    );
    Ok(())
}

fn write_model(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing the model {}", path.display()))
}

/// Registers the model as an asset the consumer owns, its content hash as the asset's
/// metadata hash, and records it as the job's model on chain.
async fn publish(ledger: &dyn Ledger, job: B256, hash: B256) -> Result<Did> {
    let (did, tx) = ledger
        .register_asset(RegisterAsset {
            seed: job,
            metadata_hash: hash,
            metadata_url: format!("insitu-train:{job}"),
            providers: Vec::new(),
            services: Vec::new(),
        })
        .await
        .context("registering the model as your asset")?;
    eprintln!("registered the model as {did} in tx {}", tx.hash);
    let tx = ledger
        .publish_model(job, did, hash)
        .await
        .context("recording the model on the job")?;
    eprintln!("recorded the model's hash on job {job} in tx {}", tx.hash);
    Ok(did)
}
