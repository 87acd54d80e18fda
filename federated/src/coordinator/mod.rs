//! The coordinator and aggregator of one training job, created for the job and gone
//! with it.
//!
//! It dials every provider's `DoExchange` with a token signed by the job's own key (the
//! key the consumer published on chain when it opened the job), and drives the rounds:
//! local training, then the four secure aggregation phases, each with a deadline. A
//! provider that fails, refuses or misses a deadline is dropped for the rest of the
//! job; the round still completes while at least the threshold remain, and the masks
//! of those who dropped are rebuilt from their shares. The aggregator inside
//! [`crate::Coordinator`] only ever holds masked vectors and their sum.

mod init;
mod link;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use bytes::Bytes;
use futures::future::join_all;
use insitu_compute::SignedApproval;
use insitu_compute::staging::StagedColumn;
use serde::{Deserialize, Serialize};

pub use init::initial_model;
use link::Link;
pub use link::Site;

use crate::dp::DpSettings;
use crate::error::{FederatedError, Result};
use crate::identity::{RecoveryCache, RoundId};
use crate::messages::{KeyAdvert, MaskedInput, SealedShares, SurvivorSignature, UnmaskShares};
use crate::model::Model;
use crate::ring::RingCodec;
use crate::rules::{Neighbours, RoundRules};
use crate::server::Coordinator;
use crate::strategy::{ServerOptimizer, Strategy, combine_plain};
use crate::wire::{self, FromProvider, ToProvider};

/// What one round did, for progress and the job's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    pub round: u32,
    /// Providers whose updates are in the round's sum.
    pub contributors: Vec<Address>,
    /// The total sample count the sum revealed.
    pub samples: u32,
    /// Providers dropped during the round, with why.
    pub dropped: Vec<(Address, String)>,
    pub millis: u64,
    /// Under DP-FedAvg: the ε of (ε, [`crate::dp::DEFAULT_DELTA`])-DP the job has
    /// spent up to and including this round, with each provider's data as the unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
}

/// How the job ended.
#[derive(Debug, Clone)]
pub struct TrainingOutcome {
    pub model: Model,
    pub rounds: Vec<RoundReport>,
}

/// Builder for [`TrainingJob`].
pub struct TrainingJobBuilder {
    job: B256,
    key: PrivateKeySigner,
    chain_id: u64,
    agreements_contract: Address,
    module: Vec<u8>,
    sites: Vec<Site>,
    args: Vec<String>,
    approval: Option<SignedApproval>,
    rounds: u32,
    strategy: Strategy,
    secure: bool,
    threshold: Option<usize>,
    neighbours: Option<usize>,
    clip: f32,
    max_total_samples: u32,
    train_timeout: Duration,
    phase_timeout: Duration,
    initial: Option<Model>,
    dp: Option<(f32, f64)>,
}

impl std::fmt::Debug for TrainingJobBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainingJobBuilder")
            .field("job", &self.job)
            .field("coordinator", &self.key.address())
            .field("sites", &self.sites.len())
            .finish_non_exhaustive()
    }
}

impl TrainingJobBuilder {
    /// Arguments for the training module (labels, learning rate…), passed on every run.
    pub fn with_args(mut self, args: Vec<String>) -> Self {
        self.args = args;
        self
    }

    /// A trusted publisher's approval of the module, for providers that do not list it.
    pub fn with_approval(mut self, approval: Option<SignedApproval>) -> Self {
        self.approval = approval;
        self
    }

    pub fn with_rounds(mut self, rounds: u32) -> Self {
        self.rounds = rounds;
        self
    }

    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Secure aggregation is on by default. Off, providers send plain updates (only those
    /// that allow it), which robust strategies need.
    pub fn with_secure_aggregation(mut self, on: bool) -> Self {
        self.secure = on;
        self
    }

    /// The Shamir threshold: how many providers every phase needs. Default: a majority
    /// of the job's providers.
    pub fn with_threshold(mut self, t: usize) -> Self {
        self.threshold = Some(t);
        self
    }

    /// Masks on a SecAgg+ graph of `degree` neighbours per provider instead of between
    /// every pair: each provider's work then grows with `degree`, not with the number
    /// of providers. Each neighbourhood's secrets need more than two thirds of it.
    pub fn with_neighbours(mut self, degree: usize) -> Self {
        self.neighbours = Some(degree);
        self
    }

    /// Each update value is clipped to `[-clip, clip]` before it is quantised.
    pub fn with_clip(mut self, clip: f32) -> Self {
        self.clip = clip;
        self
    }

    /// The most samples all providers may weigh together in one round; with `clip`, it
    /// sets the fixed-point precision.
    pub fn with_max_total_samples(mut self, n: u32) -> Self {
        self.max_total_samples = n;
        self
    }

    /// How long local training may take each round.
    pub fn with_train_timeout(mut self, d: Duration) -> Self {
        self.train_timeout = d;
        self
    }

    /// How long each secure aggregation phase waits for answers.
    pub fn with_phase_timeout(mut self, d: Duration) -> Self {
        self.phase_timeout = d;
        self
    }

    /// DP-FedAvg: every provider clips its update to L2 norm `clip_norm` and adds its
    /// share of discrete Gaussian noise, so the sum carries noise of deviation
    /// `noise_multiplier · clip_norm`. Needs secure aggregation; every provider then
    /// weighs 1.
    pub fn with_dp(mut self, clip_norm: f32, noise_multiplier: f64) -> Self {
        self.dp = Some((clip_norm, noise_multiplier));
        self
    }

    /// Starts from this model instead of the module's `--mode init` output.
    pub fn with_initial_model(mut self, model: Model) -> Self {
        self.initial = Some(model);
        self
    }

    pub fn build(self) -> Result<TrainingJob> {
        if self.sites.is_empty() {
            return Err(FederatedError::Invalid(
                "a job needs at least one provider".into(),
            ));
        }
        if self.rounds == 0 {
            return Err(FederatedError::Invalid(
                "a job needs at least one round".into(),
            ));
        }
        self.strategy.check(self.secure)?;
        let n = self.sites.len();
        let rules = if self.secure {
            let t = self.threshold.unwrap_or(n / 2 + 1);
            Some(match self.neighbours {
                None => RoundRules::new(t, n)?,
                Some(d) => RoundRules::with_graph(t, n, d, Neighbours::default_threshold(d))?,
            })
        } else {
            None
        };
        let codec = RingCodec::new(self.clip, self.max_total_samples)?;
        let dp = match self.dp {
            None => None,
            Some(_) if !self.secure => {
                return Err(FederatedError::Invalid(
                    "DP-FedAvg splits its noise over the providers and needs secure aggregation"
                        .into(),
                ));
            }
            Some((clip_norm, noise_multiplier)) => {
                let dp = DpSettings {
                    clip_norm,
                    noise_multiplier,
                    participants: u32::try_from(n).unwrap_or(u32::MAX),
                };
                dp.check()?;
                Some(dp)
            }
        };
        let mut seen = BTreeSet::new();
        for s in &self.sites {
            if !seen.insert(s.provider) {
                return Err(FederatedError::Invalid(format!(
                    "provider {} serves two of the job's assets; one provider takes part once",
                    s.provider
                )));
            }
        }
        Ok(TrainingJob {
            job: self.job,
            key: self.key,
            chain_id: self.chain_id,
            agreements_contract: self.agreements_contract,
            module: self.module.into(),
            sites: self.sites,
            args: self.args,
            approval: self.approval,
            rounds: self.rounds,
            strategy: self.strategy,
            rules,
            min_plain: self.threshold.unwrap_or(1),
            codec,
            train_timeout: self.train_timeout,
            phase_timeout: self.phase_timeout,
            initial: self.initial,
            dp,
        })
    }
}

/// One training job, ready to run.
pub struct TrainingJob {
    job: B256,
    key: PrivateKeySigner,
    chain_id: u64,
    agreements_contract: Address,
    module: Arc<[u8]>,
    sites: Vec<Site>,
    args: Vec<String>,
    approval: Option<SignedApproval>,
    rounds: u32,
    strategy: Strategy,
    rules: Option<RoundRules>,
    min_plain: usize,
    codec: RingCodec,
    train_timeout: Duration,
    phase_timeout: Duration,
    initial: Option<Model>,
    dp: Option<DpSettings>,
}

impl std::fmt::Debug for TrainingJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainingJob")
            .field("job", &self.job)
            .field("coordinator", &self.key.address())
            .field("sites", &self.sites.len())
            .field("rounds", &self.rounds)
            .finish_non_exhaustive()
    }
}

/// Progress, as the job goes.
#[derive(Debug, Clone)]
pub enum Progress {
    Joined { provider: Address },
    Refused { site: Site, reason: String },
    Round(RoundReport),
}

/// The live links of a round, keyed by provider.
type Links = BTreeMap<Address, Link>;

impl TrainingJob {
    /// A job `job` (as opened on chain), coordinated by `key` (the coordinator key the
    /// job published), training `module` over `sites`.
    #[allow(clippy::too_many_arguments)]
    pub fn builder(
        job: B256,
        key: PrivateKeySigner,
        chain_id: u64,
        agreements_contract: Address,
        module: Vec<u8>,
        sites: Vec<Site>,
    ) -> TrainingJobBuilder {
        TrainingJobBuilder {
            job,
            key,
            chain_id,
            agreements_contract,
            module,
            sites,
            args: Vec::new(),
            approval: None,
            rounds: 1,
            strategy: Strategy::FedAvg,
            secure: true,
            threshold: None,
            neighbours: None,
            clip: 4.0,
            max_total_samples: 1 << 16,
            train_timeout: Duration::from_secs(600),
            phase_timeout: Duration::from_secs(60),
            initial: None,
            dp: None,
        }
    }

    pub fn coordinator(&self) -> Address {
        self.key.address()
    }

    fn needed(&self) -> usize {
        self.rules.map_or(self.min_plain, |r| r.threshold)
    }

    /// Runs every round and returns the final model. `progress` hears each join, refusal
    /// and finished round.
    pub async fn run(self, mut progress: impl FnMut(Progress)) -> Result<TrainingOutcome> {
        let mut links = self.join_all(&mut progress).await?;
        let mut columns: Option<Vec<StagedColumn>> = None;
        for (provider, cols) in std::mem::take(&mut links.1) {
            match &columns {
                None => columns = Some(cols),
                Some(c) if schema_key(c) == schema_key(&cols) => {}
                Some(_) => {
                    return Err(FederatedError::Invalid(format!(
                        "provider {provider}'s asset has other columns than the rest; \
                         one job trains on assets of one schema"
                    )));
                }
            }
        }
        let mut links = links.0;
        let model = match &self.initial {
            Some(m) => m.clone(),
            None => {
                initial_model(
                    self.module.clone(),
                    &self.args,
                    &columns.unwrap_or_default(),
                )
                .await?
            }
        };
        let mut model = model;
        let mut optimizer = ServerOptimizer::new(self.strategy);
        let mut reports = Vec::new();
        let mut accountant = self
            .dp
            .map(|dp| crate::dp::Accountant::new(&dp, &self.codec, model.parameters()));
        for round in 1..=self.rounds {
            if links.len() < self.needed() {
                return Err(FederatedError::Aborted(format!(
                    "{} providers left before round {round}; the job needs {}",
                    links.len(),
                    self.needed()
                )));
            }
            let started = Instant::now();
            let mut dropped = Vec::new();
            let (contributors, samples, update) = match self.rules {
                Some(rules) => {
                    self.secure_round(round, rules, &model, &mut links, &mut dropped)
                        .await?
                }
                None => {
                    self.plain_round(round, &model, &mut links, &mut dropped)
                        .await?
                }
            };
            let next = optimizer.step(&model.flatten(), &update)?;
            model = model.with_values(&next)?;
            let epsilon = accountant.as_mut().map(|a| {
                a.round(contributors.len());
                a.epsilon(crate::dp::DEFAULT_DELTA)
            });
            let report = RoundReport {
                round,
                contributors,
                samples,
                dropped,
                millis: started.elapsed().as_millis() as u64,
                epsilon,
            };
            tracing::info!(job = %self.job, round, samples, contributors = report.contributors.len(), dropped = report.dropped.len(), "round done");
            progress(Progress::Round(report.clone()));
            reports.push(report);
        }
        let finish = links.values_mut().map(|l| async {
            let _ = l
                .ask(&ToProvider::Finish, Vec::new(), self.phase_timeout)
                .await;
        });
        join_all(finish).await;
        Ok(TrainingOutcome {
            model,
            rounds: reports,
        })
    }

    /// Opens every provider's exchange; a refusal is reported and that provider left out.
    async fn join_all(
        &self,
        progress: &mut impl FnMut(Progress),
    ) -> Result<(Links, Vec<(Address, Vec<StagedColumn>)>)> {
        let opens = self.sites.iter().cloned().map(|site| async move {
            let join = ToProvider::Join {
                job: self.job,
                did: site.did,
                agreement: site.agreement,
                args: self.args.clone(),
                approval: self.approval.clone(),
                max_rounds: self.rounds,
                secure_aggregation: self.rules.is_some(),
                dp: self.dp,
            };
            let opened = async {
                let mut link = Link::open(
                    site.clone(),
                    &self.key,
                    self.chain_id,
                    self.agreements_contract,
                    &join,
                    self.module.to_vec(),
                )
                .await?;
                // Staging the shard happens before the answer: allow the training time.
                match link.recv(self.train_timeout).await? {
                    (FromProvider::Joined { provider, columns }, _)
                        if provider == site.provider =>
                    {
                        Ok((link, columns))
                    }
                    (FromProvider::Joined { provider, .. }, _) => Err(FederatedError::Refused(
                        format!("{} answered as {provider}", site.provider),
                    )),
                    (other, _) => Err(unexpected("joined", &other)),
                }
            }
            .await;
            (site, opened)
        });
        let mut links = BTreeMap::new();
        let mut columns = Vec::new();
        for (site, opened) in join_all(opens).await {
            match opened {
                Ok((link, cols)) => {
                    progress(Progress::Joined {
                        provider: site.provider,
                    });
                    columns.push((site.provider, cols));
                    links.insert(site.provider, link);
                }
                Err(e) => {
                    tracing::warn!(provider = %site.provider, error = %e, "provider did not join");
                    progress(Progress::Refused {
                        site,
                        reason: e.to_string(),
                    });
                }
            }
        }
        if links.len() < self.needed() {
            return Err(FederatedError::Aborted(format!(
                "{} of {} providers joined; the job needs {}",
                links.len(),
                self.sites.len(),
                self.needed()
            )));
        }
        Ok((links, columns))
    }

    /// Sends each addressed provider its message and collects the answers within
    /// `within`. A provider that fails is removed from `links` and reported in `dropped`.
    async fn exchange(
        links: &mut Links,
        messages: BTreeMap<Address, (ToProvider, Vec<u8>)>,
        within: Duration,
        dropped: &mut Vec<(Address, String)>,
    ) -> Vec<(Address, FromProvider, Bytes)> {
        let asks = links
            .iter_mut()
            .filter_map(|(a, l)| messages.get(a).map(|m| (*a, l, m)))
            .map(|(a, l, (m, body))| async move { (a, l.ask(m, body.clone(), within).await) });
        let answers = join_all(asks).await;
        let mut out = Vec::new();
        for (a, answer) in answers {
            match answer {
                Ok((m, body)) => out.push((a, m, body)),
                Err(e) => {
                    tracing::warn!(provider = %a, error = %e, "provider dropped");
                    links.remove(&a);
                    dropped.push((a, e.to_string()));
                }
            }
        }
        out
    }

    async fn secure_round(
        &self,
        round: u32,
        rules: RoundRules,
        model: &Model,
        links: &mut Links,
        dropped: &mut Vec<(Address, String)>,
    ) -> Result<(Vec<Address>, u32, Vec<f32>)> {
        let id = RoundId {
            job: self.job,
            round,
            domain: insitu_ledger::eip712::insitu_domain(self.chain_id, self.agreements_contract),
        };
        let allowed: BTreeSet<Address> = links.keys().copied().collect();
        let mut coordinator = Coordinator::new(
            id,
            rules,
            allowed,
            model.parameters() + 1,
            RecoveryCache::default(),
        )?;
        let start = ToProvider::Round {
            round,
            rules: Some(rules),
            codec: self.codec,
        };
        let body = model.to_ipc()?;
        let layout = model.layout();
        let mut adverts: Vec<KeyAdvert> = Vec::new();
        let msgs = same_to(links.keys().copied(), &start, &body);
        for (a, m, _) in Self::exchange(links, msgs, self.train_timeout, dropped).await {
            match m {
                FromProvider::Advert { advert, layout: l } if l == layout && advert.from == a => {
                    adverts.push(advert)
                }
                other => drop_one(links, dropped, a, unexpected("a key advert", &other)),
            }
        }
        let roster = coordinator.collect_adverts(adverts)?;
        let mut sealed: Vec<SealedShares> = Vec::new();
        let msgs = same_to(
            roster.iter().map(|a| a.from),
            &ToProvider::Roster {
                adverts: roster.clone(),
            },
            &[],
        );
        for (a, m, _) in Self::exchange(links, msgs, self.phase_timeout, dropped).await {
            match m {
                FromProvider::Shares { shares } if shares.iter().all(|s| s.from == a) => {
                    sealed.extend(shares)
                }
                other => drop_one(links, dropped, a, unexpected("shares", &other)),
            }
        }
        let inboxes = coordinator.route_shares(sealed)?;
        let msgs = inboxes
            .into_iter()
            .map(|(to, shares)| (to, (ToProvider::Inbox { shares }, Vec::new())))
            .collect();
        let mut masked: Vec<MaskedInput> = Vec::new();
        for (a, m, body) in Self::exchange(links, msgs, self.phase_timeout, dropped).await {
            match m {
                FromProvider::Masked => match wire::words_from_ipc(&body) {
                    Ok(words) => masked.push(MaskedInput::received(a, words)),
                    Err(e) => drop_one(links, dropped, a, e),
                },
                other => drop_one(links, dropped, a, unexpected("a masked input", &other)),
            }
        }
        let u3 = coordinator.collect_masked(masked)?;
        let msgs = same_to(
            u3.iter().copied(),
            &ToProvider::Survivors {
                survivors: u3.clone(),
            },
            &[],
        );
        let mut signatures: Vec<SurvivorSignature> = Vec::new();
        for (a, m, _) in Self::exchange(links, msgs, self.phase_timeout, dropped).await {
            match m {
                FromProvider::Signature { signature } if signature.from == a => {
                    signatures.push(signature)
                }
                other => drop_one(links, dropped, a, unexpected("a signature", &other)),
            }
        }
        let signatures = coordinator.collect_signatures(signatures)?;
        let msgs = same_to(
            signatures.iter().map(|s| s.from),
            &ToProvider::Signatures {
                signatures: signatures.clone(),
            },
            &[],
        );
        let mut reveals: Vec<UnmaskShares> = Vec::new();
        for (a, m, _) in Self::exchange(links, msgs, self.phase_timeout, dropped).await {
            match m {
                FromProvider::Reveal { reveal } if reveal.from == a => reveals.push(reveal),
                other => drop_one(links, dropped, a, unexpected("revealed shares", &other)),
            }
        }
        let (survivors, sum) = coordinator.finish(reveals)?;
        let (samples, mean) = self.codec.decode_mean(&sum)?;
        Ok((survivors, samples, mean))
    }

    async fn plain_round(
        &self,
        round: u32,
        model: &Model,
        links: &mut Links,
        dropped: &mut Vec<(Address, String)>,
    ) -> Result<(Vec<Address>, u32, Vec<f32>)> {
        let start = ToProvider::Round {
            round,
            rules: None,
            codec: self.codec,
        };
        let body = model.to_ipc()?;
        let msgs = same_to(links.keys().copied(), &start, &body);
        let mut updates = Vec::new();
        let mut contributors = Vec::new();
        for (a, m, body) in Self::exchange(links, msgs, self.train_timeout, dropped).await {
            match m {
                FromProvider::Plain { samples } => match Model::from_ipc(&body) {
                    Ok(u) if u.layout() == model.layout() && u.is_finite() => {
                        updates.push((samples.max(1), u.flatten()));
                        contributors.push(a);
                    }
                    Ok(_) => drop_one(
                        links,
                        dropped,
                        a,
                        FederatedError::Invalid("an update of another layout".into()),
                    ),
                    Err(e) => drop_one(links, dropped, a, e),
                },
                other => drop_one(links, dropped, a, unexpected("an update", &other)),
            }
        }
        if updates.len() < self.min_plain {
            return Err(FederatedError::Aborted(format!(
                "{} updates arrived in round {round}; the job needs {}",
                updates.len(),
                self.min_plain
            )));
        }
        let samples = updates
            .iter()
            .map(|(w, _)| *w)
            .fold(0u32, u32::saturating_add);
        let update = combine_plain(self.strategy, &updates)?;
        Ok((contributors, samples, update))
    }
}

/// One message (and body) for each of `to`.
fn same_to(
    to: impl Iterator<Item = Address>,
    message: &ToProvider,
    body: &[u8],
) -> BTreeMap<Address, (ToProvider, Vec<u8>)> {
    to.map(|a| (a, (message.clone(), body.to_vec()))).collect()
}

fn drop_one(
    links: &mut Links,
    dropped: &mut Vec<(Address, String)>,
    a: Address,
    e: FederatedError,
) {
    tracing::warn!(provider = %a, error = %e, "provider dropped");
    links.remove(&a);
    dropped.push((a, e.to_string()));
}

fn unexpected(wanted: &str, got: &FromProvider) -> FederatedError {
    let kind = serde_json::to_value(got)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_default();
    FederatedError::Phase(format!("expected {wanted}, got {kind}"))
}

fn schema_key(columns: &[StagedColumn]) -> Vec<(String, String)> {
    columns
        .iter()
        .map(|c| (c.name.clone(), c.data_type.clone()))
        .collect()
}
