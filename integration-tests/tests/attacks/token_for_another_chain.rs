use insitu_policy::AccessClaims;
use tonic::Code;

use super::target;
use crate::common::{assert_refused, info};

#[tokio::test]
async fn a_token_signed_for_another_chain_is_refused() {
    let t = target().await;
    let s = &t.scene;
    let mainnet = AccessClaims {
        chain_id: 1,
        ..s.claims()
    };
    let mut client = s.client_with(&mainnet).await;
    // The EIP-712 domain binds the chain: the signature recovers to another address.
    assert_refused(
        info(&mut client, s.free, t.agreement).await,
        Code::Unauthenticated,
        "another chain or deployment",
    );
    t.assert_no_fulfil().await;
}
