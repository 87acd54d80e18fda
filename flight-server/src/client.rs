//! The consumer side of a download: connect with a bearer token, ask for the asset under
//! an agreement, and stream its batches. Used by `insitu get` and by embedders.

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::{FlightClient, FlightInfo};
use tonic::transport::Channel;

use crate::descriptor::AssetRequest;
use crate::error::{FlightError, Result};

/// Largest message accepted from a provider: the server keeps messages near 2 MiB, so
/// this leaves ample headroom.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

pub fn status_error(e: arrow_flight::error::FlightError) -> FlightError {
    match e {
        arrow_flight::error::FlightError::Tonic(status) => match status.code() {
            tonic::Code::Unauthenticated => {
                FlightError::Unauthenticated(status.message().to_string())
            }
            tonic::Code::PermissionDenied => FlightError::Refused(status.message().to_string()),
            tonic::Code::Unavailable => FlightError::Unavailable(status.message().to_string()),
            // The server's messages already say what kind of failure it was.
            tonic::Code::InvalidArgument => FlightError::InvalidRequest(
                status
                    .message()
                    .trim_start_matches("invalid request: ")
                    .to_string(),
            ),
            tonic::Code::ResourceExhausted => FlightError::Limit(
                status
                    .message()
                    .trim_start_matches("limit reached: ")
                    .to_string(),
            ),
            tonic::Code::DeadlineExceeded => FlightError::TimedOut(status.message().to_string()),
            tonic::Code::Cancelled => FlightError::Cancelled(status.message().to_string()),
            _ => FlightError::InvalidRequest(format!("{}: {}", status.code(), status.message())),
        },
        other => FlightError::Internal(other.to_string()),
    }
}

/// Opens a channel to `endpoint` (`http://…`, or `https://…` verified against `ca_pem`
/// or the web PKI).
pub async fn connect_channel(endpoint: &str, ca_pem: Option<Vec<u8>>) -> Result<Channel> {
    let mut ep = Channel::from_shared(endpoint.to_string())
        .map_err(|e| FlightError::InvalidRequest(format!("bad endpoint '{endpoint}': {e}")))?;
    if endpoint.starts_with("https://") {
        let tls = match ca_pem {
            Some(pem) => tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            None => tonic::transport::ClientTlsConfig::new().with_webpki_roots(),
        };
        ep = ep
            .tls_config(tls)
            .map_err(|e| FlightError::InvalidRequest(format!("bad TLS configuration: {e}")))?;
    }
    let channel = ep
        .connect()
        .await
        .map_err(|e| FlightError::InvalidRequest(format!("cannot connect to {endpoint}: {e}")))?;
    Ok(channel)
}

/// A Flight client on `endpoint` that sends `token` as a bearer token on every call and
/// accepts messages up to [`MAX_MESSAGE`].
pub async fn authenticated(
    endpoint: &str,
    token: &str,
    ca_pem: Option<Vec<u8>>,
) -> Result<FlightClient> {
    let channel = connect_channel(endpoint, ca_pem).await?;
    let service = arrow_flight::flight_service_client::FlightServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE);
    let mut client = FlightClient::new_from_inner(service);
    client
        .add_header("authorization", &format!("Bearer {token}"))
        .map_err(status_error)?;
    Ok(client)
}

/// A connected, authenticated download client.
#[derive(Debug)]
pub struct DownloadClient {
    inner: FlightClient,
}

impl DownloadClient {
    /// Connects to `endpoint` (`http://host:port`, or `https://…` verified against the
    /// web PKI) and sends `token` on every call.
    pub async fn connect(endpoint: &str, token: &str) -> Result<Self> {
        Self::connect_with_ca(endpoint, token, None).await
    }

    /// Like [`DownloadClient::connect`], trusting `ca_pem` (a private CA or a self-signed
    /// provider certificate) for `https://` endpoints.
    pub async fn connect_with_ca(
        endpoint: &str,
        token: &str,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<Self> {
        Ok(DownloadClient {
            inner: authenticated(endpoint, token, ca_pem).await?,
        })
    }

    /// Describes the asset and obtains a ticket for it.
    pub async fn info(&mut self, request: AssetRequest) -> Result<FlightInfo> {
        self.inner
            .get_flight_info(request.to_descriptor())
            .await
            .map_err(status_error)
    }

    /// Streams the first endpoint of `info`.
    pub async fn stream(&mut self, info: &FlightInfo) -> Result<FlightRecordBatchStream> {
        let ticket = info
            .endpoint
            .first()
            .and_then(|e| e.ticket.clone())
            .ok_or_else(|| FlightError::Internal("the provider returned no ticket".into()))?;
        self.inner.do_get(ticket).await.map_err(status_error)
    }
}
