//! # insitu-flight
//!
//! The provider's Arrow Flight service: the only way data leaves a provider. Every call
//! is authenticated by [`auth::AuthLayer`] (a tower layer, so no RPC can forget it), every
//! data-bearing call asks the policy engine for a grant, and data is streamed from
//! object_store in bounded batches, never buffered whole.
//!
//! Library first: [`FlightServiceBuilder`] returns a tonic service that a data platform can
//! mount in its own server next to its own services; `insitu serve` is a thin wrapper.
//!
//! Layout: `auth` (the tower layer), `ticket` (HMAC tickets), `source` (object-store
//! readers), `router` (one `FlightService` over both halves), `service/` (downloads, one
//! file per RPC), `sql/` (Flight SQL over a gated DataFusion session), `error` (the one
//! place errors become `tonic::Status`).

pub mod actions;
mod audience;
pub mod auth;
mod builder;
pub mod client;
mod descriptor;
mod encode;
mod error;
pub mod exchange;
pub mod publish;
pub mod query_client;
mod router;
pub mod search_client;
mod service;
mod source;
pub mod sql;
pub mod ticket;

pub use actions::ActionHandler;
pub use audience::CatalogAudience;
pub use builder::{FlightServiceBuilder, InsituFlightService, TlsIdentity, serve_on, serve_on_tls};
pub use descriptor::AssetRequest;
pub use error::{FlightError, Result};
pub use exchange::{ExchangeHandler, ExchangeStream};
pub use router::{InsituFlight, PRIVACY_BUDGET, SEARCH, SEARCH_SCOPE};
pub use source::{StorageOptions, open_batches, read_schema};
pub use sql::scope::{MAX_QUERY_AGREEMENTS, query_scope};
pub use sql::session::{CATALOG, SCHEMA};
pub use sql::{
    ConstrainedPlanner, ConstrainedPlannerBuilder, LineageSink, QueryLimits, QueryStats,
    SqlService, validate_constraints,
};
