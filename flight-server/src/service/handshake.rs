//! `Handshake`: trades Basic auth (or a token in the payload) for the bearer token.

use arrow_flight::{HandshakeRequest, HandshakeResponse};
use futures::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::GatedFlight;
use crate::auth::token_from_header;

/// Longest handshake payload read; a token is far smaller.
const MAX_PAYLOAD: usize = 4096;

pub(super) async fn handshake(
    svc: &GatedFlight,
    request: Request<Streaming<HandshakeRequest>>,
) -> Result<Response<super::Stream<HandshakeResponse>>, Status> {
    let from_header = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(token_from_header);
    let token = match from_header {
        Some(t) => t,
        None => {
            let mut stream = request.into_inner();
            let first = stream
                .next()
                .await
                .ok_or_else(|| Status::unauthenticated("handshake carried no credentials"))??;
            if first.payload.len() > MAX_PAYLOAD {
                return Err(Status::unauthenticated("handshake payload is too large"));
            }
            String::from_utf8(first.payload.to_vec())
                .map_err(|_| Status::unauthenticated("handshake payload is not a token"))?
        }
    };
    let principal = svc
        .engine
        .authenticate(&token)
        .map_err(|e| Status::unauthenticated(e.to_string()))?;
    tracing::debug!(consumer = %principal.consumer, "handshake accepted");
    let bearer: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| Status::unauthenticated("token is not a valid header value"))?;
    let reply = HandshakeResponse {
        protocol_version: 0,
        payload: token.into_bytes().into(),
    };
    let mut response = Response::new(futures::stream::iter([Ok(reply)]).boxed());
    response.metadata_mut().insert("authorization", bearer);
    Ok(response)
}
