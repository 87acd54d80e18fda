//! The coordinator's connection to one provider: a `DoExchange` stream opened with a
//! token its job key signed for scope `train`, answered once per message.

use std::time::Duration;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use arrow_flight::FlightData;
use arrow_flight::flight_service_client::FlightServiceClient;
use bytes::Bytes;
use futures::StreamExt;
use insitu_policy::AccessClaims;
use tokio::sync::mpsc;
use tonic::Streaming;

use crate::error::{FederatedError, Result};
use crate::wire::{self, FromProvider, TRAIN_SCOPE, ToProvider};

/// Where one provider is and who it is.
#[derive(Debug, Clone)]
pub struct Site {
    pub did: insitu_ledger::Did,
    pub agreement: insitu_ledger::AgreementId,
    /// The provider's Flight endpoint.
    pub endpoint: String,
    /// The provider's identity: the token's audience and the key that must sign its
    /// round keys.
    pub provider: Address,
    /// A PEM CA to trust for an `https://` endpoint.
    pub ca_pem: Option<Vec<u8>>,
}

/// An open exchange with one provider.
pub(crate) struct Link {
    pub(crate) site: Site,
    tx: mpsc::Sender<FlightData>,
    rx: Streaming<FlightData>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("site", &self.site).finish()
    }
}

/// Largest message a provider answers with (its limit for what it receives is the same).
const MAX_MESSAGE: usize = crate::provider::MAX_TRAIN_MESSAGE;

fn remote(site: &Site, e: impl std::fmt::Display) -> FederatedError {
    FederatedError::Unavailable(format!("{} ({}): {e}", site.provider, site.endpoint))
}

/// The provider's refusal, back as the variant it was sent as.
fn from_status(site: &Site, s: tonic::Status) -> FederatedError {
    let who = format!("{} ({})", site.provider, site.endpoint);
    let m = s.message().to_string();
    match s.code() {
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
            FederatedError::Refused(format!("{who}: {m}"))
        }
        tonic::Code::InvalidArgument => FederatedError::Invalid(format!("{who}: {m}")),
        tonic::Code::FailedPrecondition => FederatedError::Phase(format!("{who}: {m}")),
        _ => FederatedError::Unavailable(format!("{who}: {m}")),
    }
}

impl Link {
    /// Opens the exchange and sends `join` (with the module as its body).
    pub(crate) async fn open(
        site: Site,
        key: &PrivateKeySigner,
        chain_id: u64,
        agreements_contract: Address,
        join: &ToProvider,
        module: Vec<u8>,
    ) -> Result<Self> {
        let channel = insitu_flight::client::connect_channel(&site.endpoint, site.ca_pem.clone())
            .await
            .map_err(|e| remote(&site, e))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| FederatedError::Internal(e.to_string()))?
            .as_secs();
        let token = insitu_policy::sign_access_token(
            key,
            &AccessClaims {
                provider: site.provider,
                chain_id,
                verifying_contract: agreements_contract,
                issued_at: now,
                lifetime: Duration::from_secs(3600),
                scope: TRAIN_SCOPE.to_string(),
            },
        )
        .map_err(|e| FederatedError::Internal(format!("signing the job token: {e}")))?;
        let (tx, rx) = mpsc::channel(4);
        tx.send(wire::frame(join, module)?)
            .await
            .map_err(|_| FederatedError::Internal("the outgoing stream closed".into()))?;
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| FederatedError::Internal("the token is not a header value".into()))?;
        request.metadata_mut().insert("authorization", bearer);
        let mut client = FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let response = client
            .do_exchange(request)
            .await
            .map_err(|s| from_status(&site, s))?;
        Ok(Link {
            site,
            tx,
            rx: response.into_inner(),
        })
    }

    pub(crate) async fn send(&mut self, message: &ToProvider, body: Vec<u8>) -> Result<()> {
        let data = wire::frame(message, body)?;
        self.tx
            .send(data)
            .await
            .map_err(|_| remote(&self.site, "the exchange closed"))
    }

    /// The provider's next answer, within `within`.
    pub(crate) async fn recv(&mut self, within: Duration) -> Result<(FromProvider, Bytes)> {
        match tokio::time::timeout(within, self.rx.next()).await {
            Err(_) => Err(remote(
                &self.site,
                format!("no answer within {} s", within.as_secs_f64()),
            )),
            Ok(None) => Err(remote(&self.site, "the provider closed the exchange")),
            Ok(Some(Err(s))) => Err(from_status(&self.site, s)),
            Ok(Some(Ok(data))) => wire::unframe(data),
        }
    }

    /// Sends `message` and waits for the answer.
    pub(crate) async fn ask(
        &mut self,
        message: &ToProvider,
        body: Vec<u8>,
        within: Duration,
    ) -> Result<(FromProvider, Bytes)> {
        self.send(message, body).await?;
        self.recv(within).await
    }
}
