//! The durable outbox: every lineage event is written to the catalog database first,
//! one row per receiver, and delivered from there with retries and backoff.
//!
//! Writing is one local insert, so data access never waits on a catalog; a receiver
//! that is down only makes rows wait. Delivery is at least once: a row is deleted only
//! after its receiver acknowledged it, so a crash between the two sends it again. The
//! row's id is the event's stable identity across those retries.

use serde::Serialize;
use sqlx::{AnyPool, Row};

use crate::error::{CatalogError, Result, db};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS lineage_outbox (
    id TEXT NOT NULL,
    receiver TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    last_error TEXT,
    PRIMARY KEY (id, receiver)
)";

/// An event waiting for one receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub id: String,
    pub receiver: String,
    pub body: String,
    pub attempts: i64,
}

/// The outbox, in the catalog database (SQLite or Postgres).
#[derive(Debug, Clone)]
pub struct Outbox {
    pool: AnyPool,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Outbox {
    /// Opens the outbox in `pool`, creating its table.
    pub async fn new(pool: AnyPool) -> Result<Self> {
        sqlx::query(SCHEMA)
            .execute(&pool)
            .await
            .map_err(db("creating the lineage outbox"))?;
        Ok(Outbox { pool })
    }

    /// Records `event` for each of `receivers`, in one transaction. Returns its id.
    pub async fn enqueue(
        &self,
        event: &impl Serialize,
        receivers: &[String],
        now_ms: u64,
    ) -> Result<String> {
        let body =
            serde_json::to_string(event).map_err(|e| CatalogError::Invalid(e.to_string()))?;
        let id = uuid::Uuid::new_v4().to_string();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        for r in receivers {
            sqlx::query(
                "INSERT INTO lineage_outbox (id, receiver, body, attempts, next_at, created_at)
                 VALUES ($1, $2, $3, 0, $4, $4)",
            )
            .bind(&id)
            .bind(r)
            .bind(&body)
            .bind(to_i64(now_ms))
            .execute(&mut *tx)
            .await
            .map_err(db("queueing a lineage event"))?;
        }
        tx.commit()
            .await
            .map_err(db("committing a lineage event"))?;
        Ok(id)
    }

    /// Up to `limit` events for `receiver` that are due at `now_ms`, oldest first.
    pub async fn due(&self, receiver: &str, now_ms: u64, limit: u32) -> Result<Vec<Pending>> {
        let rows = sqlx::query(
            "SELECT id, receiver, body, attempts FROM lineage_outbox
             WHERE receiver = $1 AND next_at <= $2 ORDER BY created_at, id LIMIT $3",
        )
        .bind(receiver)
        .bind(to_i64(now_ms))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading the lineage outbox"))?;
        Ok(rows
            .iter()
            .map(|r| Pending {
                id: r.get("id"),
                receiver: r.get("receiver"),
                body: r.get("body"),
                attempts: r.get("attempts"),
            })
            .collect())
    }

    /// The receiver acknowledged the event.
    pub async fn delivered(&self, p: &Pending) -> Result<()> {
        sqlx::query("DELETE FROM lineage_outbox WHERE id = $1 AND receiver = $2")
            .bind(&p.id)
            .bind(&p.receiver)
            .execute(&self.pool)
            .await
            .map_err(db("marking a lineage event delivered"))?;
        Ok(())
    }

    /// Delivery failed; try again at `next_ms`.
    pub async fn retry_at(&self, p: &Pending, next_ms: u64, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE lineage_outbox SET attempts = attempts + 1, next_at = $3, last_error = $4
             WHERE id = $1 AND receiver = $2",
        )
        .bind(&p.id)
        .bind(&p.receiver)
        .bind(to_i64(next_ms))
        .bind(error.chars().take(500).collect::<String>())
        .execute(&self.pool)
        .await
        .map_err(db("rescheduling a lineage event"))?;
        Ok(())
    }

    /// Events not yet delivered, over all receivers.
    pub async fn pending(&self) -> Result<u64> {
        let row = sqlx::query("SELECT count(*) AS n FROM lineage_outbox")
            .fetch_one(&self.pool)
            .await
            .map_err(db("counting the lineage outbox"))?;
        let n: i64 = row.get("n");
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
