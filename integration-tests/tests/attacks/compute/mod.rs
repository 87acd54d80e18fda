//! The escape suite: the "malicious algorithm" row of SECURITY.md. Each module tries
//! one way out of the WASI sandbox; each must end as a failed job with an error that
//! says what happened, leave nothing behind, and leave the provider serving.
//!
//! The modules are allowed by hash on purpose (the allow-list is the first wall; these
//! tests are about the second). `unlisted_algorithm` checks the first wall.

use std::time::Duration;

use insitu_compute::{ComputeError, JobState, SandboxLimits};
use insitu_integration_tests::CONSUMER;
use insitu_integration_tests::compute::{ComputeScene, attack_module, follow};

async fn scene() -> (ComputeScene, insitu_ledger::AgreementId) {
    let limits = SandboxLimits::default()
        .with_deadline(Duration::from_secs(2))
        .with_memory_bytes(64 << 20)
        .with_output_bytes(1 << 20)
        .with_log_bytes(64 << 10);
    let scene = ComputeScene::start(limits, false).await.expect("scene");
    let agreement = scene.order(CONSUMER, scene.asset).await.expect("order");
    (scene, agreement)
}

/// Runs `attack` and returns the failed job's error and logs, after checking that the
/// provider is still healthy: its workspace is clean and it still runs honest jobs.
async fn contained(
    scene: &ComputeScene,
    agreement: insitu_ledger::AgreementId,
    attack: &str,
) -> (String, String) {
    let mut client = scene.client(CONSUMER).await.expect("client");
    let module = attack_module(attack).expect("module");
    let job = scene
        .submit(&mut client, agreement, &module)
        .await
        .expect("submit");
    let (_, done) = follow(&mut client, job.id, Duration::from_secs(120))
        .await
        .expect("follow");
    assert_eq!(done.state, JobState::Failed, "{attack}: {done:?}");
    assert!(done.results.is_empty(), "{attack} published something");
    let logs = String::from_utf8_lossy(&client.logs(job.id).await.expect("logs")).into_owned();
    assert_eq!(
        scene.job_dirs().expect("dirs"),
        0,
        "{attack} left files behind"
    );
    (done.error.unwrap_or_default(), logs)
}

/// After the attacks, an honest job still runs to completion.
async fn still_serves(scene: &ComputeScene, agreement: insitu_ledger::AgreementId) {
    let mut client = scene.client(CONSUMER).await.expect("client");
    let job = scene
        .submit(&mut client, agreement, &scene.example)
        .await
        .expect("submit");
    let (_, done) = follow(&mut client, job.id, Duration::from_secs(180))
        .await
        .expect("follow");
    assert_eq!(done.state, JobState::Succeeded, "{:?}", done.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn algorithms_cannot_escape_the_sandbox() {
    let (scene, agreement) = scene().await;

    let (error, _) = contained(&scene, agreement, "socket").await;
    assert!(error.contains("network access denied"), "{error}");

    let (error, logs) = contained(&scene, agreement, "read_outside").await;
    assert!(error.contains("exited with status 13"), "{error}");
    assert!(!logs.contains("root:"), "a host file leaked: {logs}");

    let (error, _) = contained(&scene, agreement, "infinite_loop").await;
    assert!(error.contains("deadline exceeded"), "{error}");

    let (error, _) = contained(&scene, agreement, "memory_bomb").await;
    assert!(error.contains("memory limit exceeded"), "{error}");

    let (error, _) = contained(&scene, agreement, "output_quota").await;
    assert!(error.contains("output quota exceeded"), "{error}");

    let (error, logs) = contained(&scene, agreement, "stdout_flood").await;
    assert!(error.contains("log limit exceeded"), "{error}");
    assert!(logs.len() <= 64 << 10, "{} log bytes kept", logs.len());

    // An output the gate refuses: the error names it as the algorithm wrote it, never
    // by the provider's own paths.
    let (error, _) = contained(&scene, agreement, "bad_output").await;
    assert!(
        error.contains("output bad.csv could not be published"),
        "{error}"
    );
    let provider_dir = scene.provider.data_dir().display().to_string();
    assert!(
        !error.contains(&provider_dir),
        "a provider path leaked: {error}"
    );

    still_serves(&scene, agreement).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlisted_algorithm_is_refused_before_it_runs() {
    let (scene, agreement) = scene().await;
    let mut client = scene.client(CONSUMER).await.expect("client");
    // The example with one byte appended: another hash, so not on the list.
    let mut tampered = scene.example.clone();
    tampered.push(b'\n');
    let refused = scene
        .submit(&mut client, agreement, &tampered)
        .await
        .expect_err("an unlisted module must be refused");
    match refused {
        ComputeError::Denied(m) => assert!(m.contains("not on this provider's allow-list"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The refusal came before the agreement was used: it is still locked, its escrow
    // not paid out.
    let ledger = scene.world.ledger(CONSUMER).await.expect("ledger");
    let state = insitu_ledger::Ledger::agreement(&ledger, agreement)
        .await
        .expect("read")
        .expect("known")
        .state;
    assert_eq!(state, insitu_ledger::AgreementState::Locked);
    assert!(
        !scene
            .provider
            .path("compute/algorithms")
            .read_dir()
            .expect("dir")
            .any(|e| {
                e.map(|e| {
                    e.file_name().to_string_lossy().contains(
                        insitu_integration_tests::compute::hash_of(&tampered)
                            .trim_start_matches("sha256:"),
                    )
                })
                .unwrap_or(false)
            }),
        "the refused module was stored"
    );
}
