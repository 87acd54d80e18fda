//! The public metadata document (DDO) of an asset, and the private location it is served
//! from.

use std::fmt;

use alloy::primitives::{Address, B256, keccak256};
use insitu_ledger::{Did, ServiceOffer};
use serde::{Deserialize, Serialize};

use crate::error::{CatalogError, Result};

/// File formats the flight server can stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    Parquet,
    Csv,
}

impl DataFormat {
    /// Guesses the format from a file name.
    pub fn from_path(path: &str) -> Option<Self> {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".parquet") || lower.ends_with(".pq") {
            Some(DataFormat::Parquet)
        } else if lower.ends_with(".csv") {
            Some(DataFormat::Csv)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DataFormat::Parquet => "parquet",
            DataFormat::Csv => "csv",
        }
    }
}

/// One column of the published schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// Arrow data type, as Arrow prints it (`Int64`, `Utf8`, `Timestamp(ns)`…).
    pub data_type: String,
    pub nullable: bool,
}

/// A service as the DDO shows it: the on-chain offer plus its index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DdoService {
    pub index: u64,
    #[serde(flatten)]
    pub offer: ServiceOffer,
}

/// The public metadata of an asset. Its canonical JSON is hashed on chain, so a consumer
/// can check that what the catalog shows is what the owner registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ddo {
    pub did: Did,
    pub chain_id: u64,
    pub owner: Address,
    pub provider: Address,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub format: DataFormat,
    pub schema: Vec<Column>,
    pub row_count: Option<u64>,
    pub byte_size: Option<u64>,
    pub services: Vec<DdoService>,
    /// Unix seconds.
    pub created_at: u64,
}

impl Ddo {
    /// keccak256 of the canonical JSON (struct field order, no whitespace).
    pub fn metadata_hash(&self) -> Result<B256> {
        let json = serde_json::to_vec(self).map_err(|e| CatalogError::Invalid(e.to_string()))?;
        Ok(keccak256(json))
    }

    /// Checks what a publisher typed before anything is written anywhere.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(CatalogError::Invalid("the asset name is empty".into()));
        }
        if self.name.len() > 200 {
            return Err(CatalogError::Invalid(
                "the asset name is over 200 bytes".into(),
            ));
        }
        if self.description.len() > 10_000 {
            return Err(CatalogError::Invalid(
                "the description is over 10,000 bytes".into(),
            ));
        }
        if self.tags.len() > 32 || self.tags.iter().any(|t| t.is_empty() || t.len() > 64) {
            return Err(CatalogError::Invalid(
                "tags must be 1 to 64 bytes each, at most 32 of them".into(),
            ));
        }
        if self.services.is_empty() {
            return Err(CatalogError::Invalid(
                "an asset needs at least one service".into(),
            ));
        }
        Ok(())
    }
}

/// Where the provider reads an asset from: an object-store URL (`file:///…`, `s3://…`).
/// Private: it is never serialised into a response, a log line or an error.
#[derive(Clone, PartialEq, Eq)]
pub struct StorageLocation {
    pub url: String,
    pub format: DataFormat,
    /// The Arrow schema, IPC-encoded, as inferred at publish time (needed for CSV).
    pub schema_ipc: Vec<u8>,
}

impl fmt::Debug for StorageLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageLocation")
            .field("url", &"<private>")
            .field("format", &self.format)
            .finish()
    }
}

/// A small DDO for the crate's tests.
#[cfg(test)]
pub(crate) fn sample_ddo() -> Ddo {
    Ddo {
        did: Did(alloy::primitives::B256::repeat_byte(7)),
        chain_id: 31337,
        owner: Address::repeat_byte(1),
        provider: Address::repeat_byte(1),
        name: "lineitem".into(),
        description: "TPC-H lineitem".into(),
        tags: vec!["tpch".into()],
        format: DataFormat::Parquet,
        schema: vec![Column {
            name: "l_orderkey".into(),
            data_type: "Int64".into(),
            nullable: false,
        }],
        row_count: Some(10),
        byte_size: Some(100),
        services: vec![DdoService {
            index: 0,
            offer: ServiceOffer {
                service_type: insitu_ledger::ServiceType::Download,
                token: None,
                price: alloy::primitives::U256::ZERO,
                access_duration: 3600,
                fulfill_timeout: 600,
            },
        }],
        created_at: 1,
    }
}
