//! A DataFusion session per request, built from the grants and nothing else.
//!
//! The session sees one catalog (`insitu`), one schema (`public`) and one table per
//! granted asset. It has no table functions, no table factories (`CREATE EXTERNAL
//! TABLE`), no URL tables, no information schema and no spill directory, a memory pool
//! of its own, and an object-store registry that knows only the granted assets. The
//! function registry and optimiser rules are built once and shared, so a session costs
//! a few map clones.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider, SchemaProvider,
};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use insitu_catalog::StorageLocation;
use insitu_ledger::{AgreementId, Did};
use insitu_policy::QueryConstraints;

use super::objects::GrantedStores;
use super::policy::TablePolicy;
use super::tables::{GrantedTable, provider, table_name};
use crate::error::{FlightError, Result};
use crate::source::StorageOptions;

/// The catalog and schema every session shows.
pub const CATALOG: &str = "insitu";
pub const SCHEMA: &str = "public";

/// Per-query limits. A query that needs more memory than `memory_bytes` fails with
/// `RESOURCE_EXHAUSTED` (there is no spilling to the provider's disk); one that runs
/// longer than `timeout` fails with `DEADLINE_EXCEEDED`. At most `max_concurrent`
/// queries execute at once on this provider; one more is refused with
/// `RESOURCE_EXHAUSTED` rather than queued, so clients can back off.
#[derive(Debug, Clone)]
pub struct QueryLimits {
    pub memory_bytes: usize,
    pub timeout: Duration,
    pub max_sql_bytes: usize,
    pub max_concurrent: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            memory_bytes: 512 * 1024 * 1024,
            timeout: Duration::from_secs(300),
            max_sql_bytes: 64 * 1024,
            max_concurrent: 16,
        }
    }
}

/// A granted asset, resolved by the service, ready to become a table.
#[derive(Debug, Clone)]
pub(crate) struct GrantedAsset {
    pub did: Did,
    pub agreement: AgreementId,
    pub name: String,
    /// The catalog version of the asset (a republication bumps it).
    pub version: i64,
    pub location: StorageLocation,
    /// End of the agreement's access window (chain time, unix seconds).
    pub access_end: u64,
    /// The query constraints in force for this consumer.
    pub constraints: Arc<QueryConstraints>,
}

/// How long an inferred table schema is reused before the file's footer is read again.
const SCHEMA_TTL: Duration = Duration::from_secs(60);
/// Schemas remembered at most (one per asset version and location).
const MAX_SCHEMAS: usize = 4096;

type SchemaKey = (Did, i64, String);

/// Builds sessions from a shared template.
#[derive(Debug)]
pub(crate) struct SessionFactory {
    template: SessionState,
    pub limits: QueryLimits,
    /// Inferred Parquet schemas, so a session does not read every footer again on each
    /// call. Keyed by asset version and location, and short-lived, so a republished or
    /// replaced file is seen within a minute.
    schemas: Mutex<HashMap<SchemaKey, (SchemaRef, Instant)>>,
}

/// One request's session and the tables in it.
pub(crate) struct GatedSession {
    pub ctx: SessionContext,
    pub tables: Vec<GrantedTable>,
    /// Each table's constraints, in the same order.
    pub policies: Vec<TablePolicy>,
}

impl std::fmt::Debug for GatedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("GatedSession")
            .field("tables", &names)
            .finish()
    }
}

impl GatedSession {
    pub fn table_names(&self) -> HashSet<String> {
        self.tables.iter().map(|t| t.name.clone()).collect()
    }
}

impl SessionFactory {
    pub fn new(limits: QueryLimits) -> Self {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(false);
        let template = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_table_functions(HashMap::new())
            .with_table_factories(HashMap::new())
            .build();
        SessionFactory {
            template,
            limits,
            schemas: Mutex::new(HashMap::new()),
        }
    }

    /// A session over exactly `assets`.
    pub async fn session(
        &self,
        assets: &[GrantedAsset],
        storage: &StorageOptions,
    ) -> Result<GatedSession> {
        let stores = Arc::new(GrantedStores::default());
        let pool = TrackConsumersPool::new(
            GreedyMemoryPool::new(self.limits.memory_bytes),
            NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
        );
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .with_object_store_registry(stores.clone())
            .build_arc()
            .map_err(|e| FlightError::Internal(e.to_string()))?;
        let schema = Arc::new(MemorySchemaProvider::new());
        let catalog = Arc::new(MemoryCatalogProvider::new());
        catalog
            .register_schema(SCHEMA, schema.clone())
            .map_err(|e| FlightError::Internal(e.to_string()))?;
        let catalogs = Arc::new(MemoryCatalogProviderList::new());
        catalogs.register_catalog(CATALOG.to_string(), catalog);
        let state = SessionStateBuilder::new_from_existing(self.template.clone())
            .with_runtime_env(runtime)
            .with_catalog_list(catalogs)
            .build();
        let mut taken = HashSet::new();
        let mut tables = Vec::with_capacity(assets.len());
        let mut policies = Vec::with_capacity(assets.len());
        for (index, asset) in assets.iter().enumerate() {
            let key = (asset.did, asset.version, asset.location.url.clone());
            let known = self.schemas.lock().ok().and_then(|cache| {
                cache
                    .get(&key)
                    .filter(|(_, at)| at.elapsed() < SCHEMA_TTL)
                    .map(|(schema, _)| schema.clone())
            });
            let (table, table_schema) = provider(
                &state,
                &stores,
                index,
                asset.did,
                &asset.location,
                storage,
                known,
            )
            .await?;
            if let Ok(mut cache) = self.schemas.lock() {
                if cache.len() >= MAX_SCHEMAS {
                    cache.retain(|_, (_, at)| at.elapsed() < SCHEMA_TTL);
                }
                if cache.len() < MAX_SCHEMAS {
                    cache.insert(key, (table_schema.clone(), Instant::now()));
                }
            }
            let name = table_name(&asset.name, &taken);
            taken.insert(name.clone());
            schema
                .register_table(name.clone(), table)
                .map_err(|e| FlightError::Internal(e.to_string()))?;
            policies.push(TablePolicy {
                name: name.clone(),
                did: asset.did,
                agreement: asset.agreement,
                columns: table_schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect(),
                schema: table_schema.clone(),
                constraints: asset.constraints.clone(),
            });
            tables.push(GrantedTable {
                name,
                schema: table_schema,
            });
        }
        Ok(GatedSession {
            ctx: SessionContext::new_with_state(state),
            tables,
            policies,
        })
    }
}
