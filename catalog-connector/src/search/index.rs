//! The search index beside the asset tables: a text index (FTS5 on SQLite, a weighted
//! `tsvector` with a GIN index on Postgres) and plain tables for the filters (tags,
//! services with their prices, owner), so a filter-only search never touches the text
//! index and a text search filters with indexed lookups.
//!
//! Only registered assets are indexed: an asset whose chain transaction has not
//! completed cannot be ordered, so it must not be found.

use sqlx::AnyConnection;

use crate::ddo::Ddo;
use crate::error::{Result, db};
use crate::store::Backend;

use super::text::{MIN_PREFIX, normalised};

/// Filter tables shared by both backends. They are keyed by the asset's integer id in
/// `asset_search`, and each lookup index covers the id: a tag's assets are one index
/// range in id order (newest last), and testing one asset against a filter reads an
/// index alone.
const COMMON: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS asset_tags (
        tag TEXT NOT NULL,
        id BIGINT NOT NULL,
        PRIMARY KEY (tag, id)
    )",
    "CREATE INDEX IF NOT EXISTS asset_tags_by_id ON asset_tags (id)",
    // Prices as 78-digit zero-padded decimals: every uint256 fits, and text order is
    // numeric order on both backends without a 256-bit integer type.
    "CREATE TABLE IF NOT EXISTS asset_services (
        id BIGINT NOT NULL,
        service_index BIGINT NOT NULL,
        service_type TEXT NOT NULL,
        price TEXT NOT NULL,
        PRIMARY KEY (id, service_index)
    )",
    "CREATE INDEX IF NOT EXISTS asset_services_by_type ON asset_services (service_type, price, id)",
    // Testing one asset for a service type (and price) reads this index alone.
    "CREATE INDEX IF NOT EXISTS asset_services_by_type_id ON asset_services (service_type, id, price)",
    "CREATE INDEX IF NOT EXISTS asset_services_by_price ON asset_services (price, id)",
];

const SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS asset_search (
        id INTEGER PRIMARY KEY,
        did TEXT NOT NULL UNIQUE REFERENCES assets(did) ON DELETE CASCADE,
        owner TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    )",
    // Holds the rowid too, so one owner's assets come newest (highest id) first.
    "CREATE INDEX IF NOT EXISTS asset_search_by_owner ON asset_search (owner)",
    // Searches order by id (index order) now; the time index only cost writes.
    "DROP INDEX IF EXISTS asset_search_by_time",
];

/// The FTS5 text index, rowid = `asset_search.id`. Porter stemming so `orders` finds
/// `order`. The two-character prefix index answers the shortest prefix a search
/// expands (`customer_id` is the phrase `customer id*`) from one list instead of a
/// merge of every indexed word starting with those letters; it costs about a fifth
/// more index.
fn fts_table(name: &str) -> String {
    format!(
        "CREATE VIRTUAL TABLE IF NOT EXISTS {name} USING fts5(
            name, description, tags, columns,
            tokenize = 'porter unicode61 remove_diacritics 2',
            prefix = '{MIN_PREFIX}'
        )"
    )
}

const POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS asset_search (
        id BIGSERIAL PRIMARY KEY,
        did TEXT NOT NULL UNIQUE REFERENCES assets(did) ON DELETE CASCADE,
        owner TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        doc TSVECTOR NOT NULL
    )",
    // One owner's assets newest (highest id) first.
    "CREATE INDEX IF NOT EXISTS asset_search_by_owner_id ON asset_search (owner, id)",
    "DROP INDEX IF EXISTS asset_search_by_owner",
    "DROP INDEX IF EXISTS asset_search_by_time",
    "CREATE INDEX IF NOT EXISTS asset_search_doc ON asset_search USING GIN (doc)",
];

/// The relative weight of each field in ranking: a hit in the name counts most.
pub(crate) const SQLITE_BM25: &str = "bm25(asset_fts, 10.0, 1.0, 5.0, 3.0)";

/// Creates the index tables.
pub(crate) async fn create(conn: &mut AnyConnection, backend: Backend) -> Result<()> {
    let specific = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    for stmt in COMMON.iter().chain(specific) {
        sqlx::query(*stmt)
            .execute(&mut *conn)
            .await
            .map_err(db("creating the search index"))?;
    }
    if backend == Backend::Sqlite {
        upgrade_fts(conn).await?;
    }
    Ok(())
}

/// Creates the text index, or rebuilds one made by an older version (without the
/// prefix index) in place: FTS5 cannot add a prefix index to an existing table. The
/// copy happens in one transaction, so a crash leaves the old index whole. Two
/// processes opening the catalog at once may both rebuild; the second copies the
/// first's result.
async fn upgrade_fts(conn: &mut AnyConnection) -> Result<()> {
    let current: Option<(String,)> =
        sqlx::query_as("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'asset_fts'")
            .fetch_optional(&mut *conn)
            .await
            .map_err(db("reading the text index's definition"))?;
    let Some((sql,)) = current else {
        return sqlx::query(sqlx::AssertSqlSafe(fts_table("asset_fts")))
            .execute(&mut *conn)
            .await
            .map(drop)
            .map_err(db("creating the text index"));
    };
    if sql.contains(&format!("prefix = '{MIN_PREFIX}'")) {
        return Ok(());
    }
    tracing::info!("rebuilding the catalog's text index with a prefix index");
    let mut tx = sqlx::Connection::begin(&mut *conn)
        .await
        .map_err(db("starting the text index rebuild"))?;
    let steps = [
        "DROP TABLE IF EXISTS asset_fts_next".to_string(),
        fts_table("asset_fts_next"),
        "INSERT INTO asset_fts_next (rowid, name, description, tags, columns)
         SELECT rowid, name, description, tags, columns FROM asset_fts"
            .to_string(),
        "DROP TABLE asset_fts".to_string(),
        "ALTER TABLE asset_fts_next RENAME TO asset_fts".to_string(),
    ];
    for step in steps {
        sqlx::query(sqlx::AssertSqlSafe(step))
            .execute(&mut *tx)
            .await
            .map_err(db("rebuilding the text index"))?;
    }
    tx.commit()
        .await
        .map_err(db("committing the text index rebuild"))?;
    // The new index is all in the write-ahead log, where every read would look it up
    // page by page until the next write restarts the log; move it into the database.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut *conn)
        .await
        .map(drop)
        .map_err(db("checkpointing the rebuilt text index"))
}

/// `price` as the index stores it.
pub(crate) fn price_key(price: alloy::primitives::U256) -> String {
    format!("{price:0>78}")
}

/// (Re)indexes `ddo`, replacing whatever was indexed for it.
pub(crate) async fn put(
    conn: &mut AnyConnection,
    backend: Backend,
    ddo: &Ddo,
    updated_at: i64,
) -> Result<()> {
    let did = ddo.did.to_string();
    remove(conn, backend, &did).await?;
    let owner = format!("{:#x}", ddo.owner);
    // Column names as tokens, so both `l_orderkey` (a phrase) and `orderkey` find them.
    let columns = ddo
        .schema
        .iter()
        .map(|c| normalised(&c.name))
        .collect::<Vec<_>>()
        .join(" ");
    let name = normalised(&ddo.name);
    let description = normalised(&ddo.description);
    let tag_text = normalised(&ddo.tags.join(" "));
    let id: i64 = match backend {
        Backend::Sqlite => {
            let row: (i64,) = sqlx::query_as(
                "INSERT INTO asset_search (did, owner, updated_at) VALUES ($1, $2, $3)
                 RETURNING id",
            )
            .bind(&did)
            .bind(&owner)
            .bind(updated_at)
            .fetch_one(&mut *conn)
            .await
            .map_err(db("indexing the asset"))?;
            sqlx::query(
                "INSERT INTO asset_fts (rowid, name, description, tags, columns)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(row.0)
            .bind(&name)
            .bind(&description)
            .bind(&tag_text)
            .bind(&columns)
            .execute(&mut *conn)
            .await
            .map_err(db("indexing the asset's text"))?;
            row.0
        }
        Backend::Postgres => {
            let row: (i64,) = sqlx::query_as(
                "INSERT INTO asset_search (did, owner, updated_at, doc) VALUES ($1, $2, $3,
                    setweight(to_tsvector('english', $4), 'A') ||
                    setweight(to_tsvector('english', $5), 'B') ||
                    setweight(to_tsvector('english', $6), 'C') ||
                    setweight(to_tsvector('english', $7), 'D'))
                 RETURNING id",
            )
            .bind(&did)
            .bind(&owner)
            .bind(updated_at)
            .bind(&name)
            .bind(&tag_text)
            .bind(&columns)
            .bind(&description)
            .fetch_one(&mut *conn)
            .await
            .map_err(db("indexing the asset"))?;
            row.0
        }
    };
    let mut tags: Vec<String> = ddo.tags.iter().map(|t| t.to_lowercase()).collect();
    tags.sort();
    tags.dedup();
    for tag in &tags {
        sqlx::query("INSERT INTO asset_tags (tag, id) VALUES ($1, $2)")
            .bind(tag)
            .bind(id)
            .execute(&mut *conn)
            .await
            .map_err(db("indexing tags"))?;
    }
    for s in &ddo.services {
        sqlx::query(
            "INSERT INTO asset_services (id, service_index, service_type, price)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(i64::try_from(s.index).unwrap_or(i64::MAX))
        .bind(s.offer.service_type.to_string())
        .bind(price_key(s.offer.price))
        .execute(&mut *conn)
        .await
        .map_err(db("indexing services"))?;
    }
    Ok(())
}

/// Drops `did` from the index.
pub(crate) async fn remove(conn: &mut AnyConnection, backend: Backend, did: &str) -> Result<()> {
    let mut tables = vec!["asset_tags", "asset_services"];
    if backend == Backend::Sqlite {
        tables.push("asset_fts");
    }
    for table in tables {
        let key = if table == "asset_fts" { "rowid" } else { "id" };
        let sql = format!(
            "DELETE FROM {table} WHERE {key} IN (SELECT id FROM asset_search WHERE did = $1)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(did)
            .execute(&mut *conn)
            .await
            .map_err(db("unindexing the asset"))?;
    }
    sqlx::query("DELETE FROM asset_search WHERE did = $1")
        .bind(did)
        .execute(&mut *conn)
        .await
        .map_err(db("unindexing the asset"))?;
    Ok(())
}
