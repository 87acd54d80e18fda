//! `DoGet`: verify the ticket, re-check the grant (every call is checked, tickets are not
//! capabilities on their own), and stream the asset with backpressure.

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightData, Ticket};
use futures::{StreamExt, TryStreamExt};
use insitu_policy::Action;
use tonic::{Request, Status};

use super::flight_info::{fingerprint, served_asset};
use super::{GatedFlight, unix_now};
use crate::auth;
use crate::descriptor::AssetRequest;
use crate::error::{FlightError, Result};
use crate::source::open_batches;

/// Target size of one Flight message. Kept near 2 MiB because tonic's default decode
/// limit is 4 MiB and an encoded batch can exceed its in-memory size a little.
const MAX_FLIGHT_DATA: usize = 2 * 1024 * 1024;

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
    let batches =
        batches.map_err(|e| arrow_flight::error::FlightError::from_external_error(Box::new(e)));
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_max_flight_data_size(MAX_FLIGHT_DATA)
        .build(batches)
        .map_err(|e| match e {
            arrow_flight::error::FlightError::ExternalError(inner) => {
                match inner.downcast::<FlightError>() {
                    Ok(ours) => Status::from(*ours),
                    Err(other) => Status::internal(format!("stream failed: {other}")),
                }
            }
            other => Status::internal(format!("encoding failed: {other}")),
        })
        .boxed();
    Ok(stream)
}
