//! The happy paths: publish → order → token → DoGet, free and paid.

use alloy::primitives::U256;
use insitu_integration_tests::data::{fingerprint, sample_batches, write_parquet};
use insitu_integration_tests::{
    CONSUMER, FEE_BPS, FEE_RECEIVER, PROVIDER, Provider, ProviderOptions, account, download,
};
use insitu_ledger::{AgreementState, Ledger};

use crate::common::{PRICE, ROWS, Scene, assert_refused, fetch, info, offer, ticket_of};

#[tokio::test]
async fn a_paid_erc20_asset_is_served_after_order_and_the_owner_is_paid_price_minus_fee() {
    let s = Scene::start().await.expect("scene");
    let consumer = account(CONSUMER).address();
    let owner = account(PROVIDER).address();
    let fee_receiver = account(FEE_RECEIVER).address();
    let l = &s.provider.ledger;
    let token = Some(s.world.token);
    let before = (
        l.balance(owner, token).await.expect("b"),
        l.balance(fee_receiver, token).await.expect("b"),
        l.balance(consumer, token).await.expect("b"),
    );

    let agreement = s.order(CONSUMER, s.paid).await.expect("order");
    assert_eq!(
        s.state(agreement).await.expect("state"),
        Some(AgreementState::Locked)
    );
    let escrow = l
        .balance(s.world.deployed.addresses.agreements, token)
        .await
        .expect("escrow");
    assert_eq!(escrow, U256::from(PRICE), "the price is locked in escrow");

    let batches = s
        .download(CONSUMER, s.paid, agreement)
        .await
        .expect("download");
    let expected = sample_batches(ROWS).expect("data");
    assert_eq!(fingerprint(&batches), fingerprint(&expected));
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), ROWS);

    let fee = U256::from(PRICE * FEE_BPS as u64 / 10_000);
    assert_eq!(
        l.balance(owner, token).await.expect("b"),
        before.0 + U256::from(PRICE) - fee
    );
    assert_eq!(
        l.balance(fee_receiver, token).await.expect("b"),
        before.1 + fee
    );
    assert_eq!(
        l.balance(consumer, token).await.expect("b"),
        before.2 - U256::from(PRICE)
    );
    let ag = l.agreement(agreement).await.expect("read").expect("exists");
    assert_eq!(ag.state, AgreementState::Fulfilled);
    assert!(l.is_entitled(consumer, s.paid, 0).await.expect("entitled"));
    assert_eq!(
        l.balance(s.world.deployed.addresses.agreements, token)
            .await
            .expect("escrow"),
        U256::ZERO
    );
}

#[tokio::test]
async fn a_free_asset_is_served_after_a_zero_price_order() {
    let s = Scene::start().await.expect("scene");
    let agreement = s.order(CONSUMER, s.free).await.expect("order");
    let batches = s
        .download(CONSUMER, s.free, agreement)
        .await
        .expect("download");
    let expected = sample_batches(ROWS).expect("data");
    assert_eq!(fingerprint(&batches), fingerprint(&expected[..1]));
    assert_eq!(
        s.state(agreement).await.expect("s"),
        Some(AgreementState::Fulfilled)
    );
    // A second download reuses the grant and sends no second fulfil.
    let txs = s.provider_txs().await.expect("txs");
    s.download(CONSUMER, s.free, agreement)
        .await
        .expect("second download");
    assert_eq!(s.provider_txs().await.expect("txs"), txs);
}

#[tokio::test]
async fn an_eth_priced_asset_pays_an_owner_who_is_not_the_provider() {
    let world = insitu_integration_tests::World::start()
        .await
        .expect("world");
    let provider = Provider::start(&world, ProviderOptions::default())
        .await
        .expect("provider");
    const OWNER: u32 = 3;
    let owner_ledger = world.ledger(OWNER).await.expect("owner");
    let file = provider.path("eth.parquet");
    write_parquet(&file, &sample_batches(100).expect("data")).expect("write");
    let price = 10u64.pow(15);
    let published = insitu_flight::publish::publish_asset(
        &owner_ledger,
        &provider.catalog,
        insitu_flight::publish::PublishRequest {
            file,
            name: "eth priced".into(),
            description: String::new(),
            tags: vec![],
            services: vec![offer(price, None)],
            providers: vec![provider.address],
            metadata_url: provider.endpoint.clone(),
            constraints: None,
        },
    )
    .await
    .expect("publish");
    let owner = account(OWNER).address();
    let before = owner_ledger.balance(owner, None).await.expect("balance");
    let fee_before = owner_ledger
        .balance(account(FEE_RECEIVER).address(), None)
        .await
        .expect("fee");
    let consumer = world.ledger(CONSUMER).await.expect("consumer");
    let ordered = consumer.order(published.did, 0).await.expect("order");
    let token = insitu_integration_tests::token_for(&world, &account(CONSUMER), provider.address)
        .expect("token");
    let rows = download(
        &provider.endpoint,
        &token,
        published.did,
        ordered.agreement_id,
    )
    .await
    .expect("download");
    assert_eq!(fingerprint(&rows).0, 100);
    let fee = U256::from(price * FEE_BPS as u64 / 10_000);
    assert_eq!(
        owner_ledger.balance(owner, None).await.expect("balance"),
        before + U256::from(price) - fee
    );
    assert_eq!(
        owner_ledger
            .balance(account(FEE_RECEIVER).address(), None)
            .await
            .expect("fee"),
        fee_before + fee
    );
}

#[tokio::test]
async fn an_order_is_not_trusted_before_its_confirmations() {
    let s = Scene::start_with(ProviderOptions {
        confirmations: 3,
        ..ProviderOptions::default()
    })
    .await
    .expect("scene");
    let agreement = s.order(CONSUMER, s.free).await.expect("order");
    let mut client = s.client(CONSUMER).await;
    assert_refused(
        info(&mut client, s.free, agreement).await,
        tonic::Code::PermissionDenied,
        "confirmations",
    );
    assert_eq!(
        s.state(agreement).await.expect("s"),
        Some(AgreementState::Locked)
    );
    s.world.mine(2).await.expect("mine");
    let got = info(&mut client, s.free, agreement)
        .await
        .expect("confirmed now");
    let rows = fetch(&mut client, ticket_of(&got)).await.expect("rows");
    assert_eq!(rows, 10_000);
}

#[tokio::test]
async fn concurrent_first_uses_send_exactly_one_fulfil() {
    let s = Scene::start().await.expect("scene");
    let agreement = s.order(CONSUMER, s.free).await.expect("order");
    let before = s.provider_txs().await.expect("txs");
    let token = s.token(CONSUMER).expect("t");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let endpoint = s.provider.endpoint.clone();
        let token = token.clone();
        let did = s.free;
        tasks.push(tokio::spawn(async move {
            download(&endpoint, &token, did, agreement)
                .await
                .map(|b| b.len())
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("download");
    }
    assert_eq!(s.provider_txs().await.expect("txs"), before + 1);
}

#[tokio::test]
async fn objects_published_by_url_are_inspected_and_served_through_object_store() {
    use insitu_flight::StorageOptions;
    use insitu_flight::publish::{PublishRequest, publish_object};
    let world = insitu_integration_tests::World::start()
        .await
        .expect("world");
    let provider = Provider::start(&world, ProviderOptions::default())
        .await
        .expect("provider");
    let batches = sample_batches(1234).expect("data");
    let parquet = provider.path("by-url.parquet");
    write_parquet(&parquet, &batches).expect("parquet");
    let csv = provider.path("by-url.csv");
    insitu_integration_tests::data::write_csv(&csv, &batches).expect("csv");
    let request = |name: &str| PublishRequest {
        file: Default::default(),
        name: name.into(),
        description: String::new(),
        tags: vec![],
        services: vec![offer(0, None)],
        providers: vec![],
        metadata_url: provider.endpoint.clone(),
        constraints: None,
    };
    let consumer = world.ledger(CONSUMER).await.expect("consumer");
    let token = insitu_integration_tests::token_for(&world, &account(CONSUMER), provider.address)
        .expect("token");
    for path in [&parquet, &csv] {
        let url = format!("file://{}", path.display());
        let published = publish_object(
            provider.ledger.as_ref(),
            &provider.catalog,
            &url,
            &StorageOptions::default(),
            request("by url"),
        )
        .await
        .expect("publish by URL");
        assert_eq!(published.ddo.row_count, Some(1234), "{url}");
        let agreement = consumer
            .order(published.did, 0)
            .await
            .expect("order")
            .agreement_id;
        let got = download(&provider.endpoint, &token, published.did, agreement)
            .await
            .expect("download");
        assert_eq!(fingerprint(&got), fingerprint(&batches), "{url}");
    }
    // A cloud URL in a build without the `cloud` feature fails clearly and publishes nothing.
    let before = provider.catalog.list().await.expect("list").len();
    let err = publish_object(
        provider.ledger.as_ref(),
        &provider.catalog,
        "s3://bucket/data.parquet?secret=hunter2",
        &StorageOptions::default(),
        request("cloud"),
    )
    .await;
    if let Err(e) = err {
        let text = e.to_string();
        assert!(text.contains("nothing was published"), "{text}");
        assert!(
            !text.contains("hunter2"),
            "the URL's query must not leak: {text}"
        );
        assert_eq!(provider.catalog.list().await.expect("list").len(), before);
    }
}
