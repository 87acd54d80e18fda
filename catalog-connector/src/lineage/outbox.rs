//! The durable outbox: every lineage event is written to the catalog database first,
//! one row per receiver, and delivered from there with retries and backoff.
//!
//! Writing is one local insert, so data access never waits on a catalog; a receiver
//! that is down only makes rows wait. Delivery is at least once: a row is deleted only
//! after its receiver acknowledged it, so a crash between the two sends it again. The
//! row's id is the event's stable identity across those retries.

use serde::Serialize;
use sqlx::{AnyConnection, AnyPool, Row};

use crate::error::{CatalogError, Result, db};

/// The receiver name of an event meant for every receiver the delivering process has.
/// A process that records events without knowing the receivers (`insitu publish`
/// beside a running `insitu serve`) writes one such row; the dispatcher copies it to
/// each of its receivers before sending.
pub const EVERY_RECEIVER: &str = "*";

/// A process-wide increasing timestamp (microseconds) for `created_at`, so events a
/// process records in order are delivered in order even within one millisecond (a
/// START and the COMPLETE of a fast query), where the random ids would not order them.
pub fn sequence() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS lineage_outbox (
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

    /// An outbox whose table the caller has created (the asset store does at open).
    pub(crate) fn in_pool(pool: AnyPool) -> Self {
        Outbox { pool }
    }

    /// Records `event` for each of `receivers`, in one transaction. Returns its id.
    pub async fn enqueue(
        &self,
        event: &impl Serialize,
        receivers: &[String],
        now_ms: u64,
    ) -> Result<String> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        let id = enqueue_in(&mut tx, event, receivers, now_ms).await?;
        tx.commit()
            .await
            .map_err(db("committing a lineage event"))?;
        Ok(id)
    }

    /// Records several events in one transaction (one commit for all): each with its
    /// `created_at` from [`sequence`], for each of `receivers`.
    pub async fn enqueue_batch<E: Serialize>(
        &self,
        events: &[(E, u64)],
        receivers: &[String],
        now_ms: u64,
    ) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        for (event, created) in events {
            insert(&mut tx, event, receivers, now_ms, *created).await?;
        }
        tx.commit().await.map_err(db("committing lineage events"))?;
        Ok(())
    }

    /// Copies events addressed to [`EVERY_RECEIVER`] to each of `receivers` and drops
    /// the broadcast rows, in one transaction. Safe with several dispatchers on one
    /// database: copies that exist already are skipped. Returns how many were copied.
    pub async fn fan_out(&self, receivers: &[String]) -> Result<u64> {
        if receivers.is_empty() {
            return Ok(0);
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        // Take the rows by deleting them, so the first statement writes: a SQLite
        // transaction that read first could not upgrade to writing while another
        // dispatcher holds the lock, and on Postgres a second dispatcher's delete waits
        // for this one and then finds nothing.
        let rows = sqlx::query(
            "DELETE FROM lineage_outbox WHERE receiver = $1 AND id IN (
                SELECT id FROM lineage_outbox WHERE receiver = $1
                ORDER BY created_at LIMIT 1000)
             RETURNING id, body, next_at, created_at",
        )
        .bind(EVERY_RECEIVER)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("taking broadcast lineage events"))?;
        for r in &rows {
            let id: String = r.get("id");
            for receiver in receivers {
                sqlx::query(
                    "INSERT INTO lineage_outbox (id, receiver, body, attempts, next_at, created_at)
                     VALUES ($1, $2, $3, 0, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(&id)
                .bind(receiver)
                .bind(r.get::<String, _>("body"))
                .bind(r.get::<i64, _>("next_at"))
                .bind(r.get::<i64, _>("created_at"))
                .execute(&mut *tx)
                .await
                .map_err(db("copying a broadcast lineage event"))?;
            }
        }
        tx.commit()
            .await
            .map_err(db("committing broadcast lineage events"))?;
        Ok(rows.len() as u64)
    }

    /// Claims up to `limit` events for `receiver` that are due at `now_ms`, oldest
    /// first: they are not due again until `lease_ms`, so another dispatcher on the
    /// same database (a second replica) does not send them too. A dispatcher that dies
    /// holding a lease only delays its events until the lease runs out.
    pub async fn claim(
        &self,
        receiver: &str,
        now_ms: u64,
        lease_ms: u64,
        limit: u32,
    ) -> Result<Vec<Pending>> {
        let rows = sqlx::query(
            "UPDATE lineage_outbox SET next_at = $3
             WHERE receiver = $1 AND id IN (
                SELECT id FROM lineage_outbox WHERE receiver = $1 AND next_at <= $2
                ORDER BY created_at, id LIMIT $4)
             AND next_at <= $2
             RETURNING id, receiver, body, attempts, created_at",
        )
        .bind(receiver)
        .bind(to_i64(now_ms))
        .bind(to_i64(lease_ms))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db("claiming lineage events"))?;
        let mut claimed: Vec<(i64, Pending)> = rows
            .iter()
            .map(|r| {
                (
                    r.get("created_at"),
                    Pending {
                        id: r.get("id"),
                        receiver: r.get("receiver"),
                        body: r.get("body"),
                        attempts: r.get("attempts"),
                    },
                )
            })
            .collect();
        // RETURNING has no order; send in the order the events happened.
        claimed.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
        Ok(claimed.into_iter().map(|(_, p)| p).collect())
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

    /// Gives claimed events back, due at `next_ms`, without counting an attempt.
    pub async fn release(&self, events: &[Pending], next_ms: u64) -> Result<()> {
        for p in events {
            sqlx::query("UPDATE lineage_outbox SET next_at = $3 WHERE id = $1 AND receiver = $2")
                .bind(&p.id)
                .bind(&p.receiver)
                .bind(to_i64(next_ms))
                .execute(&self.pool)
                .await
                .map_err(db("releasing lineage events"))?;
        }
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

/// Records `event` for each of `receivers` inside the caller's transaction, so an
/// event and the change it reports commit together or not at all. Returns its id.
pub(crate) async fn enqueue_in(
    conn: &mut AnyConnection,
    event: &impl Serialize,
    receivers: &[String],
    now_ms: u64,
) -> Result<String> {
    insert(conn, event, receivers, now_ms, sequence()).await
}

async fn insert(
    conn: &mut AnyConnection,
    event: &impl Serialize,
    receivers: &[String],
    now_ms: u64,
    created: u64,
) -> Result<String> {
    let body = serde_json::to_string(event).map_err(|e| CatalogError::Invalid(e.to_string()))?;
    let id = uuid::Uuid::new_v4().to_string();
    for r in receivers {
        sqlx::query(
            "INSERT INTO lineage_outbox (id, receiver, body, attempts, next_at, created_at)
             VALUES ($1, $2, $3, 0, $4, $5)",
        )
        .bind(&id)
        .bind(r)
        .bind(&body)
        .bind(to_i64(now_ms))
        .bind(to_i64(created))
        .execute(&mut *conn)
        .await
        .map_err(db("queueing a lineage event"))?;
    }
    Ok(id)
}
