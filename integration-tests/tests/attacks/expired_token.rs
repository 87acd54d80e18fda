use std::time::Duration;

use insitu_integration_tests::{CONSUMER, account, now};
use insitu_policy::{AccessClaims, sign_access_token};
use tonic::Code;

use super::target;
use crate::common::{assert_refused, bearer, info, raw_client};

#[tokio::test]
async fn an_expired_token_is_refused() {
    let t = target().await;
    let s = &t.scene;
    let d = &s.world.deployed;
    let token = sign_access_token(
        &account(CONSUMER),
        &AccessClaims {
            provider: s.provider.address,
            chain_id: d.chain_id,
            verifying_contract: d.addresses.agreements,
            issued_at: now() - 7200,
            lifetime: Duration::from_secs(3600),
            scope: "access".into(),
        },
    )
    .expect("sign");
    let mut client = raw_client(&s.provider.endpoint, Some(&bearer(&token)))
        .await
        .expect("client");
    assert_refused(
        info(&mut client, s.free, t.agreement).await,
        Code::Unauthenticated,
        "expired",
    );
    t.assert_no_fulfil().await;
}
