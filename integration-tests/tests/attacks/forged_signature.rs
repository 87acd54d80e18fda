use alloy::signers::SignerSync;
use alloy::sol_types::SolStruct;
use insitu_integration_tests::{CONSUMER, account};
use insitu_ledger::eip712::insitu_domain;
use insitu_policy::{decode_token, encode_token};
use tonic::Code;

use super::target;
use crate::common::{assert_refused, bearer, info, raw_client};

#[tokio::test]
async fn a_token_claiming_a_consumer_but_signed_by_another_key_is_refused() {
    let t = target().await;
    let s = &t.scene;
    let d = &s.world.deployed;
    // The attacker copies the consumer's claims and signs them with its own key.
    let genuine = s.token(CONSUMER).expect("token");
    let (claims, _) = decode_token(&genuine).expect("decode");
    let hash = claims.eip712_signing_hash(&insitu_domain(d.chain_id, d.addresses.agreements));
    let attacker_sig = account(6).sign_hash_sync(&hash).expect("sign");
    let forged = encode_token(&claims, &attacker_sig);
    let mut client = raw_client(&s.provider.endpoint, Some(&bearer(&forged)))
        .await
        .expect("client");
    assert_refused(
        info(&mut client, s.free, t.agreement).await,
        Code::Unauthenticated,
        "does not match its consumer",
    );
    // And flipping a bit of a genuine signature fails too.
    let mut raw: Vec<char> = genuine.chars().collect();
    let last = raw.len() - 3;
    raw[last] = if raw[last] == 'A' { 'B' } else { 'A' };
    let flipped: String = raw.into_iter().collect();
    let mut client = raw_client(&s.provider.endpoint, Some(&bearer(&flipped)))
        .await
        .expect("client");
    assert_refused(
        info(&mut client, s.free, t.agreement).await,
        Code::Unauthenticated,
        "invalid access token",
    );
    let _ = account(CONSUMER);
    t.assert_no_fulfil().await;
}
