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
//! readers), `service/` (one file per RPC), `error` (the one place errors become
//! `tonic::Status`).

pub mod auth;
mod builder;
pub mod client;
mod descriptor;
mod error;
pub mod publish;
mod service;
mod source;
pub mod ticket;

pub use builder::{FlightServiceBuilder, InsituFlightService, TlsIdentity, serve_on, serve_on_tls};
pub use descriptor::AssetRequest;
pub use error::{FlightError, Result};
pub use source::{StorageOptions, open_batches, read_schema};
