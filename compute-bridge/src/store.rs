//! The job store: every job and every state transition, in the provider's database (the
//! catalog's: SQLite embedded, Postgres for several replicas).
//!
//! Transitions are conditional updates (`… WHERE state IN (expected)`), so a cancel
//! racing a completion is decided by the database, once, and a restarted provider
//! finds each unfinished job exactly where it was left.

use alloy::primitives::Address;
use insitu_ledger::{AgreementId, Did};
use sqlx::AnyPool;
use sqlx::{AssertSqlSafe, Row};

use crate::error::{ComputeError, Result, db};
use crate::job::{JobEvent, JobId, JobRecord, JobState, now_ms};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS compute_jobs (
        id TEXT PRIMARY KEY,
        consumer TEXT NOT NULL,
        did TEXT NOT NULL,
        agreement TEXT NOT NULL,
        algorithm TEXT NOT NULL,
        args TEXT NOT NULL,
        backend TEXT NOT NULL,
        state TEXT NOT NULL,
        error TEXT,
        results TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        logs {blob}
    )",
    "CREATE INDEX IF NOT EXISTS compute_jobs_state ON compute_jobs (state)",
    "CREATE TABLE IF NOT EXISTS compute_job_events (
        job_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        state TEXT NOT NULL,
        at BIGINT NOT NULL,
        detail TEXT,
        PRIMARY KEY (job_id, seq)
    )",
];

/// What a new job starts with.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub consumer: Address,
    pub did: Did,
    pub agreement: AgreementId,
    pub algorithm: String,
    pub args: Vec<String>,
    pub backend: String,
}

/// Jobs and their transitions.
#[derive(Debug, Clone)]
pub struct JobStore {
    pool: AnyPool,
}

impl JobStore {
    /// Creates the tables in `pool` if needed. `postgres` picks the binary column type.
    pub async fn open(pool: AnyPool, postgres: bool) -> Result<Self> {
        let blob = if postgres { "BYTEA" } else { "BLOB" };
        for stmt in SCHEMA {
            sqlx::query(AssertSqlSafe(stmt.replace("{blob}", blob)))
                .execute(&pool)
                .await
                .map_err(db("creating the job tables"))?;
        }
        Ok(JobStore { pool })
    }

    /// Records a new job as `queued`.
    pub async fn insert(&self, job: &NewJob) -> Result<()> {
        let now = now_ms() as i64;
        let args =
            serde_json::to_string(&job.args).map_err(|e| ComputeError::Internal(e.to_string()))?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        sqlx::query(
            "INSERT INTO compute_jobs (id, consumer, did, agreement, algorithm, args, backend,
                state, error, results, created_at, updated_at, logs)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', NULL, '[]', $8, $8, NULL)",
        )
        .bind(job.id.to_string())
        .bind(job.consumer.to_string())
        .bind(job.did.to_string())
        .bind(job.agreement.to_string())
        .bind(&job.algorithm)
        .bind(args)
        .bind(&job.backend)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db("recording the job"))?;
        record_event(&mut tx, job.id, JobState::Queued, None, now).await?;
        tx.commit().await.map_err(db("committing the job"))?;
        Ok(())
    }

    /// Moves a job from one of `from` to `to`, recording the transition. Returns false
    /// (and changes nothing) if the job was not in one of `from`: someone else moved it.
    pub async fn transition(
        &self,
        id: JobId,
        from: &[JobState],
        to: JobState,
        detail: Option<&str>,
    ) -> Result<bool> {
        self.update(id, from, to, detail, None, None).await
    }

    /// Ends a job: its terminal state, error, results and kept logs, in one transaction.
    pub async fn finish(
        &self,
        id: JobId,
        from: &[JobState],
        to: JobState,
        error: Option<&str>,
        results: &[Did],
        logs: &[u8],
    ) -> Result<bool> {
        self.update(id, from, to, error, Some(results), Some(logs))
            .await
    }

    async fn update(
        &self,
        id: JobId,
        from: &[JobState],
        to: JobState,
        detail: Option<&str>,
        results: Option<&[Did]>,
        logs: Option<&[u8]>,
    ) -> Result<bool> {
        let now = now_ms() as i64;
        let sql = format!(
            "UPDATE compute_jobs SET state = $1, updated_at = $2,
                error = COALESCE($3, error), results = COALESCE($4, results)
             WHERE id = $5 AND state IN ({})",
            (0..from.len())
                .map(|i| format!("${}", i + 6))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let results_json = results
            .map(|r| {
                serde_json::to_string(&r.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                    .map_err(|e| ComputeError::Internal(e.to_string()))
            })
            .transpose()?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        // Only a failure's detail is the job's error; other details go to the history.
        let error = detail.filter(|_| to == JobState::Failed);
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(to.as_str())
            .bind(now)
            .bind(error.map(str::to_string))
            .bind(results_json)
            .bind(id.to_string());
        for s in from {
            q = q.bind(s.as_str());
        }
        let changed = q
            .execute(&mut *tx)
            .await
            .map_err(db("updating the job"))?
            .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        if let Some(logs) = logs {
            sqlx::query("UPDATE compute_jobs SET logs = $1 WHERE id = $2")
                .bind(logs.to_vec())
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db("storing the job's logs"))?;
        }
        record_event(&mut tx, id, to, detail, now).await?;
        tx.commit().await.map_err(db("committing the transition"))?;
        Ok(true)
    }

    /// A job, if it exists.
    pub async fn get(&self, id: JobId) -> Result<Option<JobRecord>> {
        let row = sqlx::query(
            "SELECT id, consumer, did, agreement, algorithm, args, backend, state, error, results,
                    created_at, updated_at, logs FROM compute_jobs WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading the job"))?;
        row.map(|r| record(&r)).transpose()
    }

    /// The logs kept when the job ended.
    pub async fn logs(&self, id: JobId) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT logs FROM compute_jobs WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading the job's logs"))?;
        Ok(row.and_then(|r| r.get::<Option<Vec<u8>>, _>("logs")))
    }

    /// Every transition of a job, oldest first.
    pub async fn events(&self, id: JobId) -> Result<Vec<JobEvent>> {
        let rows = sqlx::query(
            "SELECT state, at, detail FROM compute_job_events WHERE job_id = $1 ORDER BY seq",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading the job's history"))?;
        rows.iter()
            .map(|r| {
                Ok(JobEvent {
                    state: r.get::<String, _>("state").parse()?,
                    at: r.get::<i64, _>("at") as u64,
                    detail: r.get("detail"),
                })
            })
            .collect()
    }

    /// Jobs not in a terminal state: what a restarted provider must resume or end.
    pub async fn unfinished(&self) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(
            "SELECT id, consumer, did, agreement, algorithm, args, backend, state, error, results,
                    created_at, updated_at, logs FROM compute_jobs
             WHERE state NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing unfinished jobs"))?;
        rows.iter().map(record).collect()
    }
}

async fn record_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: JobId,
    state: JobState,
    detail: Option<&str>,
    at: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO compute_job_events (job_id, seq, state, at, detail)
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4 FROM compute_job_events WHERE job_id = $1",
    )
    .bind(id.to_string())
    .bind(state.as_str())
    .bind(at)
    .bind(detail.map(str::to_string))
    .execute(&mut **tx)
    .await
    .map_err(db("recording the transition"))?;
    Ok(())
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> ComputeError {
    ComputeError::Internal(format!("the job store holds a bad {what}: {e}"))
}

fn record(r: &sqlx::any::AnyRow) -> Result<JobRecord> {
    let id: String = r.get("id");
    let args: String = r.get("args");
    let results: String = r.get("results");
    let results: Vec<String> =
        serde_json::from_str(&results).map_err(|e| corrupt("result list", e))?;
    let logs: Option<Vec<u8>> = r.get("logs");
    Ok(JobRecord {
        id: id.parse()?,
        consumer: r
            .get::<String, _>("consumer")
            .parse()
            .map_err(|e| corrupt("consumer", e))?,
        did: r
            .get::<String, _>("did")
            .parse()
            .map_err(|e| corrupt("DID", e))?,
        agreement: r
            .get::<String, _>("agreement")
            .parse()
            .map_err(|e| corrupt("agreement id", e))?,
        algorithm: r.get("algorithm"),
        args: serde_json::from_str(&args).map_err(|e| corrupt("argument list", e))?,
        backend: r.get("backend"),
        state: r.get::<String, _>("state").parse()?,
        error: r.get("error"),
        results: results
            .iter()
            .map(|d| d.parse().map_err(|e| corrupt("result DID", e)))
            .collect::<Result<_>>()?,
        created_at: r.get::<i64, _>("created_at") as u64,
        updated_at: r.get::<i64, _>("updated_at") as u64,
        log_bytes: logs.map(|l| l.len() as u64).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> JobStore {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("pool");
        JobStore::open(pool, false).await.expect("open")
    }

    fn job() -> NewJob {
        NewJob {
            id: JobId::random(),
            consumer: Address::repeat_byte(1),
            did: Did(alloy::primitives::B256::repeat_byte(2)),
            agreement: AgreementId(alloy::primitives::B256::repeat_byte(3)),
            algorithm: "sha256:00".into(),
            args: vec!["--x".into()],
            backend: "wasm".into(),
        }
    }

    #[tokio::test]
    async fn transitions_are_recorded_and_conditional() {
        let s = store().await;
        let j = job();
        s.insert(&j).await.expect("insert");
        assert!(
            s.transition(j.id, &[JobState::Queued], JobState::Staging, None)
                .await
                .expect("t")
        );
        // A transition from a state the job is not in changes nothing.
        assert!(
            !s.transition(j.id, &[JobState::Queued], JobState::Running, None)
                .await
                .expect("t")
        );
        assert_eq!(s.unfinished().await.expect("list").len(), 1);
        let result = Did(alloy::primitives::B256::repeat_byte(4));
        assert!(
            s.finish(
                j.id,
                &[JobState::Staging],
                JobState::Failed,
                Some("boom"),
                &[result],
                b"log"
            )
            .await
            .expect("finish")
        );
        let got = s.get(j.id).await.expect("get").expect("some");
        assert_eq!(got.state, JobState::Failed);
        assert_eq!(got.error.as_deref(), Some("boom"));
        assert_eq!(got.results, vec![result]);
        assert_eq!(got.args, vec!["--x".to_string()]);
        assert_eq!(
            s.logs(j.id).await.expect("logs").as_deref(),
            Some(&b"log"[..])
        );
        let states: Vec<_> = s
            .events(j.id)
            .await
            .expect("events")
            .iter()
            .map(|e| e.state)
            .collect();
        assert_eq!(
            states,
            vec![JobState::Queued, JobState::Staging, JobState::Failed]
        );
        assert!(s.unfinished().await.expect("list").is_empty());
        // Terminal is terminal.
        assert!(
            !s.transition(j.id, &[JobState::Staging], JobState::Cancelled, None)
                .await
                .expect("t")
        );
    }
}
