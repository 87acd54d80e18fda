//! The sqlx store behind the catalog: SQLite (embedded, WAL) for one provider process,
//! Postgres when several provider replicas share one catalog. One set of queries serves
//! both through sqlx's `Any` driver (`$n` placeholders, which both accept); only the
//! table definitions differ (BLOB against BYTEA).
//!
//! Public metadata and private locations live in separate tables, so no query that
//! serves metadata can select a location by accident.

use insitu_ledger::Did;
use sqlx::AnyPool;
use sqlx::Row;
use sqlx::any::{AnyPoolOptions, AnyRow};

use crate::ddo::{DataFormat, Ddo, StorageLocation};
use crate::error::{CatalogError, Result, db};

/// Table definitions; `{blob}` and `{bigint}` differ between the backends.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS assets (
        did TEXT PRIMARY KEY,
        version BIGINT NOT NULL,
        ddo TEXT NOT NULL,
        metadata_hash TEXT NOT NULL,
        registered BIGINT NOT NULL DEFAULT 0,
        updated_at BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS asset_locations (
        did TEXT PRIMARY KEY REFERENCES assets(did) ON DELETE CASCADE,
        url TEXT NOT NULL,
        format TEXT NOT NULL,
        schema_ipc {blob} NOT NULL
    )",
    // Query constraints per service: private, like the location (a row filter or a
    // blocked-column list can say more about the data than the provider publishes).
    "CREATE TABLE IF NOT EXISTS service_constraints (
        did TEXT NOT NULL REFERENCES assets(did) ON DELETE CASCADE,
        service_index BIGINT NOT NULL,
        constraints TEXT NOT NULL,
        PRIMARY KEY (did, service_index)
    )",
    // Every version of the public metadata, so a consumer holding an old hash can see
    // what it described and when it changed.
    "CREATE TABLE IF NOT EXISTS asset_versions (
        did TEXT NOT NULL REFERENCES assets(did) ON DELETE CASCADE,
        version BIGINT NOT NULL,
        ddo TEXT NOT NULL,
        metadata_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (did, version)
    )",
    // Consumers an asset is served to, when it is not open to every entitled consumer
    // (compute results). Private to the provider; see `audience.rs`.
    "CREATE TABLE IF NOT EXISTS asset_audience (
        did TEXT NOT NULL REFERENCES assets(did) ON DELETE CASCADE,
        consumer TEXT NOT NULL,
        PRIMARY KEY (did, consumer)
    )",
];

/// The backend behind a catalog URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// An asset as stored: its DDO and whether its on-chain registration has completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAsset {
    pub ddo: Ddo,
    pub version: i64,
    pub registered: bool,
}

/// One version of an asset's public metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AssetVersion {
    pub version: i64,
    pub ddo: Ddo,
    /// The keccak256 the chain held for this version (`0x…`).
    pub metadata_hash: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// The provider's asset store.
#[derive(Debug, Clone)]
pub struct AssetStore {
    pool: AnyPool,
    backend: Backend,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl AssetStore {
    /// Opens (creating if needed) a catalog: `sqlite:///var/lib/insitu/catalog.db`,
    /// `sqlite::memory:` or `postgres://user@host/db`.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(CatalogError::Invalid(
                "the catalog URL must start with sqlite: or postgres://".into(),
            ));
        };
        if backend == Backend::Postgres && !cfg!(feature = "postgres") {
            return Err(CatalogError::Invalid(
                "this build has no Postgres support: enable the `postgres` feature of insitu-catalog"
                    .into(),
            ));
        }
        let url = match backend {
            // Create the database file on first use.
            Backend::Sqlite if !url.contains(":memory:") && !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
            }
            _ => url.to_string(),
        };
        let max = if url.contains(":memory:") { 1 } else { 8 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Concurrent readers with one writer, integrity, and patience
                        // while `insitu publish` and `insitu serve` share the file.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                        // Reads through the OS page cache, shared by every connection
                        // of the pool, instead of each connection's own 2 MB cache:
                        // a search probes indexes larger than that, and a connection
                        // the pool had not used for a while started cold.
                        sqlx::query("PRAGMA mmap_size = 1073741824")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(db("opening the catalog database"))?;
        let blob = match backend {
            Backend::Sqlite => "BLOB",
            Backend::Postgres => "BYTEA",
        };
        for stmt in SCHEMA {
            let sql = stmt.replace("{blob}", blob);
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .map_err(db("creating the catalog tables"))?;
        }
        sqlx::query(crate::lineage::outbox::SCHEMA)
            .execute(&pool)
            .await
            .map_err(db("creating the lineage outbox"))?;
        let store = AssetStore { pool, backend };
        store.prepare_search().await?;
        Ok(store)
    }

    /// Creates the search index and brings catalogs written by older versions up to
    /// date: registered assets missing from the index are indexed, assets without a
    /// version history get their current metadata as version 1.
    async fn prepare_search(&self) -> Result<()> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(db("opening a catalog connection"))?;
        crate::search::index::create(&mut conn, self.backend).await?;
        sqlx::query(
            "INSERT INTO asset_versions (did, version, ddo, metadata_hash, created_at)
             SELECT a.did, a.version, a.ddo, a.metadata_hash, a.updated_at FROM assets a
             WHERE NOT EXISTS (SELECT 1 FROM asset_versions v WHERE v.did = a.did)",
        )
        .execute(&mut *conn)
        .await
        .map_err(db("recording asset versions"))?;
        let missing = sqlx::query(
            "SELECT a.did, a.ddo, a.updated_at FROM assets a WHERE a.registered = 1
             AND NOT EXISTS (SELECT 1 FROM asset_search s WHERE s.did = a.did)
             ORDER BY a.updated_at, a.did",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(db("finding unindexed assets"))?;
        drop(conn);
        for r in missing {
            let did: String = r.get("did");
            let json: String = r.get("ddo");
            let ddo: Ddo = serde_json::from_str(&json).map_err(|e| CatalogError::Corrupt {
                did: did.clone(),
                detail: e.to_string(),
            })?;
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(db("starting a transaction"))?;
            crate::search::index::put(&mut tx, self.backend, &ddo, r.get("updated_at")).await?;
            tx.commit().await.map_err(db("committing the index"))?;
        }
        Ok(())
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// The lineage outbox in this catalog's database. Publishing and updating record
    /// their DatasetEvents there in the same transaction as the change itself.
    pub fn lineage_outbox(&self) -> crate::lineage::Outbox {
        crate::lineage::Outbox::in_pool(self.pool.clone())
    }

    /// Records a new asset before it is registered on chain, so that a failed
    /// registration leaves a row to retry or remove rather than a file nobody knows of.
    pub async fn insert(&self, ddo: &Ddo, location: &StorageLocation) -> Result<()> {
        let (did, json, hash) = encoded(ddo)?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        let exists = sqlx::query("SELECT 1 FROM assets WHERE did = $1")
            .bind(&did)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("checking for an existing asset"))?;
        if exists.is_some() {
            return Err(CatalogError::Exists(did));
        }
        sqlx::query(
            "INSERT INTO assets (did, version, ddo, metadata_hash, registered, updated_at)
             VALUES ($1, 1, $2, $3, 0, $4)",
        )
        .bind(&did)
        .bind(&json)
        .bind(&hash)
        .bind(ddo.created_at as i64)
        .execute(&mut *tx)
        .await
        .map_err(db("inserting the asset"))?;
        sqlx::query(
            "INSERT INTO asset_locations (did, url, format, schema_ipc) VALUES ($1, $2, $3, $4)",
        )
        .bind(&did)
        .bind(&location.url)
        .bind(location.format.as_str())
        .bind(&location.schema_ipc)
        .execute(&mut *tx)
        .await
        .map_err(db("inserting the asset location"))?;
        record_version(&mut tx, &did, 1, &json, &hash, ddo.created_at as i64).await?;
        tx.commit().await.map_err(db("committing the asset"))?;
        Ok(())
    }

    /// Marks an asset as registered on chain, which makes it searchable.
    pub async fn mark_registered(&self, did: Did) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        let done = sqlx::query("UPDATE assets SET registered = 1 WHERE did = $1")
            .bind(did.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db("marking the asset registered"))?;
        if done.rows_affected() == 0 {
            return Err(CatalogError::NotFound(did.to_string()));
        }
        let row = sqlx::query("SELECT ddo, updated_at FROM assets WHERE did = $1")
            .bind(did.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("reading the asset"))?;
        let stored = ddo_of_row(&row, did)?;
        crate::search::index::put(&mut tx, self.backend, &stored, row.get("updated_at")).await?;
        record_dataset_event(&mut tx, &stored, crate::lineage::LifecycleChange::Create).await?;
        tx.commit()
            .await
            .map_err(db("committing the registration"))?;
        Ok(())
    }

    /// Replaces the public metadata of a registered asset with `ddo` (same DID), as a
    /// new version, and reindexes it. The caller has already put the new hash on chain.
    /// Returns the new version number.
    pub async fn update(&self, ddo: &Ddo) -> Result<i64> {
        let (did, json, hash) = encoded(ddo)?;
        let now = now_secs();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        let row = sqlx::query("SELECT version, registered FROM assets WHERE did = $1")
            .bind(&did)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("reading the asset"))?
            .ok_or_else(|| CatalogError::NotFound(did.clone()))?;
        let registered: i64 = row.get("registered");
        if registered == 0 {
            return Err(CatalogError::Invalid(format!(
                "asset {did} is not registered on chain yet; it cannot be updated"
            )));
        }
        let version: i64 = row.get::<i64, _>("version") + 1;
        sqlx::query(
            "UPDATE assets SET version = $2, ddo = $3, metadata_hash = $4, updated_at = $5
             WHERE did = $1",
        )
        .bind(&did)
        .bind(version)
        .bind(&json)
        .bind(&hash)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db("updating the asset"))?;
        record_version(&mut tx, &did, version, &json, &hash, now).await?;
        crate::search::index::put(&mut tx, self.backend, ddo, now).await?;
        record_dataset_event(&mut tx, ddo, crate::lineage::LifecycleChange::Alter).await?;
        tx.commit().await.map_err(db("committing the update"))?;
        Ok(version)
    }

    /// Every version of an asset's metadata, oldest first.
    pub async fn history(&self, did: Did) -> Result<Vec<AssetVersion>> {
        let rows = sqlx::query(
            "SELECT version, ddo, metadata_hash, created_at FROM asset_versions
             WHERE did = $1 ORDER BY version",
        )
        .bind(did.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading the asset's versions"))?;
        rows.iter()
            .map(|r| {
                Ok(AssetVersion {
                    version: r.get("version"),
                    ddo: ddo_of_row(r, did)?,
                    metadata_hash: r.get("metadata_hash"),
                    created_at: r.get("created_at"),
                })
            })
            .collect()
    }

    /// Removes an asset (used when its on-chain registration failed).
    pub async fn remove(&self, did: Did) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        crate::search::index::remove(&mut tx, self.backend, &did.to_string()).await?;
        for sql in [
            "DELETE FROM asset_versions WHERE did = $1",
            "DELETE FROM asset_audience WHERE did = $1",
            "DELETE FROM service_constraints WHERE did = $1",
            "DELETE FROM asset_locations WHERE did = $1",
            "DELETE FROM assets WHERE did = $1",
        ] {
            sqlx::query(sql)
                .bind(did.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db("removing the asset"))?;
        }
        tx.commit().await.map_err(db("committing the removal"))?;
        Ok(())
    }

    /// The public metadata of an asset.
    pub async fn get(&self, did: Did) -> Result<Option<StoredAsset>> {
        let row = sqlx::query("SELECT ddo, version, registered FROM assets WHERE did = $1")
            .bind(did.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading the asset"))?;
        row.map(|r| stored_from_row(&r, did)).transpose()
    }

    /// Every asset, newest first.
    pub async fn list(&self) -> Result<Vec<StoredAsset>> {
        let rows = sqlx::query(
            "SELECT did, ddo, version, registered FROM assets ORDER BY updated_at DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing assets"))?;
        rows.iter()
            .map(|r| {
                let did: String = r.get("did");
                let did = did.parse::<Did>().map_err(|e| CatalogError::Corrupt {
                    did: did.clone(),
                    detail: e.to_string(),
                })?;
                stored_from_row(r, did)
            })
            .collect()
    }

    /// The registered asset served from `url`, if any (so configured assets are published
    /// once, not on every start).
    pub async fn find_by_location(&self, url: &str) -> Result<Option<Did>> {
        let row = sqlx::query(
            "SELECT a.did FROM assets a JOIN asset_locations l ON l.did = a.did
             WHERE l.url = $1 AND a.registered = 1 ORDER BY a.updated_at DESC LIMIT 1",
        )
        .bind(url)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("looking up an asset by location"))?;
        row.map(|r| {
            let did: String = r.get("did");
            did.parse::<Did>().map_err(|e| CatalogError::Corrupt {
                did: did.clone(),
                detail: e.to_string(),
            })
        })
        .transpose()
    }

    /// The database pool, for provider state that lives beside the catalog (privacy
    /// budgets).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Sets (replacing) the private query constraints of one service of an asset, as
    /// the JSON the policy crate reads. The caller validates them first.
    pub async fn set_constraints(&self, did: Did, service_index: u64, json: &str) -> Result<()> {
        let index = i64::try_from(service_index)
            .map_err(|_| CatalogError::Invalid("service index out of range".into()))?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        sqlx::query("DELETE FROM service_constraints WHERE did = $1 AND service_index = $2")
            .bind(did.to_string())
            .bind(index)
            .execute(&mut *tx)
            .await
            .map_err(db("replacing constraints"))?;
        sqlx::query(
            "INSERT INTO service_constraints (did, service_index, constraints) VALUES ($1, $2, $3)",
        )
        .bind(did.to_string())
        .bind(index)
        .bind(json)
        .execute(&mut *tx)
        .await
        .map_err(db("storing constraints"))?;
        tx.commit().await.map_err(db("committing constraints"))?;
        Ok(())
    }

    /// The private query constraints of one service, if any were set.
    pub async fn constraints(&self, did: Did, service_index: u64) -> Result<Option<String>> {
        let index = i64::try_from(service_index)
            .map_err(|_| CatalogError::Invalid("service index out of range".into()))?;
        let row = sqlx::query(
            "SELECT constraints FROM service_constraints WHERE did = $1 AND service_index = $2",
        )
        .bind(did.to_string())
        .bind(index)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading constraints"))?;
        Ok(row.map(|r| r.get("constraints")))
    }

    /// The private storage location of an asset. Only the provider's own serving path
    /// calls this.
    pub async fn location(&self, did: Did) -> Result<Option<StorageLocation>> {
        let row = sqlx::query("SELECT url, format, schema_ipc FROM asset_locations WHERE did = $1")
            .bind(did.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading the asset location"))?;
        row.map(|r| {
            let format: String = r.get("format");
            let format = match format.as_str() {
                "parquet" => DataFormat::Parquet,
                "csv" => DataFormat::Csv,
                other => {
                    return Err(CatalogError::Corrupt {
                        did: did.to_string(),
                        detail: format!("unknown format {other}"),
                    });
                }
            };
            Ok(StorageLocation {
                url: r.get("url"),
                format,
                schema_ipc: r.get("schema_ipc"),
            })
        })
        .transpose()
    }
}

/// A DDO checked and ready to store: its DID, canonical JSON and metadata hash.
fn encoded(ddo: &Ddo) -> Result<(String, String, String)> {
    ddo.validate()?;
    let json = serde_json::to_string(ddo).map_err(|e| CatalogError::Invalid(e.to_string()))?;
    Ok((ddo.did.to_string(), json, ddo.metadata_hash()?.to_string()))
}

/// Appends one version of an asset's metadata to its history.
async fn record_version(
    conn: &mut sqlx::AnyConnection,
    did: &str,
    version: i64,
    json: &str,
    hash: &str,
    at: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO asset_versions (did, version, ddo, metadata_hash, created_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(did)
    .bind(version)
    .bind(json)
    .bind(hash)
    .bind(at)
    .execute(&mut *conn)
    .await
    .map_err(db("recording a version of the asset"))?;
    Ok(())
}

/// Queues the DatasetEvent of a published or updated asset for every lineage receiver,
/// inside the transaction that makes the change.
async fn record_dataset_event(
    conn: &mut sqlx::AnyConnection,
    ddo: &Ddo,
    change: crate::lineage::LifecycleChange,
) -> Result<()> {
    let row = sqlx::query("SELECT url FROM asset_locations WHERE did = $1")
        .bind(ddo.did.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db("reading the asset location"))?
        .ok_or_else(|| CatalogError::NotFound(ddo.did.to_string()))?;
    let url: String = row.get("url");
    let event = crate::lineage::DatasetEvent::for_asset(ddo, &url, change);
    let now_ms = u64::try_from(now_secs()).unwrap_or(0) * 1000;
    crate::lineage::outbox::enqueue_in(
        conn,
        &event,
        &[crate::lineage::EVERY_RECEIVER.to_string()],
        now_ms,
    )
    .await?;
    Ok(())
}

/// The DDO in a row's `ddo` column.
fn ddo_of_row(r: &AnyRow, did: Did) -> Result<Ddo> {
    let json: String = r.get("ddo");
    serde_json::from_str(&json).map_err(|e| CatalogError::Corrupt {
        did: did.to_string(),
        detail: e.to_string(),
    })
}

fn stored_from_row(r: &AnyRow, did: Did) -> Result<StoredAsset> {
    let ddo = ddo_of_row(r, did)?;
    let registered: i64 = r.get("registered");
    Ok(StoredAsset {
        ddo,
        version: r.get("version"),
        registered: registered != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ddo::sample_ddo as ddo;

    #[tokio::test]
    async fn public_metadata_and_private_location_round_trip_separately() {
        let store = AssetStore::open("sqlite::memory:").await.expect("open");
        let loc = StorageLocation {
            url: "file:///secret/path/data.parquet".into(),
            format: DataFormat::Parquet,
            schema_ipc: vec![1, 2, 3],
        };
        store.insert(&ddo(), &loc).await.expect("insert");
        let got = store.get(ddo().did).await.expect("get").expect("present");
        assert_eq!(got.ddo, ddo());
        assert!(!got.registered);
        let json = serde_json::to_string(&got.ddo).expect("json");
        assert!(!json.contains("secret"), "DDO must not carry the location");
        assert_eq!(
            store.location(ddo().did).await.expect("loc"),
            Some(loc.clone())
        );
        assert!(!format!("{loc:?}").contains("secret"));
        assert!(matches!(
            store.insert(&ddo(), &loc).await,
            Err(CatalogError::Exists(_))
        ));
        store.mark_registered(ddo().did).await.expect("mark");
        assert!(
            store
                .get(ddo().did)
                .await
                .expect("get")
                .expect("p")
                .registered
        );
    }
}
