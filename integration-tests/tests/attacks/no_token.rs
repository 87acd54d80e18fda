use tonic::Code;

use super::target;
use crate::common::{assert_refused, info, raw_client};

#[tokio::test]
async fn a_call_without_a_token_is_unauthenticated() {
    let t = target().await;
    let s = &t.scene;
    let mut client = raw_client(&s.provider.endpoint, None)
        .await
        .expect("client");
    assert_refused(
        info(&mut client, s.free, t.agreement).await,
        Code::Unauthenticated,
        "missing authorization",
    );
    let actions = client.list_actions().await.map_err(crate::common::status);
    assert_refused(
        actions.map(|_| ()),
        Code::Unauthenticated,
        "missing authorization",
    );
    let mut garbage = raw_client(&s.provider.endpoint, Some("Bearer not-a-token"))
        .await
        .expect("client");
    assert_refused(
        info(&mut garbage, s.free, t.agreement).await,
        Code::Unauthenticated,
        "invalid access token",
    );
    t.assert_no_fulfil().await;
}
