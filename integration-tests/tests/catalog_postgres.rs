//! The catalog on a real PostgreSQL server: the same store, the same queries, and a
//! provider serving downloads from it (the multi-replica deployment's catalog).

use alloy::primitives::B256;
use insitu_catalog::{AssetStore, DataFormat, StorageLocation};
use insitu_integration_tests::data::{fingerprint, sample_batches, write_parquet};
use insitu_integration_tests::postgres::Postgres;
use insitu_integration_tests::{CONSUMER, Provider, ProviderOptions, World, account, download};
use insitu_ledger::{Did, Ledger};

use crate::common::offer;

#[tokio::test]
async fn a_provider_serves_from_a_postgres_catalog() {
    let pg = Postgres::start().await.expect("postgres");
    let world = World::start().await.expect("world");
    let provider = Provider::start(
        &world,
        ProviderOptions {
            catalog_url: Some(pg.url()),
            ..ProviderOptions::default()
        },
    )
    .await
    .expect("provider");
    let file = provider.path("pg.parquet");
    let batches = sample_batches(2_000).expect("data");
    write_parquet(&file, &batches).expect("write");
    let did = provider
        .publish(&file, "on postgres", offer(0, None))
        .await
        .expect("publish");

    // A second store on the same database (another replica) sees the asset.
    let replica = AssetStore::open(&pg.url())
        .await
        .expect("second connection");
    let seen = replica.get(did).await.expect("get").expect("present");
    assert!(seen.registered);
    assert_eq!(seen.ddo.name, "on postgres");
    let location = replica.location(did).await.expect("loc").expect("present");
    assert_eq!(location.format, DataFormat::Parquet);
    assert_eq!(
        replica.find_by_location(&location.url).await.expect("find"),
        Some(did)
    );

    let agreement = world
        .ledger(CONSUMER)
        .await
        .expect("consumer")
        .order(did, 0)
        .await
        .expect("order")
        .agreement_id;
    let token = insitu_integration_tests::token_for(&world, &account(CONSUMER), provider.address)
        .expect("token");
    let got = download(&provider.endpoint, &token, did, agreement)
        .await
        .expect("download");
    assert_eq!(fingerprint(&got), fingerprint(&batches));

    // Removal takes the private location with it.
    let ghost = Did(B256::repeat_byte(0x99));
    let mut ddo = seen.ddo.clone();
    ddo.did = ghost;
    replica
        .insert(
            &ddo,
            &StorageLocation {
                url: "file:///nowhere.parquet".into(),
                format: DataFormat::Parquet,
                schema_ipc: vec![1, 2, 3],
            },
        )
        .await
        .expect("insert");
    replica.remove(ghost).await.expect("remove");
    assert!(replica.get(ghost).await.expect("get").is_none());
    assert!(replica.location(ghost).await.expect("loc").is_none());
    let _ = provider.ledger.chain_id();
}
