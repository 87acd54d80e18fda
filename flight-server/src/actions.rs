//! Extra `DoAction`s mounted by other insitu libraries (compute, training) on the one
//! Flight service, so a provider keeps one endpoint and one authentication layer.
//!
//! The router hands a handler only authenticated callers: the tower layer has verified
//! the token (signature, audience, chain, expiry) before the action is decoded. The
//! handler checks the token's scope and asks the policy engine for the entitlement, on
//! every call.

use arrow_flight::Action;
use insitu_policy::Principal;
use tonic::Status;

/// A set of actions served beside Flight and Flight SQL.
#[tonic::async_trait]
pub trait ActionHandler: Send + Sync + std::fmt::Debug {
    /// The action types handled, with a one-line description each (for `ListActions`).
    fn actions(&self) -> Vec<(&'static str, &'static str)>;
    /// The largest request body an action accepts; the service raises its message
    /// size limit to fit.
    fn max_request_bytes(&self) -> usize {
        1 << 20
    }
    /// Handles one action for an authenticated caller. The result is one message body.
    async fn handle(&self, principal: Principal, action: Action) -> Result<Vec<u8>, Status>;
}
