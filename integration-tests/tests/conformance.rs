//! One conformance suite, run against both ledgers: `RpcLedger` on a real anvil and
//! `EmbeddedLedger` (the same compiled contracts in revm, in-process). Every scenario is
//! written once against the `Ledger` trait; both implementations must pass all of them.

use std::sync::Arc;

use alloy::primitives::{Address, B256, U256};
use insitu_integration_tests::{CONSUMER, OTHER_CONSUMER, PROVIDER, World, account};
use insitu_ledger::embedded::EmbeddedChain;

use crate::common::offer;
use insitu_ledger::{AgreementState, Did, Ledger, LedgerError, RegisterAsset, ServiceOffer};

/// The chain under test, with the development controls the scenarios need.
enum Chain {
    Anvil(World),
    Embedded(Arc<EmbeddedChain>),
}

impl Chain {
    async fn anvil() -> Chain {
        Chain::Anvil(World::start().await.expect("anvil world"))
    }

    fn embedded() -> Chain {
        let (chain, _) = EmbeddedChain::open(None).expect("embedded chain");
        Chain::Embedded(chain)
    }

    async fn ledger(&self, idx: u32) -> Arc<dyn Ledger> {
        match self {
            Chain::Anvil(w) => Arc::new(w.ledger(idx).await.expect("rpc ledger")),
            Chain::Embedded(c) => Arc::new(c.ledger(account(idx).address()).expect("ledger")),
        }
    }

    fn token(&self) -> Address {
        match self {
            Chain::Anvil(w) => w.token,
            Chain::Embedded(c) => c.test_token().expect("token"),
        }
    }

    async fn mint(&self, to: Address, amount: U256) {
        match self {
            Chain::Anvil(w) => w.mint(to, amount).await.expect("mint"),
            Chain::Embedded(c) => c.mint_test_token(to, amount).expect("mint"),
        }
    }

    async fn warp(&self, seconds: u64) {
        match self {
            Chain::Anvil(w) => w.warp(seconds).await.expect("warp"),
            Chain::Embedded(c) => c.advance_time(seconds).expect("warp"),
        }
    }

    async fn mine(&self, n: u64) {
        match self {
            Chain::Anvil(w) => w.mine(n).await.expect("mine"),
            Chain::Embedded(c) => c.mine(n).expect("mine"),
        }
    }
}

async fn register(ledger: &dyn Ledger, seed: u8, offers: Vec<ServiceOffer>) -> Did {
    let (did, tx) = ledger
        .register_asset(RegisterAsset {
            seed: B256::repeat_byte(seed),
            metadata_hash: B256::repeat_byte(0xaa),
            metadata_url: "http://127.0.0.1:50051".into(),
            providers: vec![ledger.account()],
            services: offers,
        })
        .await
        .expect("register");
    assert!(tx.gas_used > 0);
    did
}

fn reverted_with(r: Result<impl std::fmt::Debug, LedgerError>, needle: &str) {
    match r {
        Err(LedgerError::Reverted { reason, .. }) => {
            assert!(
                reason.contains(needle),
                "reason '{reason}' lacks '{needle}'"
            )
        }
        other => panic!("expected a revert with {needle}, got {other:?}"),
    }
}

async fn order_fulfil_and_entitlement(chain: Chain) {
    let provider = chain.ledger(PROVIDER).await;
    let consumer = chain.ledger(CONSUMER).await;
    let token = chain.token();
    let buyer = account(CONSUMER).address();
    chain.mint(buyer, U256::from(10_000u64)).await;
    let did = register(
        provider.as_ref(),
        1,
        vec![offer(1000, Some(token)), offer(7, None)],
    )
    .await;

    let record = provider
        .asset(did)
        .await
        .expect("asset")
        .expect("registered");
    assert_eq!(record.owner, provider.account());
    assert_eq!(record.services.len(), 2);
    assert_eq!(record.providers, vec![provider.account()]);

    for (index, tok) in [(0u64, Some(token)), (1u64, None)] {
        assert!(!consumer.is_entitled(buyer, did, index).await.expect("view"));
        let before_owner = provider.balance(provider.account(), tok).await.expect("b");
        let ordered = consumer.order(did, index).await.expect("order");
        let ag = provider
            .agreement(ordered.agreement_id)
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(ag.state, AgreementState::Locked);
        assert_eq!(ag.terms.consumer, buyer);
        assert_eq!(ag.terms.did, did);
        assert_eq!(ag.terms.service_index, index);
        assert_eq!(ag.terms.token, tok);
        assert!(ag.confirmations >= 1);
        let escrow = provider
            .balance(provider.contracts().agreements, tok)
            .await
            .expect("e");
        assert_eq!(escrow, ag.terms.price, "the price is in escrow");

        chain.mine(2).await;
        let deeper = provider
            .agreement(ag.id)
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(
            deeper.confirmations,
            ag.confirmations + 2,
            "events carry their block"
        );

        let tx = provider.fulfill(&ag).await.expect("fulfil");
        assert!(tx.gas_used > 0);
        let done = provider
            .agreement(ag.id)
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(done.state, AgreementState::Fulfilled);
        let now = provider.chain_time().await.expect("time");
        assert!(done.access_end > now && done.access_end <= now + 3600 + 5);
        assert!(consumer.is_entitled(buyer, did, index).await.expect("view"));
        let owner_gain = provider.balance(provider.account(), tok).await.expect("b") - before_owner;
        if tok.is_some() {
            assert_eq!(
                owner_gain,
                ag.terms.price - ag.terms.fee,
                "owner paid price minus fee"
            );
        }
        assert_eq!(
            provider
                .balance(provider.contracts().agreements, tok)
                .await
                .expect("e"),
            U256::ZERO,
            "escrow released"
        );
        // A second fulfil of the same agreement is refused.
        reverted_with(provider.fulfill(&done).await, "WrongState");
    }
}

async fn refund_after_timeout_only(chain: Chain) {
    let provider = chain.ledger(PROVIDER).await;
    let consumer = chain.ledger(CONSUMER).await;
    let token = chain.token();
    let buyer = account(CONSUMER).address();
    chain.mint(buyer, U256::from(5_000u64)).await;
    let did = register(provider.as_ref(), 2, vec![offer(1000, Some(token))]).await;
    let ordered = consumer.order(did, 0).await.expect("order");
    let ag = consumer
        .agreement(ordered.agreement_id)
        .await
        .expect("r")
        .expect("e");
    assert_eq!(
        consumer.balance(buyer, Some(token)).await.expect("b"),
        U256::from(4_000u64)
    );

    reverted_with(consumer.refund(&ag).await, "RefundTooEarly");
    reverted_with(
        chain.ledger(OTHER_CONSUMER).await.refund(&ag).await,
        "NotConsumer",
    );
    chain.warp(601).await;
    reverted_with(
        chain.ledger(OTHER_CONSUMER).await.refund(&ag).await,
        "NotConsumer",
    );
    reverted_with(provider.fulfill(&ag).await, "FulfillTooLate");
    consumer.refund(&ag).await.expect("refund");
    assert_eq!(
        consumer.balance(buyer, Some(token)).await.expect("b"),
        U256::from(5_000u64)
    );
    let refunded = consumer.agreement(ag.id).await.expect("r").expect("e");
    assert_eq!(refunded.state, AgreementState::Refunded);
    reverted_with(consumer.refund(&refunded).await, "WrongState");
    reverted_with(provider.fulfill(&refunded).await, "WrongState");
    assert!(!consumer.is_entitled(buyer, did, 0).await.expect("view"));
}

async fn error_cases(chain: Chain) {
    let provider = chain.ledger(PROVIDER).await;
    let consumer = chain.ledger(CONSUMER).await;
    let stranger = chain.ledger(OTHER_CONSUMER).await;
    let token = chain.token();
    let did = register(
        provider.as_ref(),
        3,
        vec![offer(1000, Some(token)), offer(5, None)],
    )
    .await;

    // Unknown asset, unknown service, unknown agreement.
    let nowhere = Did(B256::repeat_byte(0x77));
    assert!(provider.asset(nowhere).await.expect("read").is_none());
    assert!(matches!(
        consumer.order(nowhere, 0).await,
        Err(LedgerError::UnknownAsset(_))
    ));
    assert!(matches!(
        consumer.order(did, 9).await,
        Err(LedgerError::UnknownService { index: 9, .. })
    ));
    let unknown = insitu_ledger::AgreementId(B256::repeat_byte(0x55));
    assert!(provider.agreement(unknown).await.expect("read").is_none());

    // The same seed cannot register twice; a zero-duration service is refused.
    reverted_with(
        provider
            .register_asset(RegisterAsset {
                seed: B256::repeat_byte(3),
                metadata_hash: B256::ZERO,
                metadata_url: String::new(),
                providers: vec![provider.account()],
                services: vec![offer(1, None)],
            })
            .await,
        "AssetExists",
    );
    let mut bad = offer(1, None);
    bad.access_duration = 0;
    reverted_with(
        provider
            .register_asset(RegisterAsset {
                seed: B256::repeat_byte(4),
                metadata_hash: B256::ZERO,
                metadata_url: String::new(),
                providers: vec![provider.account()],
                services: vec![bad],
            })
            .await,
        "InvalidService",
    );

    // Paying with no tokens fails and locks nothing.
    let r = stranger.order(did, 0).await;
    assert!(matches!(r, Err(LedgerError::Reverted { .. })), "{r:?}");

    // Only a provider of the asset may fulfil; only the owner may change metadata.
    let ordered = consumer.order(did, 1).await.expect("eth order");
    let ag = consumer
        .agreement(ordered.agreement_id)
        .await
        .expect("r")
        .expect("e");
    reverted_with(stranger.fulfill(&ag).await, "NotProvider");
    reverted_with(
        stranger
            .set_metadata(did, B256::repeat_byte(1), "x".into())
            .await,
        "NotOwner",
    );
    provider
        .set_metadata(did, B256::repeat_byte(1), "http://127.0.0.1:1".into())
        .await
        .expect("owner updates metadata");
    assert_eq!(
        provider
            .asset(did)
            .await
            .expect("r")
            .expect("e")
            .metadata_hash,
        B256::repeat_byte(1)
    );

    // Terms cannot be altered after the order: a fulfil with changed terms is refused.
    let mut cheaper = ag.clone();
    cheaper.terms.price = U256::from(1);
    reverted_with(provider.fulfill(&cheaper).await, "TermsMismatch");
}

/// A provider registers an asset for a consumer (a compute result): the consumer owns
/// it, the provider alone serves it, and the DID is the owner's.
async fn register_for_an_owner(chain: Chain) {
    let provider = chain.ledger(PROVIDER).await;
    let owner = account(CONSUMER).address();
    let seed = B256::repeat_byte(0x42);
    let (did, tx) = provider
        .register_asset_for(
            owner,
            RegisterAsset {
                seed,
                metadata_hash: B256::repeat_byte(0xaa),
                metadata_url: "http://127.0.0.1:50051".into(),
                providers: vec![],
                services: vec![offer(0, None)],
            },
        )
        .await
        .expect("registerFor");
    assert!(tx.gas_used > 0);
    assert_eq!(did, Did::derive(owner, seed));
    let record = provider
        .asset(did)
        .await
        .expect("read")
        .expect("registered");
    assert_eq!(record.owner, owner);
    assert_eq!(record.providers, vec![account(PROVIDER).address()]);
    // The same seed for the same owner is taken.
    let again = provider
        .register_asset_for(
            owner,
            RegisterAsset {
                seed,
                metadata_hash: B256::repeat_byte(0xbb),
                metadata_url: String::new(),
                providers: vec![],
                services: vec![offer(0, None)],
            },
        )
        .await;
    reverted_with(again, "AssetExists");
}

#[tokio::test]
async fn rpc_ledger_registers_for_an_owner() {
    register_for_an_owner(Chain::anvil().await).await;
}

#[tokio::test]
async fn embedded_ledger_registers_for_an_owner() {
    register_for_an_owner(Chain::embedded()).await;
}

#[tokio::test]
async fn rpc_ledger_orders_fulfils_and_entitles() {
    order_fulfil_and_entitlement(Chain::anvil().await).await;
}

#[tokio::test]
async fn embedded_ledger_orders_fulfils_and_entitles() {
    order_fulfil_and_entitlement(Chain::embedded()).await;
}

#[tokio::test]
async fn rpc_ledger_refunds_only_after_the_timeout() {
    refund_after_timeout_only(Chain::anvil().await).await;
}

#[tokio::test]
async fn embedded_ledger_refunds_only_after_the_timeout() {
    refund_after_timeout_only(Chain::embedded()).await;
}

#[tokio::test]
async fn rpc_ledger_refuses_every_error_case() {
    error_cases(Chain::anvil().await).await;
}

#[tokio::test]
async fn embedded_ledger_refuses_every_error_case() {
    error_cases(Chain::embedded()).await;
}

#[tokio::test]
async fn embedded_chain_state_survives_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let (chain, genesis) = EmbeddedChain::open(Some(dir.path())).expect("open");
    assert!(!genesis.resumed);
    let provider = chain.ledger(account(PROVIDER).address()).expect("ledger");
    let consumer = chain.ledger(account(CONSUMER).address()).expect("ledger");
    chain
        .mint_test_token(account(CONSUMER).address(), U256::from(500u64))
        .expect("mint");
    let did = register(&provider, 9, vec![offer(100, Some(genesis.test_token))]).await;
    let ordered = consumer.order(did, 0).await.expect("order");
    let ag = provider
        .agreement(ordered.agreement_id)
        .await
        .expect("r")
        .expect("e");
    provider.fulfill(&ag).await.expect("fulfil");
    drop((chain, provider, consumer));

    let (chain, again) = EmbeddedChain::open(Some(dir.path())).expect("reopen");
    assert!(again.resumed);
    assert_eq!(again.contracts, genesis.contracts);
    let l = chain.ledger(account(PROVIDER).address()).expect("ledger");
    assert!(l.asset(did).await.expect("asset").is_some(), "asset kept");
    let kept = l
        .agreement(ag.id)
        .await
        .expect("r")
        .expect("agreement kept");
    assert_eq!(kept.state, AgreementState::Fulfilled);
    assert_eq!(
        l.balance(account(CONSUMER).address(), Some(genesis.test_token))
            .await
            .expect("b"),
        U256::from(400u64),
        "balances kept"
    );
    assert!(
        l.is_entitled(account(CONSUMER).address(), did, 0)
            .await
            .expect("view")
    );
}

#[tokio::test]
async fn a_second_writer_of_an_embedded_chain_is_refused_but_readers_are_not() {
    let dir = tempfile::tempdir().expect("dir");
    let (first, _) = EmbeddedChain::open(Some(dir.path())).expect("open");
    let err = EmbeddedChain::open(Some(dir.path())).expect_err("second writer");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    let (reader, _) = EmbeddedChain::open_read_only(dir.path()).expect("reader");
    let l = reader.ledger(account(CONSUMER).address()).expect("ledger");
    assert!(l.chain_time().await.is_ok());
    let refused = reader.mint_test_token(account(CONSUMER).address(), U256::from(1u64));
    assert!(
        refused.is_err(),
        "a read-only chain must refuse transactions"
    );
    drop(first);
    EmbeddedChain::open(Some(dir.path())).expect("the lock is released with the first writer");
}
