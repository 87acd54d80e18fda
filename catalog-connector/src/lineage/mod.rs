//! OpenLineage: typed events and facets for what insitu publishes and runs, so the
//! catalogs organisations already run (Marquez, DataHub, OpenMetadata) see every asset
//! and every use. No untyped JSON is built anywhere: every event is a serde type whose
//! output the tests validate against the spec's JSON Schemas.
//!
//! Transports and the durable outbox come next (issue 8); this module is the model.

mod event;
mod facets;

pub use event::*;
pub use facets::*;

/// `producer` / `_producer` of every event and facet: this crate, at its version.
pub const PRODUCER: &str = concat!(
    "https://example.invalid/insitu/tree/v",
    env!("CARGO_PKG_VERSION"),
    "/catalog-connector"
);

#[cfg(test)]
mod tests;
