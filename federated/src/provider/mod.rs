//! A provider's side of federated training: the `DoExchange` service a coordinator
//! drives, one session per job.
//!
//! Before it reads anything else, a session checks, against the chain, that the job
//! exists, that the token was signed by the coordinator key the job's consumer
//! published, that the agreement was committed to that job, and then asks the policy
//! engine for a `train` grant in the consumer's name (which fulfils the agreement on
//! first use and audits the decision). The training module must pass this provider's
//! compute allow-list. Local training runs through the provider's own compute bridge
//! (the same sandbox and limits as compute jobs), and only a masked update leaves.

mod joined;
mod local;
mod members;
mod session;

pub use local::{METRICS_FILE as METRICS_FILE_NAME, MODEL_FILE as MODEL_FILE_NAME};

use std::path::PathBuf;
use std::sync::Arc;

use alloy::signers::local::PrivateKeySigner;
use insitu_compute::ComputeService;
use insitu_flight::{ExchangeHandler, ExchangeStream};
use insitu_policy::{PolicyEngine, Principal};
use tonic::Status;

use crate::error::{FederatedError, Result};
use crate::wire::TRAIN_SCOPE;

/// The largest training message a provider accepts: 64 MiB.
pub const MAX_TRAIN_MESSAGE: usize = 64 << 20;

/// The most rounds a job may ask a provider for, unless configured otherwise.
pub const DEFAULT_MAX_ROUNDS: u32 = 1000;

pub(crate) struct Shared {
    pub(crate) compute: ComputeService,
    pub(crate) engine: Arc<PolicyEngine>,
    pub(crate) signer: Arc<PrivateKeySigner>,
    pub(crate) work_dir: PathBuf,
    pub(crate) allow_plain_updates: bool,
    pub(crate) max_rounds: u32,
    pub(crate) joined: joined::JoinedJobs,
}

/// The training service of one provider, mounted on its Flight service with
/// `InsituFlightBuilder::with_exchange`. Cheap to clone.
#[derive(Clone)]
pub struct TrainExchange {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TrainExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainExchange")
            .field("provider", &self.shared.signer.address())
            .field("allow_plain_updates", &self.shared.allow_plain_updates)
            .finish_non_exhaustive()
    }
}

/// Builder for [`TrainExchange`].
#[derive(Debug)]
pub struct TrainExchangeBuilder {
    compute: ComputeService,
    engine: Arc<PolicyEngine>,
    signer: Arc<PrivateKeySigner>,
    work_dir: PathBuf,
    allow_plain_updates: bool,
    max_rounds: u32,
}

impl TrainExchangeBuilder {
    /// Lets jobs without secure aggregation (robust strategies) receive this provider's
    /// update in the clear. Off by default: the update is then only ever sent masked.
    pub fn with_plain_updates(mut self, allow: bool) -> Self {
        self.allow_plain_updates = allow;
        self
    }

    /// The most rounds one job may run here.
    pub fn with_max_rounds(mut self, rounds: u32) -> Self {
        self.max_rounds = rounds.max(1);
        self
    }

    pub fn build(self) -> Result<TrainExchange> {
        if self.signer.address() != self.engine.provider() {
            return Err(FederatedError::Invalid(format!(
                "the training key {} is not this provider's identity {}",
                self.signer.address(),
                self.engine.provider()
            )));
        }
        std::fs::create_dir_all(&self.work_dir).map_err(|e| {
            FederatedError::Internal(format!("creating the training work directory: {e}"))
        })?;
        let joined = joined::JoinedJobs::open(&self.work_dir)?;
        Ok(TrainExchange {
            shared: Arc::new(Shared {
                joined,
                compute: self.compute,
                engine: self.engine,
                signer: self.signer,
                work_dir: self.work_dir,
                allow_plain_updates: self.allow_plain_updates,
                max_rounds: self.max_rounds,
            }),
        })
    }
}

impl TrainExchange {
    /// A training service that trains through `compute`, decides with `engine`, and
    /// signs round keys as `signer` (the provider's identity). `work_dir` holds each
    /// session's staged shard while the job lasts.
    pub fn builder(
        compute: ComputeService,
        engine: Arc<PolicyEngine>,
        signer: Arc<PrivateKeySigner>,
        work_dir: impl Into<PathBuf>,
    ) -> TrainExchangeBuilder {
        TrainExchangeBuilder {
            compute,
            engine,
            signer,
            work_dir: work_dir.into(),
            allow_plain_updates: false,
            max_rounds: DEFAULT_MAX_ROUNDS,
        }
    }
}

/// A federated error as the status the coordinator reads.
pub(crate) fn status(e: FederatedError) -> Status {
    match e {
        FederatedError::Refused(m) => Status::permission_denied(m),
        FederatedError::Invalid(m) => Status::invalid_argument(m),
        FederatedError::Phase(m) => Status::failed_precondition(m),
        FederatedError::Aborted(m) => Status::aborted(m),
        FederatedError::Unavailable(m) => Status::unavailable(m),
        FederatedError::Internal(m) => Status::internal(m),
    }
}

#[tonic::async_trait]
impl ExchangeHandler for TrainExchange {
    fn scope(&self) -> &'static str {
        TRAIN_SCOPE
    }

    fn max_message_bytes(&self) -> usize {
        // The module (up to the compute limit) or a model of up to 16M float32
        // parameters. The limit is the Flight service's, for every authenticated call,
        // so it is no larger than training needs.
        MAX_TRAIN_MESSAGE
    }

    async fn exchange(
        &self,
        principal: Principal,
        incoming: ExchangeStream,
    ) -> std::result::Result<ExchangeStream, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let shared = self.shared.clone();
        tokio::spawn(session::serve(shared, principal, incoming, tx));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}
