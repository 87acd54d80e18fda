//! Assembling the service, and a convenience to serve it on a listener.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use futures::StreamExt;
use insitu_catalog::AssetStore;
use insitu_policy::PolicyEngine;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tower::Layer;

use crate::auth::{AuthLayer, AuthService};
use crate::error::{FlightError, Result};
use crate::router::InsituFlight;
use crate::service::GatedFlight;
use crate::sql::{QueryLimits, SqlService};
use crate::ticket::TicketSigner;

/// The mountable service: downloads and Flight SQL behind one router, wrapped in the
/// authentication layer.
pub type InsituFlightService = AuthService<FlightServiceServer<InsituFlight>>;

/// Builder for the provider's Flight service.
#[derive(Debug)]
pub struct FlightServiceBuilder {
    engine: Arc<PolicyEngine>,
    catalog: AssetStore,
    tickets: Option<TicketSigner>,
    ticket_ttl: Duration,
    max_decoding_message_size: usize,
    storage: crate::source::StorageOptions,
    query_limits: QueryLimits,
    mask_key: Option<[u8; 32]>,
    lineage: Option<crate::sql::LineageSink>,
    search: Option<Arc<dyn insitu_catalog::CatalogStore>>,
    actions: Vec<Arc<dyn crate::ActionHandler>>,
    exchanges: Vec<Arc<dyn crate::ExchangeHandler>>,
}

impl FlightServiceBuilder {
    /// Options (often credentials) for the object stores assets live in.
    pub fn with_storage_options(mut self, options: crate::source::StorageOptions) -> Self {
        self.storage = options;
        self
    }

    pub fn new(engine: Arc<PolicyEngine>, catalog: AssetStore) -> Self {
        FlightServiceBuilder {
            engine,
            catalog,
            tickets: None,
            ticket_ttl: Duration::from_secs(300),
            max_decoding_message_size: 1024 * 1024,
            storage: crate::source::StorageOptions::default(),
            query_limits: QueryLimits::default(),
            mask_key: None,
            lineage: None,
            search: None,
            actions: Vec::new(),
            exchanges: Vec::new(),
        }
    }

    /// Memory, time and SQL-size limits for each Flight SQL query.
    pub fn with_query_limits(mut self, limits: QueryLimits) -> Self {
        self.query_limits = limits;
        self
    }

    /// The key of hash masks. Keep it across restarts (the CLI stores one in the data
    /// directory) so a consumer's masked values stay stable; unset, a random key per
    /// process is used.
    pub fn with_mask_key(mut self, key: [u8; 32]) -> Self {
        self.mask_key = Some(key);
        self
    }

    /// Records every query run (START, COMPLETE or FAIL) as OpenLineage events in this
    /// outbox, for these receivers; a `Dispatcher` delivers them.
    pub fn with_lineage(mut self, sink: crate::sql::LineageSink) -> Self {
        self.lineage = Some(sink);
        self
    }

    /// The catalog `insitu.search` reads; by default the asset store the service
    /// serves from. An embedder with its own catalog puts it here.
    pub fn with_search(mut self, catalog: Arc<dyn insitu_catalog::CatalogStore>) -> Self {
        self.search = Some(catalog);
        self
    }

    /// Mounts more `DoAction`s (compute jobs, training), behind the same authentication.
    pub fn with_actions(mut self, handler: Arc<dyn crate::ActionHandler>) -> Self {
        self.actions.push(handler);
        self
    }

    /// Mounts a `DoExchange` service (federated training) for one token scope, behind
    /// the same authentication.
    pub fn with_exchange(mut self, handler: Arc<dyn crate::ExchangeHandler>) -> Self {
        self.exchanges.push(handler);
        self
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

    pub fn build(self) -> Result<InsituFlightService> {
        Ok(self.build_parts()?.0)
    }

    /// The service, and a handle on its Flight SQL half for embedders that report
    /// query statistics (`SqlService::stats`).
    pub fn build_parts(self) -> Result<(InsituFlightService, SqlService)> {
        let tickets = Arc::new(self.tickets.unwrap_or_else(TicketSigner::random));
        let storage = Arc::new(self.storage);
        let download = GatedFlight {
            engine: self.engine.clone(),
            catalog: self.catalog.clone(),
            tickets: tickets.clone(),
            ticket_ttl: self.ticket_ttl,
            storage: storage.clone(),
        };
        let catalog = self.catalog.clone();
        let sql = SqlService::new(
            self.engine.clone(),
            self.catalog,
            tickets,
            self.ticket_ttl,
            storage,
            crate::sql::SqlOptions {
                limits: self.query_limits,
                mask_key: self.mask_key.unwrap_or_else(rand::random),
                lineage: self.lineage,
            },
        )?;
        let router = InsituFlight {
            download,
            sql: sql.clone(),
            catalog: self.search.unwrap_or_else(|| Arc::new(catalog)),
            actions: self.actions.clone(),
            exchanges: self.exchanges.clone(),
        };
        let max_message = self
            .actions
            .iter()
            .map(|a| a.max_request_bytes())
            .chain(self.exchanges.iter().map(|e| e.max_message_bytes()))
            .fold(self.max_decoding_message_size, usize::max);
        let server = FlightServiceServer::new(router).max_decoding_message_size(max_message);
        Ok((AuthLayer::new(self.engine).layer(server), sql))
    }
}

/// A server certificate chain and its private key, PEM-encoded. The key never prints.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity(cert, key: ***)")
    }
}

impl TlsIdentity {
    /// Reads a PEM certificate chain and key from files.
    pub fn from_files(cert: &std::path::Path, key: &std::path::Path) -> Result<Self> {
        let read = |p: &std::path::Path, what: &str| {
            std::fs::read(p).map_err(|e| {
                FlightError::InvalidRequest(format!(
                    "cannot read the TLS {what} {}: {e}",
                    p.display()
                ))
            })
        };
        Ok(TlsIdentity {
            cert_pem: read(cert, "certificate")?,
            key_pem: read(key, "key")?,
        })
    }
}

/// Serves `service` on an already-bound listener until `shutdown` completes; with `tls`,
/// only TLS connections are accepted.
pub async fn serve_on(
    listener: TcpListener,
    service: InsituFlightService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    serve_on_tls(listener, service, None, shutdown).await
}

/// [`serve_on`] with an optional TLS identity.
pub async fn serve_on_tls(
    listener: TcpListener,
    service: InsituFlightService,
    tls: Option<TlsIdentity>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(id) = tls {
        let identity = tonic::transport::Identity::from_pem(id.cert_pem, id.key_pem);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| FlightError::InvalidRequest(format!("bad TLS configuration: {e}")))?;
    }
    // Flight calls are small request/response exchanges; without TCP_NODELAY, Nagle's
    // algorithm and delayed ACKs add ~40 ms to each of them.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        })
    });
    builder
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| FlightError::Internal(format!("server failed: {e}")))
}
