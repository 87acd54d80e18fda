use insitu_integration_tests::CONSUMER;
use tonic::Code;

use super::target;
use crate::common::{assert_refused, info};

#[tokio::test]
async fn an_agreement_for_asset_a_does_not_open_asset_b() {
    let t = target().await;
    let s = &t.scene;
    // The consumer holds an agreement for the free asset and asks for the paid one with it.
    let mut client = s.client(CONSUMER).await;
    assert_refused(
        info(&mut client, s.paid, t.agreement).await,
        Code::PermissionDenied,
        &format!("is not for asset {}", s.paid),
    );
    t.assert_no_fulfil().await;
}
