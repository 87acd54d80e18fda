//! The tables of a query session: one per granted asset, named after the asset, read by
//! DataFusion's own Parquet and CSV scans through [`AssetObject`].

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::session_state::SessionState;
use insitu_catalog::{DataFormat, StorageLocation};
use insitu_ledger::Did;
use url::Url;

use super::objects::{AssetObject, GrantedStores, SCHEME};
use crate::error::{FlightError, Result};
use crate::source::{StorageOptions, open_store};

/// A granted asset as the session sees it.
#[derive(Debug, Clone)]
pub(crate) struct GrantedTable {
    /// The SQL name, unique within the session.
    pub name: String,
    pub schema: SchemaRef,
}

/// A SQL identifier for an asset name: lower case, `[a-z0-9_]`, not starting with a
/// digit, and not already taken in this session (`_2`, `_3`… are appended).
pub(crate) fn table_name(asset_name: &str, taken: &HashSet<String>) -> String {
    let mut base: String = asset_name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    while base.contains("__") {
        base = base.replace("__", "_");
    }
    let mut base = base.trim_matches('_').to_string();
    if base.is_empty() {
        base = "asset".into();
    }
    if base.starts_with(|c: char| c.is_ascii_digit()) {
        base = format!("t_{base}");
    }
    base.truncate(63);
    if !taken.contains(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}_{n}"))
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or(base)
}

fn format_of(location: &StorageLocation) -> (Arc<dyn FileFormat>, &'static str) {
    match location.format {
        DataFormat::Parquet => (Arc::new(ParquetFormat::default()), "parquet"),
        DataFormat::Csv => (Arc::new(CsvFormat::default().with_has_header(true)), "csv"),
    }
}

/// Registers the asset's object under `insitu://t<index>/` and returns a DataFusion
/// table over it with `known_schema`, or else the schema DataFusion infers (Parquet) or
/// the one recorded at publish time (CSV).
pub(crate) async fn provider(
    state: &SessionState,
    stores: &GrantedStores,
    index: usize,
    did: Did,
    location: &StorageLocation,
    options: &StorageOptions,
    known_schema: Option<SchemaRef>,
) -> Result<(Arc<dyn TableProvider>, SchemaRef)> {
    let did_text = did.to_string();
    let storage = |detail: String| FlightError::Storage {
        did: did_text.clone(),
        detail,
    };
    let (store, real) = open_store(&did_text, &location.url, options)?;
    let (format, ext) = format_of(location);
    let alias = format!("data.{ext}");
    let root = format!("{SCHEME}://t{index}/");
    let root_url = Url::parse(&root).map_err(|e| FlightError::Internal(e.to_string()))?;
    stores.register_store(&root_url, Arc::new(AssetObject::new(store, real, &alias)));
    let table_url = ListingTableUrl::parse(format!("{root}{alias}"))
        .map_err(|e| FlightError::Internal(e.to_string()))?;
    let options = ListingOptions::new(format).with_file_extension(format!(".{ext}"));
    let schema = match (location.format, known_schema) {
        (_, Some(schema)) => schema,
        (DataFormat::Parquet, None) => options
            .infer_schema(state, &table_url)
            .await
            .map_err(|e| storage(e.to_string()))?,
        (DataFormat::Csv, None) => {
            let schema: arrow::datatypes::Schema =
                arrow::ipc::convert::try_schema_from_ipc_buffer(&location.schema_ipc)
                    .map_err(|e| storage(e.to_string()))?;
            Arc::new(schema)
        }
    };
    let config = ListingTableConfig::new(table_url)
        .with_listing_options(options)
        .with_schema(schema.clone());
    let table = ListingTable::try_new(config).map_err(|e| storage(e.to_string()))?;
    Ok((Arc::new(table), schema))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sql_identifiers_and_unique() {
        let mut taken = HashSet::new();
        let a = table_name("Wine data (2024)", &taken);
        assert_eq!(a, "wine_data_2024");
        taken.insert(a.clone());
        assert_eq!(table_name("wine-data 2024", &taken), "wine_data_2024_2");
        assert_eq!(table_name("2024 sales", &HashSet::new()), "t_2024_sales");
        assert_eq!(table_name("  ", &HashSet::new()), "asset");
        assert_eq!(table_name("\"; DROP", &HashSet::new()), "drop");
    }
}
