//! OpenLineage: typed events and facets for what insitu publishes and runs, so the
//! catalogs organisations already run (Marquez, DataHub, OpenMetadata) see every asset
//! and every use. No untyped JSON is built anywhere: every event is a serde type whose
//! output the tests validate against the spec's JSON Schemas.
//!
//! Events go through a durable [`Outbox`] in the catalog database and are delivered by
//! a [`Dispatcher`] to HTTP, file or console [`LineageTransport`]s, at least once.

mod event;
mod facets;
pub(crate) mod outbox;
mod transport;

pub use event::*;
pub use facets::*;
pub use outbox::{EVERY_RECEIVER, Outbox, Pending, sequence};
pub use transport::{
    ConsoleTransport, Dispatcher, FileTransport, HttpTransport, LineageTransport, Profile, backoff,
};

/// `producer` / `_producer` of every event and facet: this crate, at its version.
pub const PRODUCER: &str = concat!(
    "https://example.invalid/insitu/tree/v",
    env!("CARGO_PKG_VERSION"),
    "/catalog-connector"
);

#[cfg(test)]
mod delivery_tests;
#[cfg(test)]
mod tests;
