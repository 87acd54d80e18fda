use insitu_integration_tests::{CONSUMER, OTHER_CONSUMER};
use tonic::Code;

use super::target;
use crate::common::{assert_refused, fetch, info, ticket_of};

#[tokio::test]
async fn a_ticket_replayed_by_another_principal_is_refused() {
    let t = target().await;
    let s = &t.scene;
    // The paid asset: the victim orders it and obtains a ticket (fulfilling legitimately).
    let victim_agreement = s.order(CONSUMER, s.paid).await.expect("order");
    let mut victim = s.client(CONSUMER).await;
    let stolen = ticket_of(
        &info(&mut victim, s.paid, victim_agreement)
            .await
            .expect("victim info"),
    );
    let txs_after_victim = s.provider_txs().await.expect("txs");

    let mut thief = s.client(OTHER_CONSUMER).await;
    assert_refused(
        fetch(&mut thief, stolen.clone()).await,
        Code::PermissionDenied,
        "issued to another principal",
    );
    assert_eq!(s.provider_txs().await.expect("txs"), txs_after_victim);
    // The victim's own use still works.
    assert!(fetch(&mut victim, stolen).await.expect("victim download") > 0);
    // The free asset's locked agreement was never touched.
    assert_eq!(
        s.state(t.agreement).await.expect("state"),
        Some(insitu_ledger::AgreementState::Locked)
    );
}
