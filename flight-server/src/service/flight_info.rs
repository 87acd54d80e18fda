//! `GetFlightInfo` and `GetSchema` for download assets: check the grant, then describe the
//! stream and hand out a ticket bound to this principal.

use alloy::primitives::B256;
use arrow::datatypes::SchemaRef;
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, SchemaAsIpc, SchemaResult, Ticket,
};
use insitu_catalog::{StorageLocation, StoredAsset};
use insitu_ledger::Did;
use insitu_policy::{Action, Principal};
use tonic::Request;

use super::{GatedFlight, unix_now};
use crate::auth;
use crate::descriptor::AssetRequest;
use crate::error::{FlightError, Result};
use crate::source::read_schema;
use crate::ticket::TicketClaims;

/// The catalog entry and location of an asset this provider serves.
pub(super) async fn served_asset(
    svc: &GatedFlight,
    did: Did,
) -> Result<(StoredAsset, StorageLocation)> {
    super::served_asset(&svc.catalog, did).await
}

/// What a download ticket is bound to: the asset's published metadata. If the asset is
/// republished, old tickets stop working.
pub(super) fn fingerprint(asset: &StoredAsset) -> Result<B256> {
    asset
        .ddo
        .metadata_hash()
        .map_err(|e| FlightError::Internal(e.to_string()))
}

async fn checked(
    svc: &GatedFlight,
    request: &Request<FlightDescriptor>,
) -> Result<(
    Principal,
    AssetRequest,
    insitu_policy::Grant,
    StoredAsset,
    SchemaRef,
)> {
    let principal = auth::principal(request)
        .map_err(|s| FlightError::Unauthenticated(s.message().to_string()))?;
    let asked = AssetRequest::from_descriptor(request.get_ref())?;
    let grant = svc.grant(&principal, asked, Action::Download).await?;
    let (asset, location) = served_asset(svc, asked.did).await?;
    let schema = read_schema(&asked.did.to_string(), &location, &svc.storage).await?;
    Ok((principal, asked, grant, asset, schema))
}

pub(super) async fn get_flight_info(
    svc: &GatedFlight,
    request: Request<FlightDescriptor>,
) -> Result<FlightInfo> {
    let (principal, asked, grant, asset, schema) = checked(svc, &request).await?;
    let expires_at =
        (unix_now() + svc.ticket_ttl.as_secs()).min(grant.access_end.max(unix_now() + 1));
    let ticket = svc.tickets.issue(&TicketClaims {
        principal: principal.consumer,
        did: asked.did,
        agreement: asked.agreement,
        fingerprint: fingerprint(&asset)?,
        expires_at,
    });
    let mut info = FlightInfo::new()
        .try_with_schema(&schema)
        .map_err(|e| FlightError::Internal(e.to_string()))?
        .with_descriptor(request.into_inner())
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_ordered(true);
    if let Some(rows) = asset.ddo.row_count {
        info = info.with_total_records(rows as i64);
    }
    if let Some(bytes) = asset.ddo.byte_size {
        info = info.with_total_bytes(bytes as i64);
    }
    Ok(info)
}

pub(super) async fn get_schema(
    svc: &GatedFlight,
    request: Request<FlightDescriptor>,
) -> Result<SchemaResult> {
    let (_, _, _, _, schema) = checked(svc, &request).await?;
    let options = arrow::ipc::writer::IpcWriteOptions::default();
    SchemaAsIpc::new(&schema, &options)
        .try_into()
        .map_err(|e: arrow::error::ArrowError| FlightError::Internal(e.to_string()))
}
