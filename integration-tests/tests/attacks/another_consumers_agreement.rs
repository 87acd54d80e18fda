use insitu_integration_tests::OTHER_CONSUMER;
use tonic::Code;

use super::target;
use crate::common::{assert_refused, bearer, info, raw_client};

#[tokio::test]
async fn a_valid_token_cannot_use_someone_elses_agreement() {
    let t = target().await;
    let s = &t.scene;
    let token = s.token(OTHER_CONSUMER).expect("token");
    let mut client = raw_client(&s.provider.endpoint, Some(&bearer(&token)))
        .await
        .expect("client");
    assert_refused(
        info(&mut client, s.free, t.agreement).await,
        Code::PermissionDenied,
        "belongs to another consumer",
    );
    t.assert_no_fulfil().await;
}
