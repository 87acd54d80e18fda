use alloy::primitives::{B256, keccak256};
use insitu_integration_tests::CONSUMER;
use insitu_ledger::AgreementId;
use tonic::Code;

use super::target;
use crate::common::{assert_refused, info};

#[tokio::test]
async fn an_agreement_whose_lock_is_missing_is_refused_before_any_fulfil() {
    let t = target().await;
    let s = &t.scene;
    // An agreement id shaped like a real one (the next nonce) that was never ordered, so
    // no payment is locked for it.
    let fabricated = AgreementId(keccak256(
        [
            s.world.deployed.addresses.agreements.as_slice(),
            B256::with_last_byte(99).as_slice(),
        ]
        .concat(),
    ));
    let mut client = s.client(CONSUMER).await;
    assert_refused(
        info(&mut client, s.free, fabricated).await,
        Code::PermissionDenied,
        "no order and no payment lock",
    );
    t.assert_no_fulfil().await;
}
