//! The Flight RPCs, one file each. This module only routes: each handler lives in its
//! own file and returns [`crate::FlightError`], converted to `tonic::Status` in one place.

mod do_get;
mod flight_info;
mod handshake;
mod unsupported;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use insitu_catalog::AssetStore;
use insitu_policy::{Action as PolicyAction, Decision, Grant, PolicyEngine, Principal};
use tonic::{Request, Response, Status, Streaming};

use crate::descriptor::AssetRequest;
use crate::error::{FlightError, Result};
use crate::ticket::TicketSigner;

/// The gated Flight service. Build it with [`crate::FlightServiceBuilder`].
#[derive(Debug, Clone)]
pub struct GatedFlight {
    pub(crate) engine: Arc<PolicyEngine>,
    pub(crate) catalog: AssetStore,
    pub(crate) tickets: Arc<TicketSigner>,
    pub(crate) ticket_ttl: Duration,
    pub(crate) storage: Arc<crate::source::StorageOptions>,
}

/// The catalog entry and location of a registered asset this provider serves; an
/// unregistered or unknown asset is "not served here", whatever the reason.
pub(crate) async fn served_asset(
    catalog: &AssetStore,
    did: insitu_ledger::Did,
) -> Result<(insitu_catalog::StoredAsset, insitu_catalog::StorageLocation)> {
    let unknown = || FlightError::UnknownAsset(did.to_string());
    let internal = |e: insitu_catalog::CatalogError| FlightError::Internal(e.to_string());
    let asset = catalog
        .get(did)
        .await
        .map_err(internal)?
        .ok_or_else(unknown)?;
    if !asset.registered {
        return Err(unknown());
    }
    let location = catalog
        .location(did)
        .await
        .map_err(internal)?
        .ok_or_else(unknown)?;
    Ok((asset, location))
}

/// The `PollInfo` of a request whose `FlightInfo` is already complete.
pub(crate) fn complete_poll(descriptor: FlightDescriptor, info: FlightInfo) -> PollInfo {
    PollInfo {
        info: Some(info),
        flight_descriptor: Some(descriptor),
        progress: Some(1.0),
        expiration_time: None,
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl GatedFlight {
    /// Asks the policy engine; every data-bearing RPC goes through here.
    pub(crate) async fn grant(
        &self,
        principal: &Principal,
        request: AssetRequest,
        action: PolicyAction,
    ) -> Result<Grant> {
        match self
            .engine
            .decide(principal, action, request.did, request.agreement)
            .await
        {
            Decision::Allow(grant) => Ok(grant),
            Decision::Deny(reason) => Err(FlightError::Denied(reason)),
        }
    }
}

type Stream<T> = BoxStream<'static, std::result::Result<T, Status>>;

#[tonic::async_trait]
impl FlightService for GatedFlight {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;
    type DoExchangeStream = Stream<FlightData>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> std::result::Result<Response<Self::HandshakeStream>, Status> {
        handshake::handshake(self, request).await
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> std::result::Result<Response<Self::ListFlightsStream>, Status> {
        Err(unsupported::list_flights())
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        Ok(Response::new(
            flight_info::get_flight_info(self, request).await?,
        ))
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<PollInfo>, Status> {
        // Downloads are ready at once: PollInfo carries the complete FlightInfo.
        let descriptor = request.get_ref().clone();
        let info = flight_info::get_flight_info(self, request).await?;
        Ok(Response::new(complete_poll(descriptor, info)))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<SchemaResult>, Status> {
        Ok(Response::new(flight_info::get_schema(self, request).await?))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<Self::DoGetStream>, Status> {
        Ok(Response::new(do_get::do_get(self, request).await?))
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoPutStream>, Status> {
        Err(unsupported::do_put())
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> std::result::Result<Response<Self::DoActionStream>, Status> {
        Err(unsupported::do_action(&request.get_ref().r#type))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> std::result::Result<Response<Self::ListActionsStream>, Status> {
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoExchangeStream>, Status> {
        Err(unsupported::do_exchange())
    }
}
