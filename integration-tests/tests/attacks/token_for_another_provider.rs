use insitu_integration_tests::{CONSUMER, account, token_for};
use tonic::Code;

use super::target;
use crate::common::{assert_refused, bearer, info, raw_client};

#[tokio::test]
async fn a_token_addressed_to_another_provider_is_refused() {
    let t = target().await;
    let s = &t.scene;
    let elsewhere = account(7).address();
    let token = token_for(&s.world, &account(CONSUMER), elsewhere).expect("token");
    let mut client = raw_client(&s.provider.endpoint, Some(&bearer(&token)))
        .await
        .expect("client");
    assert_refused(
        info(&mut client, s.free, t.agreement).await,
        Code::Unauthenticated,
        "addressed to provider",
    );
    t.assert_no_fulfil().await;
}
