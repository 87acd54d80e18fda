//! Compute to the data, end to end on anvil: a compute-only asset, a paid order, the
//! example algorithm in the WASI sandbox, and its output published as an asset the
//! consumer owns and only the consumer can read.

use std::time::Duration;

use insitu_compute::{ComputeError, JobState, SandboxLimits};
use insitu_integration_tests::compute::{ComputeScene, attack_module, follow, owner_of};
use insitu_integration_tests::{CONSUMER, OTHER_CONSUMER, PROVIDER, account};
use insitu_ledger::{AgreementState, Ledger};

const LIMIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_publishes_a_result_only_its_consumer_can_read() {
    let scene = ComputeScene::start(SandboxLimits::default(), true)
        .await
        .expect("scene");
    let agreement = scene.order(CONSUMER, scene.asset).await.expect("order");
    let mut client = scene.client(CONSUMER).await.expect("client");
    let job = scene
        .submit(&mut client, agreement, &scene.example)
        .await
        .expect("submit");
    assert_eq!(job.state, JobState::Queued);
    let (seen, done) = follow(&mut client, job.id, LIMIT).await.expect("follow");
    assert_eq!(done.state, JobState::Succeeded, "{:?}", done.error);
    assert!(seen.contains(&JobState::Succeeded));
    let status = client.status(job.id).await.expect("status");
    let history: Vec<_> = status.events.iter().map(|e| e.state).collect();
    assert_eq!(
        history,
        vec![
            JobState::Queued,
            JobState::Staging,
            JobState::Running,
            JobState::Publishing,
            JobState::Succeeded
        ]
    );

    // The first use fulfilled the agreement: the escrow went to the owner.
    let provider_ledger = scene.world.ledger(PROVIDER).await.expect("ledger");
    let a = provider_ledger
        .agreement(agreement)
        .await
        .expect("read")
        .expect("known");
    assert_eq!(a.state, AgreementState::Fulfilled);

    // The result is a new asset owned by the consumer, served by this provider.
    let results = client.result(job.id).await.expect("result");
    assert_eq!(results.len(), 1);
    let result = &results[0];
    assert_eq!(
        owner_of(&scene.world, result.did).await.expect("owner"),
        account(CONSUMER).address()
    );
    let record = provider_ledger
        .asset(result.did)
        .await
        .expect("read")
        .expect("registered");
    assert_eq!(record.providers, vec![scene.provider.address]);

    // Its owner orders the free download service and reads it.
    let own = scene
        .order(CONSUMER, result.did)
        .await
        .expect("order result");
    let token = insitu_integration_tests::token_for(
        &scene.world,
        &account(CONSUMER),
        scene.provider.address,
    )
    .expect("token");
    let batches =
        insitu_integration_tests::download(&scene.provider.endpoint, &token, result.did, own)
            .await
            .expect("the owner downloads the result");
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let logs = String::from_utf8(client.logs(job.id).await.expect("logs")).expect("utf8");
    if scene.example_is_rust {
        // One summary row per input column; the input has 31 columns and 569 rows.
        assert_eq!(rows, 31, "{batches:?}");
        let schema = batches[0].schema();
        for column in ["column", "count", "nulls", "mean", "stddev"] {
            assert!(
                schema.field_with_name(column).is_ok(),
                "no {column} in {schema:?}"
            );
        }
        assert!(logs.contains("summarised 569 rows"), "{logs}");
    } else {
        assert_eq!(rows, 1);
    }

    // Anybody else is refused, even with an agreement of their own on the result.
    let theirs = scene
        .order(OTHER_CONSUMER, result.did)
        .await
        .expect("order");
    let other_token = insitu_integration_tests::token_for(
        &scene.world,
        &account(OTHER_CONSUMER),
        scene.provider.address,
    )
    .expect("token");
    let denied = insitu_integration_tests::download(
        &scene.provider.endpoint,
        &other_token,
        result.did,
        theirs,
    )
    .await
    .expect_err("another consumer must not read the result");
    assert!(
        denied.to_string().contains("served to its owner only"),
        "{denied}"
    );

    // And the compute agreement gives no download of the input.
    let refused = insitu_integration_tests::download(
        &scene.provider.endpoint,
        &token,
        scene.asset,
        agreement,
    )
    .await
    .expect_err("a compute agreement must not download the data");
    assert!(
        refused.to_string().to_lowercase().contains("download"),
        "{refused}"
    );

    // Nothing of the job is left but its published result.
    assert_eq!(scene.job_dirs().expect("dirs"), 0);

    // Lineage: the run reads the input asset and writes the result asset.
    scene
        .provider
        .lineage
        .as_ref()
        .expect("lineage")
        .run_once(u64::MAX / 2, 500)
        .await
        .expect("deliver");
    let events = std::fs::read_to_string(scene.provider.path("lineage.jsonl")).expect("lineage");
    let runs: Vec<serde_json::Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| {
            e["job"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("compute."))
        })
        .collect();
    let kinds: Vec<_> = runs
        .iter()
        .map(|e| e["eventType"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, vec!["START", "COMPLETE"], "{events}");
    assert_eq!(runs[1]["run"]["runId"], job.id.to_string());
    let output = &runs[1]["outputs"][0];
    assert_eq!(
        output["facets"]["symlinks"]["identifiers"][0]["name"],
        result.did.to_string()
    );
    assert_eq!(
        runs[1]["inputs"][0]["facets"]["symlinks"]["identifiers"][0]["name"],
        scene.asset.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_private_cancellable_and_need_a_compute_grant() {
    let limits = SandboxLimits::default().with_deadline(Duration::from_secs(120));
    let scene = ComputeScene::start(limits, true).await.expect("scene");
    let agreement = scene.order(CONSUMER, scene.asset).await.expect("order");
    let mut client = scene.client(CONSUMER).await.expect("client");
    let spin = attack_module("infinite_loop").expect("module");
    let job = scene
        .submit(&mut client, agreement, &spin)
        .await
        .expect("submit");
    // Wait until it runs, then cancel it.
    loop {
        let s = client.status(job.id).await.expect("status");
        if s.job.state == JobState::Running {
            break;
        }
        assert!(!s.job.state.is_terminal(), "{:?}", s.job);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another consumer sees no such job and cannot cancel it.
    let mut other = scene.client(OTHER_CONSUMER).await.expect("client");
    for r in [
        other.status(job.id).await.map(|_| ()),
        other.cancel(job.id).await.map(|_| ()),
        other.logs(job.id).await.map(|_| ()),
    ] {
        assert!(matches!(r, Err(ComputeError::NotFound(_))), "{r:?}");
    }
    client.cancel(job.id).await.expect("cancel");
    let (_, done) = follow(&mut client, job.id, LIMIT).await.expect("follow");
    assert_eq!(done.state, JobState::Cancelled);
    assert!(matches!(
        client.result(job.id).await,
        Err(ComputeError::Conflict(_))
    ));
    assert!(matches!(
        client.cancel(job.id).await,
        Err(ComputeError::Conflict(_))
    ));
    assert_eq!(scene.job_dirs().expect("dirs"), 0);

    // The other consumer has no agreement: refused by the policy engine.
    let denied = scene
        .submit(&mut other, agreement, &scene.example)
        .await
        .expect_err("someone else's agreement");
    assert!(matches!(denied, ComputeError::Denied(_)), "{denied:?}");

    // A download agreement is not a compute agreement (asset with a download service).
    let file = scene.provider.path("plain.csv");
    insitu_integration_tests::data::sklearn_table("wine_data.csv", &file).expect("wine");
    let plain = scene
        .provider
        .publish(
            &file,
            "wine",
            insitu_ledger::ServiceOffer {
                service_type: insitu_ledger::ServiceType::Download,
                token: None,
                price: alloy::primitives::U256::ZERO,
                access_duration: 3600,
                fulfill_timeout: 600,
            },
        )
        .await
        .expect("publish");
    let download_agreement = scene.order(CONSUMER, plain).await.expect("order");
    let r = client
        .submit(&insitu_compute::SubmitRequest {
            did: plain,
            agreement: download_agreement,
            algorithm: scene.example.clone(),
            args: vec![],
            approval: None,
        })
        .await;
    assert!(matches!(r, Err(ComputeError::Denied(_))), "{r:?}");

    // A token signed for downloads cannot start jobs.
    let token = insitu_integration_tests::token_for(
        &scene.world,
        &account(CONSUMER),
        scene.provider.address,
    )
    .expect("token");
    let mut wrong = insitu_compute::ComputeClient::connect(&scene.provider.endpoint, &token, None)
        .await
        .expect("client");
    let r = scene.submit(&mut wrong, agreement, &scene.example).await;
    assert!(
        matches!(&r, Err(ComputeError::Denied(m)) if m.contains("scope")),
        "{r:?}"
    );

    // Bad input is refused with a reason, and no job is made of it.
    let r = scene.submit(&mut client, agreement, b"").await;
    assert!(matches!(r, Err(ComputeError::Invalid(_))), "{r:?}");
    let r = client
        .submit(&insitu_compute::SubmitRequest {
            did: scene.asset,
            agreement,
            algorithm: scene.example.clone(),
            args: (0..100).map(|i| i.to_string()).collect(),
            approval: None,
        })
        .await;
    assert!(matches!(r, Err(ComputeError::Invalid(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_publishers_approval_admits_an_unlisted_module() {
    let publisher = account(insitu_integration_tests::FEE_RECEIVER);
    let scene =
        ComputeScene::start_with(SandboxLimits::default(), false, vec![publisher.address()])
            .await
            .expect("scene");
    let agreement = scene.order(CONSUMER, scene.asset).await.expect("order");
    let mut client = scene.client(CONSUMER).await.expect("client");
    // Not on the list by hash: a small module that writes one CSV row.
    let module = br#"(module
      (import "wasi_snapshot_preview1" "path_open"
        (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 100) "ok.csv")
      (data (i32.const 200) "ok\n1\n")
      (func (export "_start")
        (drop (call $open (i32.const 4) (i32.const 0) (i32.const 100) (i32.const 6)
                 (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 12)))
        (i32.store (i32.const 0) (i32.const 200))
        (i32.store (i32.const 4) (i32.const 5))
        (drop (call $write (i32.load (i32.const 12)) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
    let d = &scene.world.deployed;
    let domain = insitu_ledger::eip712::insitu_domain(d.chain_id, d.addresses.agreements);
    let expires = insitu_integration_tests::now() + 3600;
    let approval = insitu_compute::approve(&publisher, &domain, module, expires).expect("approve");
    let request = |approval| insitu_compute::SubmitRequest {
        did: scene.asset,
        agreement,
        algorithm: module.to_vec(),
        args: vec![],
        approval,
    };
    // Without the approval: refused. With a stranger's: refused. With the publisher's: runs.
    let r = client.submit(&request(None)).await;
    assert!(matches!(r, Err(ComputeError::Denied(_))), "{r:?}");
    let stranger = account(OTHER_CONSUMER);
    let forged = insitu_compute::approve(&stranger, &domain, module, expires).expect("sign");
    let r = client.submit(&request(Some(forged))).await;
    assert!(
        matches!(&r, Err(ComputeError::Denied(m)) if m.contains("does not trust")),
        "{r:?}"
    );
    let job = client
        .submit(&request(Some(approval)))
        .await
        .expect("approved");
    let (_, done) = follow(&mut client, job.id, LIMIT).await.expect("follow");
    assert_eq!(done.state, JobState::Succeeded, "{:?}", done.error);
    assert_eq!(done.results.len(), 1);
}
