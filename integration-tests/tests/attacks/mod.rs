//! The attack suite: one test per attack of the first two attacker rows of
//! `../shared/design/SECURITY.md`. Every attack must be refused with a clear status and
//! must cause no `fulfill` transaction (the provider's transaction count is unchanged and
//! the agreement stays locked, so no escrow is released).
//!
//! Row 1, a consumer with no agreement: calls Flight directly, replays a token or a
//! ticket, forges a signature, uses a token for another chain or provider.
//! Row 2, a consumer with an agreement for asset A: reads asset B, uses a refunded
//! agreement, or one whose lock is missing.
//! A consumer with a query grant: SQL that tries to leave the gated session
//! (`sql_escapes`), and SQL that tries to read protected rows or columns past the
//! provider's constraints (`query_policy`, one test per technique).

mod agreement_for_another_asset;
mod another_consumers_agreement;
mod compute;
mod do_get_without_a_ticket;
mod expired_token;
mod forged_signature;
mod missing_lock;
mod no_token;
mod query_policy;
mod refunded_agreement;
mod replayed_ticket;
mod sql_escapes;
mod tampered_ticket;
mod token_for_another_chain;
mod token_for_another_provider;

use insitu_integration_tests::CONSUMER;
use insitu_ledger::{AgreementId, AgreementState};

use crate::common::Scene;

/// A scene where CONSUMER holds a locked (ordered, unfulfilled) agreement on the free
/// asset, and the provider's transaction count before any attack.
pub struct Target {
    pub scene: Scene,
    pub agreement: AgreementId,
    pub provider_txs: u64,
}

pub async fn target() -> Target {
    let scene = Scene::start().await.expect("scene");
    let agreement = scene.order(CONSUMER, scene.free).await.expect("order");
    let provider_txs = scene.provider_txs().await.expect("txs");
    Target {
        scene,
        agreement,
        provider_txs,
    }
}

impl Target {
    /// The attack sent no fulfil: no provider transaction, agreement still locked.
    pub async fn assert_no_fulfil(&self) {
        assert_eq!(
            self.scene.provider_txs().await.expect("txs"),
            self.provider_txs,
            "the attack made the provider send a transaction"
        );
        assert_eq!(
            self.scene.state(self.agreement).await.expect("state"),
            Some(AgreementState::Locked),
            "the attack changed the agreement"
        );
    }
}
