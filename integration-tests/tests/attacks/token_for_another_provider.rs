use insitu_integration_tests::account;
use insitu_policy::AccessClaims;
use tonic::Code;

use super::target;
use crate::common::{assert_refused, info};

#[tokio::test]
async fn a_token_addressed_to_another_provider_is_refused() {
    let t = target().await;
    let s = &t.scene;
    let elsewhere = AccessClaims {
        provider: account(7).address(),
        ..s.claims()
    };
    let mut client = s.client_with(&elsewhere).await;
    assert_refused(
        info(&mut client, s.free, t.agreement).await,
        Code::Unauthenticated,
        "addressed to provider",
    );
    t.assert_no_fulfil().await;
}
