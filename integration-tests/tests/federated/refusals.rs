//! What providers refuse, each checked against real `insitu serve` processes on anvil:
//! a site whose agreement is not committed to the job, a coordinator key the job did
//! not publish, a module off the allow-list, and plain updates by default.

use std::time::Duration;

use alloy::primitives::B256;
use alloy::signers::local::PrivateKeySigner;
use insitu_federated::{FederatedError, Progress, Site, TrainingJob};
use insitu_integration_tests::provider::World;
use insitu_ledger::{AgreementId, Ledger};

use super::federation::CONSUMER;
use super::{Federation, Rows, split, train_module, write_csv};

async fn setup() -> (World, Federation, Vec<u8>) {
    let world = World::start().await.expect("anvil");
    let (_, module) = train_module();
    let hash = insitu_compute::algorithm_hash(&module).1;
    let (train, _) = split(super::breast_cancer(), 3, 0.2);
    let dir = tempfile::tempdir().expect("dir");
    let mut shards = Vec::new();
    for i in 0..3 {
        let rows: Rows = train.iter().skip(i).step_by(3).cloned().collect();
        let p = dir.path().join(format!("shard-{i}.csv"));
        write_csv(&rows, &p);
        shards.push(p);
    }
    let fed = Federation::start(&world, &shards, &hash, "").await;
    (world, fed, module)
}

/// Orders each site's train service (free) and returns the agreements.
async fn order_all(ledger: &dyn Ledger, fed: &Federation) -> Vec<AgreementId> {
    let mut out = Vec::new();
    for s in &fed.sites {
        let did = s.did.parse().expect("did");
        out.push(ledger.order(did, 0).await.expect("order").agreement_id);
    }
    out
}

fn sites(fed: &Federation, agreements: &[AgreementId]) -> Vec<Site> {
    fed.sites
        .iter()
        .zip(agreements)
        .map(|(s, a)| Site {
            did: s.did.parse().expect("did"),
            agreement: *a,
            endpoint: s.endpoint.clone(),
            provider: s.address,
            ca_pem: None,
        })
        .collect()
}

fn args() -> Vec<String> {
    ["--label", "target", "--classes", "2"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Runs a job and returns its result and every refusal the providers gave.
async fn run_job(
    job: TrainingJob,
) -> (
    Result<insitu_federated::TrainingOutcome, FederatedError>,
    Vec<String>,
) {
    let mut refused = Vec::new();
    let result = tokio::time::timeout(
        Duration::from_secs(300),
        job.run(|p| {
            if let Progress::Refused { reason, .. } = p {
                refused.push(reason);
            }
        }),
    )
    .await
    .expect("the job ends in time");
    (result, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn providers_refuse_what_the_job_did_not_commit_to() {
    let (world, fed, module) = setup().await;
    let ledger = world.ledger(CONSUMER).await.expect("ledger");
    let chain_id = ledger.chain_id();
    let contract = ledger.contracts().agreements;
    let agreements = order_all(&ledger, &fed).await;

    // The job commits the first two agreements only.
    let key = PrivateKeySigner::random();
    let job = B256::from(rand::random::<[u8; 32]>());
    ledger
        .open_training(
            job,
            key.address(),
            "dial-out".into(),
            agreements[..2].to_vec(),
        )
        .await
        .expect("open the job");

    // A coordinator key the job did not publish: every provider refuses, nothing runs.
    let stranger = TrainingJob::builder(
        job,
        PrivateKeySigner::random(),
        chain_id,
        contract,
        module.clone(),
        sites(&fed, &agreements),
    )
    .with_args(args())
    .build()
    .expect("job");
    let (result, refused) = run_job(stranger).await;
    assert!(
        matches!(result, Err(FederatedError::Aborted(_))),
        "{result:?}"
    );
    assert_eq!(refused.len(), 3);
    assert!(
        refused
            .iter()
            .all(|r| r.contains("not by the coordinator key")),
        "{refused:?}"
    );

    // A module off the providers' allow-lists is refused before anything is staged.
    let other_module = [module.as_slice(), b"\0"].concat();
    let off_list = TrainingJob::builder(
        job,
        key.clone(),
        chain_id,
        contract,
        other_module,
        sites(&fed, &agreements[..2]),
    )
    .with_args(args())
    .build()
    .expect("job");
    let (result, refused) = run_job(off_list).await;
    assert!(result.is_err());
    assert!(
        refused.iter().all(|r| r.contains("allow-list")),
        "{refused:?}"
    );

    // The real key: the third provider, whose agreement the job did not commit,
    // refuses; the other two (a majority of three) train.
    let real = TrainingJob::builder(
        job,
        key,
        chain_id,
        contract,
        module.clone(),
        sites(&fed, &agreements),
    )
    .with_args(args())
    .with_rounds(2)
    .build()
    .expect("job");
    let (result, refused) = run_job(real).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].contains("not committed to training job"),
        "{refused:?}"
    );
    let outcome = result.expect("two providers train");
    assert_eq!(outcome.rounds.len(), 2);
    assert_eq!(outcome.rounds[1].contributors.len(), 2);

    // An agreement joins one job only: a second job cannot take it over.
    let again = ledger
        .open_training(
            B256::from(rand::random::<[u8; 32]>()),
            PrivateKeySigner::random().address(),
            "dial-out".into(),
            vec![agreements[0]],
        )
        .await;
    assert!(again.is_err(), "an agreement was committed to two jobs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn providers_send_plain_updates_only_when_they_allow_it() {
    let (world, fed, module) = setup().await;
    let ledger = world.ledger(CONSUMER).await.expect("ledger");
    let agreements = order_all(&ledger, &fed).await;
    let key = PrivateKeySigner::random();
    let job = B256::from(rand::random::<[u8; 32]>());
    ledger
        .open_training(job, key.address(), "dial-out".into(), agreements.clone())
        .await
        .expect("open the job");
    // Robust strategies need plain updates, and say so under secure aggregation.
    let refused_build = TrainingJob::builder(
        job,
        key.clone(),
        ledger.chain_id(),
        ledger.contracts().agreements,
        module.clone(),
        sites(&fed, &agreements),
    )
    .with_strategy(insitu_federated::Strategy::Median)
    .build();
    assert!(
        matches!(&refused_build, Err(FederatedError::Invalid(m)) if m.contains("secure aggregation")),
        "{refused_build:?}"
    );
    let plain = TrainingJob::builder(
        job,
        key,
        ledger.chain_id(),
        ledger.contracts().agreements,
        module,
        sites(&fed, &agreements),
    )
    .with_args(args())
    .with_strategy(insitu_federated::Strategy::Median)
    .with_secure_aggregation(false)
    .build()
    .expect("job");
    let (result, refused) = run_job(plain).await;
    assert!(result.is_err());
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|r| r.contains("only under secure aggregation")),
        "{refused:?}"
    );
}

/// The coordinator's side of one training exchange with a provider, driven by hand.
struct Exchange {
    tx: tokio::sync::mpsc::Sender<arrow_flight::FlightData>,
    answers: tonic::Streaming<arrow_flight::FlightData>,
}

impl Exchange {
    /// Dials `site` with a token signed by the job's coordinator `key` and joins `job`
    /// under `agreement`.
    async fn join(
        ledger: &dyn Ledger,
        site: &super::federation::Site,
        key: &PrivateKeySigner,
        job: B256,
        agreement: AgreementId,
        module: Vec<u8>,
    ) -> Exchange {
        use arrow_flight::flight_service_client::FlightServiceClient;
        use insitu_federated::wire::{self, ToProvider};

        let token = insitu_policy::sign_access_token(
            key,
            &insitu_policy::AccessClaims {
                provider: site.address,
                chain_id: ledger.chain_id(),
                verifying_contract: ledger.contracts().agreements,
                issued_at: insitu_integration_tests::provider::now(),
                lifetime: Duration::from_secs(600),
                scope: insitu_federated::TRAIN_SCOPE.into(),
            },
        )
        .expect("token");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let join = ToProvider::Join {
            job,
            did: site.did.parse().expect("did"),
            agreement,
            args: args(),
            approval: None,
            max_rounds: 10,
            secure_aggregation: true,
            dp: None,
        };
        tx.send(wire::frame(&join, module).expect("frame"))
            .await
            .expect("send");
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let channel = insitu_flight::client::connect_channel(&site.endpoint, None)
            .await
            .expect("connect");
        let answers = FlightServiceClient::new(channel)
            .do_exchange(request)
            .await
            .expect("exchange")
            .into_inner();
        Exchange { tx, answers }
    }

    async fn send(&self, message: &insitu_federated::wire::ToProvider, body: Vec<u8>) {
        self.tx
            .send(insitu_federated::wire::frame(message, body).expect("frame"))
            .await
            .expect("send");
    }

    async fn next(&mut self) -> Result<insitu_federated::wire::FromProvider, tonic::Status> {
        use futures::StreamExt;
        let data = self.answers.next().await.expect("an answer")?;
        Ok(insitu_federated::wire::unframe(data).expect("a message").0)
    }
}

/// A zero model with the example module's tensors for `features` columns.
fn zero_model(features: usize) -> Vec<u8> {
    use insitu_federated::model::{Model, Tensor};
    Model::new(vec![
        Tensor::new("weights", vec![2, features], vec![0.0; 2 * features]).expect("t"),
        Tensor::new("bias", vec![2], vec![0.0; 2]).expect("t"),
        Tensor::new("mean", vec![features], vec![0.0; features]).expect("t"),
        Tensor::new("scale", vec![features], vec![0.0; features]).expect("t"),
    ])
    .expect("model")
    .to_ipc()
    .expect("ipc")
}

/// A coordinator that replays a global model (to subtract two sums over different
/// participants), or fills a round with identities of its own (whose shares would
/// unmask a provider's update), is refused by the provider itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_refuses_a_replayed_model_and_a_roster_of_strangers() {
    use insitu_federated::wire::{FromProvider, ToProvider};
    use insitu_federated::{Participant, RecoveryCache, RingCodec, RoundId, RoundRules};

    let (world, fed, module) = setup().await;
    let ledger = world.ledger(CONSUMER).await.expect("ledger");
    let agreements = order_all(&ledger, &fed).await;
    let key = PrivateKeySigner::random();
    let job = B256::from(rand::random::<[u8; 32]>());
    ledger
        .open_training(job, key.address(), "dial-out".into(), agreements.clone())
        .await
        .expect("open the job");
    let round = |n: u32| ToProvider::Round {
        round: n,
        rules: Some(RoundRules::majority(3).expect("rules")),
        codec: RingCodec::new(16.0, 4096).expect("codec"),
    };

    let site = &fed.sites[0];
    let mut ex = Exchange::join(&ledger, site, &key, job, agreements[0], module.clone()).await;
    let FromProvider::Joined { columns, .. } = ex.next().await.expect("joined") else {
        panic!("expected joined");
    };
    let body = zero_model(columns.len() - 1);
    ex.send(&round(1), body.clone()).await;
    assert!(matches!(
        ex.next().await.expect("advert"),
        FromProvider::Advert { .. }
    ));
    // Round 2 on the very same model: refused, and the session ends.
    ex.send(&round(2), body.clone()).await;
    let refused = ex.next().await.expect_err("a replayed model is refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("already trained on"),
        "{refused:?}"
    );

    // A roster with the provider and two identities the job does not hold, each with
    // keys properly signed for the round.
    let site = &fed.sites[1];
    let mut ex = Exchange::join(&ledger, site, &key, job, agreements[1], module).await;
    assert!(matches!(
        ex.next().await.expect("joined"),
        FromProvider::Joined { .. }
    ));
    ex.send(&round(1), body).await;
    let FromProvider::Advert { advert, .. } = ex.next().await.expect("advert") else {
        panic!("expected an advert");
    };
    let id = RoundId {
        job,
        round: 1,
        domain: insitu_ledger::eip712::insitu_domain(
            ledger.chain_id(),
            ledger.contracts().agreements,
        ),
    };
    let mut adverts = vec![advert];
    for _ in 0..2 {
        let sybil = PrivateKeySigner::random();
        let p = Participant::new(
            std::sync::Arc::new(sybil.clone()),
            sybil.address(),
            id.clone(),
            RoundRules::majority(3).expect("rules"),
            RecoveryCache::default(),
        );
        adverts.push(p.advertise().expect("advert"));
    }
    ex.send(&ToProvider::Roster { adverts }, Vec::new()).await;
    let refused = ex.next().await.expect_err("strangers are refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("none of the job's agreements"),
        "{refused:?}"
    );
}
