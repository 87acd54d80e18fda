//! Bad input gets a clear error and loses nothing.

use std::process::Command;

use alloy::primitives::B256;
use insitu_flight::publish::{PublishRequest, publish_asset};
use insitu_integration_tests::{CONSUMER, Provider, ProviderOptions, World, insitu_bin};
use insitu_ledger::AgreementId;

use crate::common::{Scene, assert_refused, info, offer};

#[tokio::test]
async fn publishing_a_missing_file_fails_clearly_and_registers_nothing() {
    let world = World::start().await.expect("world");
    let provider = Provider::start(&world, ProviderOptions::default())
        .await
        .expect("provider");
    let txs = world.tx_count(provider.address).await.expect("txs");
    let missing = provider.path("does-not-exist.parquet");
    let err = publish_asset(
        provider.ledger.as_ref(),
        &provider.catalog,
        PublishRequest {
            file: missing.clone(),
            name: "ghost".into(),
            description: String::new(),
            tags: vec![],
            services: vec![offer(0, None)],
            providers: vec![],
            metadata_url: provider.endpoint.clone(),
            constraints: None,
        },
    )
    .await
    .expect_err("a missing file must not publish");
    let text = err.to_string();
    assert!(text.contains("does-not-exist.parquet"), "{text}");
    assert!(text.contains("nothing was published"), "{text}");
    assert!(provider.catalog.list().await.expect("list").is_empty());
    assert_eq!(world.tx_count(provider.address).await.expect("txs"), txs);
}

#[tokio::test]
async fn the_cli_refuses_a_missing_file_and_a_malformed_did_with_next_steps() {
    let bin = insitu_bin().expect("binary");
    let out = Command::new(&bin)
        .args(["publish", "/nonexistent/data.parquet", "--name", "x"])
        .env(
            "INSITU_REGISTRY",
            "0x0000000000000000000000000000000000000001",
        )
        .env(
            "INSITU_AGREEMENTS",
            "0x0000000000000000000000000000000000000002",
        )
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/data.parquet"), "{err}");
    assert!(err.contains("nothing was published"), "{err}");

    let out = Command::new(&bin)
        .args(["order", "did:insitu:0x1234"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("malformed DID"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[tokio::test]
async fn a_malformed_did_in_a_descriptor_is_an_invalid_argument() {
    let s = Scene::start().await.expect("scene");
    let mut client = s.client(CONSUMER).await;
    let bad = arrow_flight::FlightDescriptor::new_path(vec![
        "did:insitu:0xnope".into(),
        format!("{}", B256::ZERO),
    ]);
    let r = client
        .get_flight_info(bad)
        .await
        .map_err(crate::common::status);
    assert_refused(r, tonic::Code::InvalidArgument, "malformed DID");
}

#[tokio::test]
async fn an_unknown_agreement_is_refused_and_named() {
    let s = Scene::start().await.expect("scene");
    let mut client = s.client(CONSUMER).await;
    let unknown = AgreementId(B256::repeat_byte(0x42));
    assert_refused(
        info(&mut client, s.free, unknown).await,
        tonic::Code::PermissionDenied,
        &format!("agreement {unknown} does not exist"),
    );
}

#[tokio::test]
async fn when_the_rpc_is_down_the_provider_answers_unavailable_and_grants_nothing() {
    let mut s = Scene::start().await.expect("scene");
    let agreement = s.order(CONSUMER, s.free).await.expect("order");
    s.world.anvil.kill();
    let mut client = s.client(CONSUMER).await;
    let r = info(&mut client, s.free, agreement).await;
    assert_refused(r, tonic::Code::Unavailable, "chain is unavailable");
    let records = s.provider.audit.records();
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|r| !r.allowed),
        "nothing may be granted: {records:?}"
    );
    // The message must not leak the RPC URL's path or anything beyond host:port.
    let status = info(&mut client, s.free, agreement)
        .await
        .expect_err("still down");
    assert!(!status.message().contains("/rpc"), "{}", status.message());
}
