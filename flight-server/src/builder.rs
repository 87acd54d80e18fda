//! Assembling the service, and a convenience to serve it on a listener.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use insitu_catalog::AssetStore;
use insitu_policy::PolicyEngine;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tower::Layer;

use crate::auth::{AuthLayer, AuthService};
use crate::error::{FlightError, Result};
use crate::service::GatedFlight;
use crate::ticket::TicketSigner;

/// The mountable service: the Flight server wrapped in the authentication layer.
pub type InsituFlightService = AuthService<FlightServiceServer<GatedFlight>>;

/// Builder for the provider's Flight service.
#[derive(Debug)]
pub struct FlightServiceBuilder {
    engine: Arc<PolicyEngine>,
    catalog: AssetStore,
    tickets: Option<TicketSigner>,
    ticket_ttl: Duration,
    max_decoding_message_size: usize,
}

impl FlightServiceBuilder {
    pub fn new(engine: Arc<PolicyEngine>, catalog: AssetStore) -> Self {
        FlightServiceBuilder {
            engine,
            catalog,
            tickets: None,
            ticket_ttl: Duration::from_secs(300),
            max_decoding_message_size: 1024 * 1024,
        }
    }

    /// The HMAC key for tickets. Replicas behind one load balancer must share it; a single
    /// provider can leave it unset for a random per-process key.
    pub fn with_ticket_key(mut self, key: [u8; 32]) -> Self {
        self.tickets = Some(TicketSigner::from_key(key));
        self
    }

    /// How long a ticket from `GetFlightInfo` stays valid (never beyond the access window).
    pub fn with_ticket_ttl(mut self, ttl: Duration) -> Self {
        self.ticket_ttl = ttl;
        self
    }

    /// Largest request message accepted from clients (they send descriptors and tickets,
    /// so 1 MiB is generous).
    pub fn with_max_decoding_message_size(mut self, bytes: usize) -> Self {
        self.max_decoding_message_size = bytes;
        self
    }

    pub fn build(self) -> InsituFlightService {
        let flight = GatedFlight {
            engine: self.engine.clone(),
            catalog: self.catalog,
            tickets: Arc::new(self.tickets.unwrap_or_else(TicketSigner::random)),
            ticket_ttl: self.ticket_ttl,
        };
        let server = FlightServiceServer::new(flight)
            .max_decoding_message_size(self.max_decoding_message_size);
        AuthLayer::new(self.engine).layer(server)
    }
}

/// Serves `service` on an already-bound listener until `shutdown` completes.
pub async fn serve_on(
    listener: TcpListener,
    service: InsituFlightService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| FlightError::Internal(format!("server failed: {e}")))
}
