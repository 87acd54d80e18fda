use std::time::Duration;

use insitu_integration_tests::now;
use insitu_policy::AccessClaims;
use tonic::Code;

use super::target;
use crate::common::{assert_refused, info};

#[tokio::test]
async fn an_expired_token_is_refused() {
    let t = target().await;
    let s = &t.scene;
    let expired = AccessClaims {
        issued_at: now() - 7200,
        lifetime: Duration::from_secs(3600),
        ..s.claims()
    };
    let mut client = s.client_with(&expired).await;
    assert_refused(
        info(&mut client, s.free, t.agreement).await,
        Code::Unauthenticated,
        "expired",
    );
    t.assert_no_fulfil().await;
}
