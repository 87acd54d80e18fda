//! The append-only audit log. Every decision, allow or deny, is one JSON line with its
//! reason, so an operator can answer "who read what, under which agreement, and why was
//! this refused" without the chain.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use alloy::primitives::{Address, B256};
use async_trait::async_trait;
use insitu_ledger::{AgreementId, Did};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::decision::Action;
use crate::error::{PolicyError, Result};

/// One audited decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Wall-clock time of the decision, unix milliseconds.
    pub at_ms: u64,
    pub consumer: Address,
    pub action: Action,
    pub did: Did,
    pub agreement: AgreementId,
    pub allowed: bool,
    /// Human-readable reason for a denial, or "granted".
    pub reason: String,
    /// The fulfil transaction this decision sent, if any.
    pub fulfil_tx: Option<B256>,
    /// For a query: what ran and under which constraints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<QueryAudit>,
}

/// What the audit log records about one query, allowed or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryAudit {
    pub query_id: String,
    /// The constraints in force (rule names with their parameters).
    pub constraints: Vec<String>,
    /// The rule that refused the query, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_by: Option<String>,
    /// ε spent from the agreement's budget, in nano-units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon_nano: Option<u64>,
}

/// Where audit records go. Implementations must be append-only and durable enough that a
/// failure to write is reported (the engine then denies).
#[async_trait]
pub trait AuditLog: Send + Sync + std::fmt::Debug {
    async fn append(&self, record: &AuditRecord) -> Result<()>;
}

/// JSON lines appended to a file opened with `O_APPEND` and flushed per record.
#[derive(Debug)]
pub struct JsonlAuditLog {
    path: PathBuf,
    file: tokio::sync::Mutex<tokio::fs::File>,
}

impl JsonlAuditLog {
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| PolicyError::Audit(format!("cannot create {}: {e}", dir.display())))?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|e| PolicyError::Audit(format!("cannot open {}: {e}", path.display())))?;
        Ok(JsonlAuditLog {
            path,
            file: tokio::sync::Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl AuditLog for JsonlAuditLog {
    async fn append(&self, record: &AuditRecord) -> Result<()> {
        let mut line = serde_json::to_vec(record).map_err(|e| PolicyError::Audit(e.to_string()))?;
        line.push(b'\n');
        let mut file = self.file.lock().await;
        file.write_all(&line)
            .await
            .map_err(|e| PolicyError::Audit(format!("write failed: {e}")))?;
        file.flush()
            .await
            .map_err(|e| PolicyError::Audit(format!("flush failed: {e}")))?;
        Ok(())
    }
}

/// An in-memory log for tests and embedders that ship records elsewhere.
#[derive(Debug, Default)]
pub struct MemoryAuditLog {
    records: Mutex<Vec<AuditRecord>>,
}

impl MemoryAuditLog {
    pub fn records(&self) -> Vec<AuditRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl AuditLog for MemoryAuditLog {
    async fn append(&self, record: &AuditRecord) -> Result<()> {
        self.records
            .lock()
            .map_err(|_| PolicyError::Audit("poisoned".into()))?
            .push(record.clone());
        Ok(())
    }
}
