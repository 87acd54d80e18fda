//! `DoExchange` streams mounted by other insitu libraries (federated training), on the one
//! Flight service and behind the same authentication as everything else.
//!
//! A handler claims a token scope. The router hands it the stream only after the tower
//! layer has verified the caller's token, and only for a token signed for that scope, so
//! a download or query token never opens a training stream. The handler still checks the
//! caller's entitlement itself, before it reads anything the caller sent.

use arrow_flight::FlightData;
use futures::stream::BoxStream;
use insitu_policy::Principal;
use tonic::Status;

/// A stream of Flight messages in one direction.
pub type ExchangeStream = BoxStream<'static, Result<FlightData, Status>>;

/// A bidirectional Flight service for one token scope.
#[tonic::async_trait]
pub trait ExchangeHandler: Send + Sync + std::fmt::Debug {
    /// The token scope whose `DoExchange` calls this handler serves.
    fn scope(&self) -> &'static str;
    /// The largest message the handler accepts; the service raises its limit to fit.
    fn max_message_bytes(&self) -> usize {
        4 << 20
    }
    /// Serves one exchange for an authenticated caller.
    async fn exchange(
        &self,
        principal: Principal,
        incoming: ExchangeStream,
    ) -> Result<ExchangeStream, Status>;
}
