//! # insitu-catalog
//!
//! The provider's asset catalog. It keeps two things strictly apart: the public metadata
//! of an asset (its [`Ddo`]: name, description, schema, tags, services), whose keccak hash
//! goes on chain and which anyone may read; and the private [`StorageLocation`] the
//! provider serves it from, which never leaves this crate's store except into the
//! provider's own flight server. Later capabilities add full-text search and the
//! OpenLineage outbox here.

mod ddo;
mod error;
pub mod lineage;
mod store;

pub use ddo::{Column, DataFormat, Ddo, DdoService, StorageLocation};
pub use error::{CatalogError, Result};
pub use store::{AssetStore, StoredAsset};
