//! One job's session on a provider: join (every check), then rounds of local training
//! and the participant's secure aggregation steps, in the order the coordinator drives
//! them. Any failure ends the session with a status; the coordinator counts this
//! provider as dropped, and the keys of an unfinished round die with the session.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use alloy::primitives::{Address, B256};
use arrow_flight::FlightData;
use futures::StreamExt;
use insitu_compute::SignedApproval;
use insitu_ledger::{AgreementId, Did};
use insitu_policy::{Action, Decision, Principal};
use sha2::Digest;
use tokio::sync::mpsc::Sender;
use tonic::Status;

use super::{Shared, local, members, status};
use crate::dp::DpSettings;
use crate::error::{FederatedError, Result};
use crate::identity::{RecoveryCache, RoundId};
use crate::model::Model;
use crate::participant::Participant;
use crate::ring::RingCodec;
use crate::rules::RoundRules;
use crate::wire::{self, FromProvider, ToProvider};
use insitu_flight::ExchangeStream;

type Outbox = Sender<std::result::Result<FlightData, Status>>;

/// What a joined session holds.
struct Session {
    job: B256,
    module: Arc<[u8]>,
    args: Vec<String>,
    max_rounds: u32,
    secure: bool,
    dp: Option<DpSettings>,
    dir: PathBuf,
    rows: u64,
    last_round: u32,
    seen_models: BTreeSet<[u8; 32]>,
    /// The providers of the job's agreements: the only identities a roster may name.
    members: Arc<BTreeSet<Address>>,
    /// The distinct assets under the job's agreements.
    assets: usize,
    round: Option<Round>,
    /// The job's consumer, for whom this provider trains.
    consumer: Address,
    /// The training module's `sha256:` hash.
    algorithm: String,
    /// Updates sent (masked or, without secure aggregation, plain) and their bytes:
    /// everything that left this provider about its data.
    updates: u64,
    bytes_sent: u64,
}

impl Session {
    fn sent(&mut self, bytes: usize) {
        self.updates += 1;
        self.bytes_sent += bytes as u64;
    }
}

/// The secure aggregation state of the round under way.
struct Round {
    participant: Participant,
    encoded: Vec<u32>,
}

/// Removes a session's files however it ends.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if self.0.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.0)
        {
            tracing::warn!(dir = %self.0.display(), error = %e, "could not remove a training session's files");
        }
    }
}

pub(crate) async fn serve(
    shared: Arc<Shared>,
    principal: Principal,
    mut incoming: ExchangeStream,
    tx: Outbox,
) {
    let dir = shared.work_dir.join(format!(
        "session-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let _guard = DirGuard(dir.clone());
    let result = run(&shared, &principal, &mut incoming, &tx, dir).await;
    if let Err(e) = result {
        tracing::info!(coordinator = %principal.consumer, error = %e, "training session ended");
        let _ = tx.send(Err(status(e))).await;
    }
}

async fn next(incoming: &mut ExchangeStream) -> Result<Option<(ToProvider, bytes::Bytes)>> {
    match incoming.next().await {
        None => Ok(None),
        Some(Err(s)) => Err(FederatedError::Unavailable(format!(
            "the coordinator's stream failed: {}",
            s.message()
        ))),
        Some(Ok(data)) => wire::unframe(data).map(Some),
    }
}

async fn reply(tx: &Outbox, message: &FromProvider, body: Vec<u8>) -> Result<()> {
    tx.send(Ok(wire::frame(message, body)?))
        .await
        .map_err(|_| FederatedError::Unavailable("the coordinator left".into()))
}

async fn run(
    shared: &Shared,
    principal: &Principal,
    incoming: &mut ExchangeStream,
    tx: &Outbox,
    dir: PathBuf,
) -> Result<()> {
    let Some((first, body)) = next(incoming).await? else {
        return Ok(());
    };
    let ToProvider::Join {
        job,
        did,
        agreement,
        args,
        approval,
        max_rounds,
        secure_aggregation,
        dp,
    } = first
    else {
        return Err(FederatedError::Phase(
            "a training exchange starts with join".into(),
        ));
    };
    let mut session = join(
        shared,
        principal,
        JoinRequest {
            job,
            did,
            agreement,
            args,
            approval,
            max_rounds,
            secure: secure_aggregation,
            dp,
            module: body.to_vec(),
        },
        dir,
    )
    .await?;
    let staged = session.dir.join("shard");
    let manifest = shared
        .compute
        .stage_asset(did, &session.args, &staged)
        .await
        .map_err(|e| {
            // The detail may name the asset's storage; it stays in this provider's log.
            tracing::warn!(%did, kind = compute_kind(&e), "staging a training shard failed");
            FederatedError::Unavailable("this provider could not stage the asset".into())
        })?;
    session.rows = manifest.inputs.iter().map(|i| i.rows).sum();
    let columns = manifest
        .inputs
        .into_iter()
        .flat_map(|i| i.columns)
        .collect();
    reply(
        tx,
        &FromProvider::Joined {
            provider: shared.signer.address(),
            columns,
        },
        Vec::new(),
    )
    .await?;
    tracing::info!(%job, %did, %agreement, rows = session.rows, "joined a training job");

    // Lineage is "later", never "no": a run that cannot be recorded still trains.
    let lineage = shared
        .compute
        .training_run(job, did, agreement, session.consumer, &session.algorithm)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(%job, kind = compute_kind(&e), "could not name the training run's input");
            None
        });
    if let Some(l) = &lineage {
        l.started().await;
    }
    let ended = rounds(shared, &mut session, incoming, tx).await;
    if let Some(l) = &lineage {
        match &ended {
            Ok(true) => l.completed(session.updates, session.bytes_sent).await,
            Ok(false) => l.abandoned(session.updates, session.bytes_sent).await,
            Err(e) => l.failed(&e.to_string()).await,
        }
    }
    ended.map(|_| ())
}

/// The job's rounds, as the coordinator drives them. `Ok(true)` when it finished the
/// job, `Ok(false)` when it left without doing so.
async fn rounds(
    shared: &Shared,
    session: &mut Session,
    incoming: &mut ExchangeStream,
    tx: &Outbox,
) -> Result<bool> {
    let job = session.job;
    while let Some((message, body)) = next(incoming).await? {
        match message {
            ToProvider::Round {
                round,
                rules,
                codec,
            } => start_round(shared, session, round, rules, codec, &body, tx).await?,
            ToProvider::Roster { adverts } => {
                let shares = current(session)?.participant.share_keys(&adverts)?;
                reply(tx, &FromProvider::Shares { shares }, Vec::new()).await?;
            }
            ToProvider::Inbox { shares } => {
                let r = current(session)?;
                let masked = r.participant.masked_input(&shares, &r.encoded)?;
                r.encoded.fill(0);
                let body = wire::words_to_ipc(masked.words())?;
                session.sent(body.len());
                reply(tx, &FromProvider::Masked, body).await?;
            }
            ToProvider::Survivors { survivors } => {
                let signature = current(session)?.participant.consistency(&survivors)?;
                reply(tx, &FromProvider::Signature { signature }, Vec::new()).await?;
            }
            ToProvider::Signatures { signatures } => {
                let reveal = current(session)?.participant.unmask(&signatures)?;
                session.round = None;
                reply(tx, &FromProvider::Reveal { reveal }, Vec::new()).await?;
            }
            ToProvider::Finish => {
                reply(tx, &FromProvider::Finished, Vec::new()).await?;
                tracing::info!(%job, rounds = session.last_round, "training job finished here");
                return Ok(true);
            }
            ToProvider::Join { .. } => {
                return Err(FederatedError::Phase("this exchange already joined".into()));
            }
        }
    }
    Ok(false)
}

fn current(session: &mut Session) -> Result<&mut Round> {
    session
        .round
        .as_mut()
        .ok_or_else(|| FederatedError::Phase("no secure aggregation round is under way".into()))
}

struct JoinRequest {
    job: B256,
    did: Did,
    agreement: AgreementId,
    args: Vec<String>,
    approval: Option<SignedApproval>,
    max_rounds: u32,
    secure: bool,
    dp: Option<DpSettings>,
    module: Vec<u8>,
}

/// Every check before this provider does anything for a job. Fails closed: an
/// unreadable chain refuses like a wrong answer.
async fn join(
    shared: &Shared,
    principal: &Principal,
    req: JoinRequest,
    dir: PathBuf,
) -> Result<Session> {
    let ledger = shared.engine.ledger();
    let unavailable = |e: insitu_ledger::LedgerError| {
        FederatedError::Unavailable(format!("reading the training job on chain: {e}"))
    };
    let job = ledger
        .training_job(req.job)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| {
            FederatedError::Refused(format!("training job {} is not on chain", req.job))
        })?;
    if principal.consumer != job.coordinator {
        return Err(FederatedError::Refused(format!(
            "the token is signed by {}, not by the coordinator key job {} published",
            principal.consumer, req.job
        )));
    }
    if ledger
        .training_job_of(req.agreement)
        .await
        .map_err(unavailable)?
        != Some(req.job)
    {
        return Err(FederatedError::Refused(format!(
            "agreement {} is not committed to training job {}",
            req.agreement, req.job
        )));
    }
    let (members, assets) = members::job_members(ledger.as_ref(), req.job).await?;
    if let Some(dp) = &req.dp {
        dp.check()?;
        // Noise split over more providers than the job has would leave each too little.
        if dp.participants as usize > assets {
            return Err(FederatedError::Refused(format!(
                "DP noise split over {} providers in a job over {assets} assets",
                dp.participants
            )));
        }
        if !req.secure {
            return Err(FederatedError::Invalid(
                "DP-FedAvg's noise is split over the providers and needs secure aggregation".into(),
            ));
        }
    }
    if !req.secure && !shared.allow_plain_updates {
        return Err(FederatedError::Refused(
            "this provider sends its updates only under secure aggregation".into(),
        ));
    }
    if req.max_rounds == 0 || req.max_rounds > shared.max_rounds {
        return Err(FederatedError::Refused(format!(
            "{} rounds asked; this provider trains 1 to {} rounds a job",
            req.max_rounds, shared.max_rounds
        )));
    }
    let consumer = Principal {
        consumer: job.consumer,
        ..principal.clone()
    };
    match shared
        .engine
        .decide(&consumer, Action::Train, req.did, req.agreement)
        .await
    {
        Decision::Allow(_) => {}
        Decision::Deny(reason) if reason.is_unavailable() => {
            return Err(FederatedError::Unavailable(reason.to_string()));
        }
        Decision::Deny(reason) => return Err(FederatedError::Refused(reason.to_string())),
    }
    let algorithm = shared
        .compute
        .check_module(&req.module, req.approval.as_ref())
        .map_err(|e| FederatedError::Refused(e.to_string()))?;
    if req.args.len() > 64 || req.args.iter().any(|a| a.len() > 1024) {
        return Err(FederatedError::Invalid(
            "at most 64 arguments of 1024 bytes each".into(),
        ));
    }
    // Last: a job is joined once, so only a join that passed every check uses it up.
    shared.joined.claim(req.job)?;
    Ok(Session {
        job: req.job,
        module: req.module.into(),
        args: req.args,
        max_rounds: req.max_rounds,
        secure: req.secure,
        dp: req.dp,
        dir,
        rows: 0,
        last_round: 0,
        seen_models: BTreeSet::new(),
        members: Arc::new(members),
        assets,
        round: None,
        consumer: job.consumer,
        algorithm,
        updates: 0,
        bytes_sent: 0,
    })
}

/// Trains locally and opens the round's secure aggregation (or, without it, sends
/// the update).
async fn start_round(
    shared: &Shared,
    session: &mut Session,
    round: u32,
    rules: Option<RoundRules>,
    codec: RingCodec,
    body: &[u8],
    tx: &Outbox,
) -> Result<()> {
    if round != session.last_round + 1 || round > session.max_rounds {
        return Err(FederatedError::Refused(format!(
            "round {round} after round {} of at most {}: rounds run once, in order",
            session.last_round, session.max_rounds
        )));
    }
    let global = Model::from_ipc(body)?;
    if !global.is_finite() {
        return Err(FederatedError::Invalid(
            "the global model holds a value that is not a finite number".into(),
        ));
    }
    // The same global model twice, with different participants, would let the
    // coordinator subtract two sums and isolate one update. The digest is of the
    // values, so a re-encoding of the same model is the same model.
    let model_digest = global.digest();
    if !session.seen_models.insert(model_digest) {
        return Err(FederatedError::Refused(
            "the coordinator sent a global model it already trained on".into(),
        ));
    }
    session.last_round = round;
    session.round = None;
    let round_dir = session.dir.join(format!("round-{round}"));
    let _round_files = DirGuard(round_dir.clone());
    let shard = session.dir.join("shard");
    let trained = local::train(
        local::LocalRound {
            compute: &shared.compute,
            module: session.module.clone(),
            args: session.args.clone(),
            round,
            shard: &shard,
            staged_rows: session.rows,
            round_dir: &round_dir,
        },
        &global,
    )
    .await
    .map_err(|e| {
        // The detail is the module's own output, which may carry the data it read; the
        // coordinator learns only that training failed here.
        tracing::warn!(round, error = %e, "local training failed");
        FederatedError::Aborted("local training failed on this provider".into())
    })?;
    let mut delta: Vec<f32> = trained
        .model
        .flatten()
        .iter()
        .zip(global.flatten())
        .map(|(t, g)| t - g)
        .collect();
    if !session.secure {
        let update = global.with_values(&delta)?.to_ipc()?;
        session.sent(update.len());
        return reply(
            tx,
            &FromProvider::Plain {
                samples: trained.samples,
            },
            update,
        )
        .await;
    }
    let rules = rules.ok_or_else(|| {
        FederatedError::Invalid("a secure aggregation round needs its rules".into())
    })?;
    // The threshold must be a majority of everyone the job could put in a round, not of
    // a smaller number the coordinator picked.
    if rules.max_participants < session.assets {
        return Err(FederatedError::Refused(format!(
            "rules for {} participants in a job over {} assets",
            rules.max_participants, session.assets
        )));
    }
    let config = round_config(&model_digest, &rules, &codec, session.dp.as_ref())?;
    let encoded = match &session.dp {
        // Under DP every provider weighs 1, its update clipped to the norm the noise
        // is calibrated for, and its share of the noise added before masking.
        Some(dp) => {
            crate::dp::clip_l2(&mut delta, dp.clip_norm);
            let mut e = codec.encode(&delta, 1)?;
            crate::dp::add_noise(&mut e, dp.client_sigma(&codec), &mut rand::rng());
            e
        }
        None => codec.encode(&delta, trained.samples)?,
    };
    let ledger = shared.engine.ledger();
    let id = RoundId {
        job: session.job,
        round,
        domain: insitu_ledger::eip712::insitu_domain(
            ledger.chain_id(),
            ledger.contracts().agreements,
        ),
    };
    let participant = Participant::new(
        shared.signer.clone(),
        shared.signer.address(),
        id,
        rules,
        RecoveryCache::default(),
    )
    .with_members(session.members.clone())
    .with_config(config);
    let advert = participant.advertise()?;
    session.round = Some(Round {
        participant,
        encoded,
    });
    reply(
        tx,
        &FromProvider::Advert {
            advert,
            layout: global.layout(),
        },
        Vec::new(),
    )
    .await
}

/// What a compute error was, without its detail (which may name the asset's storage).
fn compute_kind(e: &insitu_compute::ComputeError) -> &'static str {
    use insitu_compute::ComputeError as E;
    match e {
        E::Invalid(_) => "invalid",
        E::Denied(_) => "denied",
        E::NotFound(_) => "not found",
        E::Conflict(_) => "conflict",
        E::Unavailable(_) => "unavailable",
        E::Internal(_) => "internal",
    }
}

/// The hash of one round's configuration as this provider received it, which its key
/// advert carries: the global model, the rules, the codec and the DP settings.
fn round_config(
    model: &[u8; 32],
    rules: &RoundRules,
    codec: &RingCodec,
    dp: Option<&DpSettings>,
) -> Result<[u8; 32]> {
    let settings = serde_json::to_vec(&(rules, codec, dp))
        .map_err(|e| FederatedError::Internal(format!("encoding the round's settings: {e}")))?;
    let mut h = sha2::Sha256::new();
    h.update(b"insitu/secagg/round-config");
    h.update(model);
    h.update(settings);
    Ok(h.finalize().into())
}
