use insitu_integration_tests::CONSUMER;
use insitu_ledger::{AgreementState, Ledger};
use tonic::Code;

use crate::common::{Scene, assert_refused, info};

#[tokio::test]
async fn a_refunded_agreement_grants_nothing() {
    let s = Scene::start().await.expect("scene");
    let id = s.order(CONSUMER, s.paid).await.expect("order");
    let consumer = s.world.ledger(CONSUMER).await.expect("ledger");
    let agreement = consumer.agreement(id).await.expect("read").expect("exists");
    s.world.warp(601).await.expect("warp");
    consumer.refund(&agreement).await.expect("refund");
    let txs = s.provider_txs().await.expect("txs");
    let mut client = s.client(CONSUMER).await;
    assert_refused(
        info(&mut client, s.paid, id).await,
        Code::PermissionDenied,
        "was refunded",
    );
    assert_eq!(s.provider_txs().await.expect("txs"), txs);
    assert_eq!(
        s.state(id).await.expect("state"),
        Some(AgreementState::Refunded)
    );
}
