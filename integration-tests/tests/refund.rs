//! Refunds: the consumer gets the payment back after the timeout, and a refunded
//! agreement can never be fulfilled or used.

use alloy::primitives::U256;
use insitu_integration_tests::{CONSUMER, account};
use insitu_ledger::{AgreementState, Ledger, LedgerError};

use crate::common::{PRICE, Scene, assert_refused, info};

#[tokio::test]
async fn a_refund_after_the_timeout_returns_the_payment_and_fulfilment_becomes_impossible() {
    let s = Scene::start().await.expect("scene");
    let consumer_ledger = s.world.ledger(CONSUMER).await.expect("consumer");
    let consumer = account(CONSUMER).address();
    let token = Some(s.world.token);
    let before = consumer_ledger.balance(consumer, token).await.expect("b");
    let id = s.order(CONSUMER, s.paid).await.expect("order");
    assert_eq!(
        consumer_ledger.balance(consumer, token).await.expect("b"),
        before - U256::from(PRICE)
    );
    let agreement = consumer_ledger
        .agreement(id)
        .await
        .expect("read")
        .expect("exists");

    let early = consumer_ledger.refund(&agreement).await;
    assert!(
        matches!(&early, Err(LedgerError::Reverted { reason, .. }) if reason.contains("RefundTooEarly")),
        "{early:?}"
    );

    s.world.warp(601).await.expect("warp");
    consumer_ledger.refund(&agreement).await.expect("refund");
    assert_eq!(
        consumer_ledger.balance(consumer, token).await.expect("b"),
        before
    );
    assert_eq!(
        s.state(id).await.expect("s"),
        Some(AgreementState::Refunded)
    );

    // The provider can no longer fulfil it, directly or through a download.
    let direct = s.provider.ledger.fulfill(&agreement).await;
    assert!(
        matches!(&direct, Err(LedgerError::Reverted { reason, .. }) if reason.contains("WrongState")),
        "{direct:?}"
    );
    let mut client = s.client(CONSUMER).await;
    assert_refused(
        info(&mut client, s.paid, id).await,
        tonic::Code::PermissionDenied,
        "refunded",
    );
    // And the consumer cannot refund twice.
    assert!(consumer_ledger.refund(&agreement).await.is_err());
}

#[tokio::test]
async fn the_provider_cannot_fulfil_after_the_deadline_so_the_consumer_is_not_charged() {
    let s = Scene::start().await.expect("scene");
    let id = s.order(CONSUMER, s.paid).await.expect("order");
    s.world.warp(601).await.expect("warp");
    let mut client = s.client(CONSUMER).await;
    assert_refused(
        info(&mut client, s.paid, id).await,
        tonic::Code::PermissionDenied,
        "may refund",
    );
    assert_eq!(s.state(id).await.expect("s"), Some(AgreementState::Locked));
}
