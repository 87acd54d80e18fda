use arrow_flight::Ticket;
use insitu_integration_tests::CONSUMER;
use tonic::Code;

use super::target;
use crate::common::{assert_refused, fetch, info, ticket_of};

#[tokio::test]
async fn a_tampered_ticket_is_refused() {
    let t = target().await;
    let s = &t.scene;
    // Obtain a genuine ticket for the paid asset, then alter it to point elsewhere.
    let agreement = s.order(CONSUMER, s.paid).await.expect("order");
    let mut client = s.client(CONSUMER).await;
    let genuine = ticket_of(&info(&mut client, s.paid, agreement).await.expect("info"));
    let txs = s.provider_txs().await.expect("txs");
    let mut bytes = genuine.ticket.to_vec();
    // Rewrite the asset bytes to the free asset (what an attacker would want to swap).
    bytes[21..53].copy_from_slice(s.free.0.as_slice());
    assert_refused(
        fetch(&mut client, Ticket::new(bytes.clone())).await,
        Code::PermissionDenied,
        "was not issued by this provider or was altered",
    );
    // Extending the expiry is caught the same way.
    let mut later = genuine.ticket.to_vec();
    later[117] ^= 0x7f;
    assert_refused(
        fetch(&mut client, Ticket::new(later)).await,
        Code::PermissionDenied,
        "altered",
    );
    assert_eq!(
        s.provider_txs().await.expect("txs"),
        txs,
        "no transaction after the legitimate fulfil"
    );
    assert_eq!(
        s.state(t.agreement).await.expect("state"),
        Some(insitu_ledger::AgreementState::Locked)
    );
}
