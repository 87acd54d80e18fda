//! A short-lived cache of grants. Checking the chain on every Flight call would make the
//! RPC node the bottleneck; caching for seconds (never past the access window) keeps
//! the check on every call cheap while a refund or expiry still takes effect quickly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use insitu_ledger::AgreementId;

use crate::decision::{Action, Grant};

type Key = (Address, AgreementId, Action);

#[derive(Debug)]
pub(crate) struct GrantCache {
    ttl: Duration,
    entries: Mutex<HashMap<Key, (Instant, Grant)>>,
}

/// Bound on entries, so a flood of distinct agreements cannot grow memory without limit.
const MAX_ENTRIES: usize = 100_000;

impl GrantCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        GrantCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, key: &Key, chain_now: u64) -> Option<Grant> {
        let entries = self.entries.lock().ok()?;
        let (at, grant) = entries.get(key)?;
        (at.elapsed() < self.ttl && grant.access_end > chain_now).then(|| grant.clone())
    }

    pub(crate) fn put(&self, key: Key, grant: Grant) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                let ttl = self.ttl;
                entries.retain(|_, (at, _)| at.elapsed() < ttl);
                if entries.len() >= MAX_ENTRIES {
                    entries.clear();
                }
            }
            entries.insert(key, (Instant::now(), grant));
        }
    }

    pub(crate) fn invalidate(&self, agreement: AgreementId) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|(_, a, _), _| *a != agreement);
        }
    }
}
