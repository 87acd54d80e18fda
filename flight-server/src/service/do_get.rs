//! `DoGet`: verify the ticket, re-check the grant (every call is checked, tickets are not
//! capabilities on their own), and stream the asset with backpressure.

use arrow_flight::{FlightData, Ticket};
use insitu_policy::Action;
use tonic::Request;

use super::flight_info::{fingerprint, served_asset};
use super::{GatedFlight, unix_now};
use crate::auth;
use crate::descriptor::AssetRequest;
use crate::error::{FlightError, Result};
use crate::source::open_batches;

pub(super) async fn do_get(
    svc: &GatedFlight,
    request: Request<Ticket>,
) -> Result<super::Stream<FlightData>> {
    let principal = auth::principal(&request)
        .map_err(|s| FlightError::Unauthenticated(s.message().to_string()))?;
    let claims = svc
        .tickets
        .verify(&request.get_ref().ticket, principal.consumer, unix_now())?;
    let asked = AssetRequest {
        did: claims.did,
        agreement: claims.agreement,
    };
    svc.grant(&principal, asked, Action::Download).await?;
    let (asset, location) = served_asset(svc, claims.did).await?;
    if fingerprint(&asset)? != claims.fingerprint {
        return Err(FlightError::InvalidTicket(
            "the asset changed since the ticket was issued; call GetFlightInfo again".into(),
        ));
    }
    let (schema, batches) = open_batches(&claims.did.to_string(), &location, &svc.storage).await?;
    Ok(crate::encode::flight_data(schema, batches))
}
