use std::time::Duration;

use insitu_integration_tests::{CONSUMER, account, now};
use insitu_policy::{AccessClaims, sign_access_token};
use tonic::Code;

use super::target;
use crate::common::{assert_refused, bearer, info, raw_client};

#[tokio::test]
async fn a_token_signed_for_another_chain_is_refused() {
    let t = target().await;
    let s = &t.scene;
    let d = &s.world.deployed;
    let token = sign_access_token(
        &account(CONSUMER),
        &AccessClaims {
            provider: s.provider.address,
            chain_id: 1,
            verifying_contract: d.addresses.agreements,
            issued_at: now(),
            lifetime: Duration::from_secs(600),
            scope: "access".into(),
        },
    )
    .expect("sign");
    let mut client = raw_client(&s.provider.endpoint, Some(&bearer(&token)))
        .await
        .expect("client");
    // The EIP-712 domain binds the chain: the signature recovers to another address.
    assert_refused(
        info(&mut client, s.free, t.agreement).await,
        Code::Unauthenticated,
        "another chain or deployment",
    );
    t.assert_no_fulfil().await;
}
