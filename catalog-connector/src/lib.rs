//! # insitu-catalog
//!
//! The provider's asset catalog. It keeps two things strictly apart: the public metadata
//! of an asset (its [`Ddo`]: name, description, schema, tags, services), whose keccak hash
//! goes on chain and which anyone may read; and the private [`StorageLocation`] the
//! provider serves it from, which never leaves this crate's store except into the
//! provider's own flight server. It also answers searches over the public metadata
//! ([`search`]) and keeps the OpenLineage outbox ([`lineage`]) in the same database, so
//! a lineage event is recorded in the same place, and as durably, as the asset.

mod audience;
mod ddo;
mod error;
pub mod lineage;
pub mod search;
mod store;

pub use ddo::{Column, DataFormat, Ddo, DdoService, StorageLocation};
pub use error::{CatalogError, Result};
pub use search::{CatalogStore, SearchApi, SearchHit, SearchPage, SearchQuery};
pub use store::{AssetStore, AssetVersion, StoredAsset};
