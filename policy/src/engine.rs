//! The decision pipeline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::Address;
use insitu_ledger::{Agreement, AgreementId, AgreementState, Did, Ledger, LedgerError};

use crate::audience::AssetAudience;
use crate::audit::{AuditLog, AuditRecord};
use crate::cache::GrantCache;
use crate::decision::{Action, Decision, DenyReason, Grant};
use crate::error::Result;
use crate::rules::ProviderRules;
use crate::token::{Principal, TokenVerifier};

/// Decides every request of one provider. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct PolicyEngine {
    ledger: Arc<dyn Ledger>,
    verifier: Arc<TokenVerifier>,
    audit: Arc<dyn AuditLog>,
    cache: GrantCache,
    /// One lock per agreement being fulfilled, so concurrent first uses send one
    /// `fulfill` transaction, not several (all but one of which would revert).
    fulfil_locks: Mutex<HashMap<AgreementId, Arc<tokio::sync::Mutex<()>>>>,
    rules: Option<Arc<ProviderRules>>,
    audience: Option<Arc<dyn AssetAudience>>,
    stats: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    allowed: AtomicU64,
    denied: AtomicU64,
    unavailable: AtomicU64,
    fulfilments: AtomicU64,
}

/// Decision counts since start, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicyStats {
    pub allowed: u64,
    /// Denials because of the request (no agreement, wrong asset, expired…).
    pub denied: u64,
    /// Denials because the chain or the audit log could not answer.
    pub unavailable: u64,
    /// `fulfill` transactions sent.
    pub fulfilments: u64,
}

/// Builder for [`PolicyEngine`].
#[derive(Debug)]
pub struct PolicyEngineBuilder {
    ledger: Arc<dyn Ledger>,
    verifier: Arc<TokenVerifier>,
    audit: Arc<dyn AuditLog>,
    cache_ttl: Duration,
    rules: Option<Arc<ProviderRules>>,
    audience: Option<Arc<dyn AssetAudience>>,
}

impl PolicyEngineBuilder {
    /// How long a grant is reused without asking the chain again. Zero disables caching.
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The provider's Cedar rules, evaluated after every on-chain grant.
    pub fn with_rules(mut self, rules: Arc<ProviderRules>) -> Self {
        self.rules = Some(rules);
        self
    }

    /// Private audiences (compute results): consulted on every grant, failing closed.
    pub fn with_audience(mut self, audience: Arc<dyn AssetAudience>) -> Self {
        self.audience = Some(audience);
        self
    }

    pub fn build(self) -> PolicyEngine {
        PolicyEngine {
            ledger: self.ledger,
            verifier: self.verifier,
            audit: self.audit,
            cache: GrantCache::new(self.cache_ttl),
            fulfil_locks: Mutex::new(HashMap::new()),
            rules: self.rules,
            audience: self.audience,
            stats: Counters::default(),
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn chain_down(e: LedgerError) -> DenyReason {
    DenyReason::ChainUnavailable {
        detail: e.to_string(),
    }
}

impl PolicyEngine {
    pub fn builder(
        ledger: Arc<dyn Ledger>,
        verifier: Arc<TokenVerifier>,
        audit: Arc<dyn AuditLog>,
    ) -> PolicyEngineBuilder {
        PolicyEngineBuilder {
            ledger,
            verifier,
            audit,
            cache_ttl: Duration::from_secs(15),
            rules: None,
            audience: None,
        }
    }

    /// This provider's address (the audience of its tokens).
    pub fn provider(&self) -> Address {
        self.verifier.provider()
    }

    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    /// The provider's Cedar rules, if any (the flight server asks them for extra columns).
    pub fn rules(&self) -> Option<&Arc<ProviderRules>> {
        self.rules.as_ref()
    }

    /// Appends a record to the audit log (the flight server records each query's
    /// constraints this way).
    pub async fn audit(&self, record: &AuditRecord) -> Result<()> {
        self.audit.append(record).await
    }

    /// Verifies a bearer token now. Stateless apart from one-shot nonces.
    pub fn authenticate(&self, bearer: &str) -> Result<Principal> {
        self.verifier.verify(bearer, unix_now())
    }

    /// Decision counts since start.
    pub fn stats(&self) -> PolicyStats {
        PolicyStats {
            allowed: self.stats.allowed.load(Ordering::Relaxed),
            denied: self.stats.denied.load(Ordering::Relaxed),
            unavailable: self.stats.unavailable.load(Ordering::Relaxed),
            fulfilments: self.stats.fulfilments.load(Ordering::Relaxed),
        }
    }

    /// Forgets cached grants of an agreement (call on chain events such as a refund).
    pub fn invalidate(&self, agreement: AgreementId) {
        self.cache.invalidate(agreement);
    }

    /// Decides whether `principal` may perform `action` on `did` under `agreement`,
    /// fulfilling the agreement on first use. The decision is audited; if the audit log
    /// cannot record it, the answer is a denial.
    pub async fn decide(
        &self,
        principal: &Principal,
        action: Action,
        did: Did,
        agreement: AgreementId,
    ) -> Decision {
        let mut decision = self.evaluate(principal, action, did, agreement).await;
        if let (Decision::Allow(_), Some(audience)) = (&decision, &self.audience) {
            match audience.audience(did).await {
                Ok(Some(list)) if !list.contains(&principal.consumer) => {
                    decision = Decision::Deny(DenyReason::NotInAudience { did });
                }
                Ok(_) => {}
                Err(detail) => {
                    tracing::error!(%did, error = %detail, "asset audience unreadable; denying");
                    decision = Decision::Deny(DenyReason::CatalogUnavailable);
                }
            }
        }
        if let (Decision::Allow(grant), Some(rules)) = (&decision, &self.rules)
            && let Err(denial) = rules.check(
                principal.consumer,
                action,
                did,
                agreement,
                grant.service_index,
                unix_now(),
            )
        {
            decision = Decision::Deny(DenyReason::ProviderRule { rule: denial.rule });
        }
        let (allowed, reason, fulfil_tx) = match &decision {
            Decision::Allow(g) => (true, "granted".to_string(), g.fulfilled_by),
            Decision::Deny(r) => (false, r.to_string(), None),
        };
        let record = AuditRecord {
            at_ms: unix_now_ms(),
            consumer: principal.consumer,
            action,
            did,
            agreement,
            allowed,
            reason,
            fulfil_tx,
            query: None,
        };
        if let Err(e) = self.audit.append(&record).await {
            tracing::error!(error = %e, "audit log write failed; denying");
            self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
            return Decision::Deny(DenyReason::AuditUnavailable);
        }
        let counter = match &decision {
            Decision::Allow(_) => &self.stats.allowed,
            Decision::Deny(r) if r.is_unavailable() => &self.stats.unavailable,
            Decision::Deny(_) => &self.stats.denied,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Decision::Allow(Grant {
            fulfilled_by: Some(_),
            ..
        }) = &decision
        {
            self.stats.fulfilments.fetch_add(1, Ordering::Relaxed);
        }
        match &decision {
            Decision::Allow(g) => tracing::info!(
                consumer = %principal.consumer, %did, %agreement, %action,
                fulfilled = g.fulfilled_by.is_some(), "access granted"
            ),
            Decision::Deny(r) => tracing::info!(
                consumer = %principal.consumer, %did, %agreement, %action, reason = %r, "access denied"
            ),
        }
        decision
    }

    /// [`decide`](Self::decide) for callers that name only the agreement: a Flight SQL
    /// token lists agreement ids, and the asset is whatever each agreement is for. The
    /// agreement is read once to learn its asset; every check of `decide` still applies.
    pub async fn decide_agreement(
        &self,
        principal: &Principal,
        action: Action,
        agreement: AgreementId,
    ) -> Decision {
        let did = match self
            .cache
            .get(&(principal.consumer, agreement, action), unix_now())
        {
            Some(grant) => grant.did,
            // An unreadable or unknown agreement still goes through `decide`, so the
            // refusal is audited like any other (under no asset).
            None => match self.ledger.agreement(agreement).await {
                Ok(Some(a)) => a.terms.did,
                Ok(None) | Err(_) => Did(alloy::primitives::B256::ZERO),
            },
        };
        self.decide(principal, action, did, agreement).await
    }

    async fn evaluate(
        &self,
        principal: &Principal,
        action: Action,
        did: Did,
        id: AgreementId,
    ) -> Decision {
        let key = (principal.consumer, id, action);
        if let Some(grant) = self.cache.get(&key, unix_now())
            && grant.did == did
        {
            return Decision::Allow(grant);
        }
        match self.evaluate_on_chain(principal, action, did, id).await {
            Ok(grant) => {
                self.cache.put(key, grant.clone());
                Decision::Allow(grant)
            }
            Err(reason) => Decision::Deny(reason),
        }
    }

    async fn evaluate_on_chain(
        &self,
        principal: &Principal,
        action: Action,
        did: Did,
        id: AgreementId,
    ) -> std::result::Result<Grant, DenyReason> {
        let agreement = self.load_checked(principal, action, did, id).await?;
        let chain_now = self.ledger.chain_time().await.map_err(chain_down)?;
        match agreement.state {
            AgreementState::Refunded => Err(DenyReason::Refunded { agreement: id }),
            AgreementState::Fulfilled => self.grant_if_open(&agreement, action, chain_now, None),
            AgreementState::Locked => {
                if chain_now >= agreement.terms.refund_after {
                    return Err(DenyReason::FulfilDeadlinePassed { agreement: id });
                }
                self.fulfil_once(principal, action, did, id).await
            }
        }
    }

    /// Reads the agreement and checks everything that does not depend on its state:
    /// it exists (the lock is in place), it is this consumer's, for this asset, for this
    /// service, served by this provider, and deep enough in the chain.
    async fn load_checked(
        &self,
        principal: &Principal,
        action: Action,
        did: Did,
        id: AgreementId,
    ) -> std::result::Result<Agreement, DenyReason> {
        let agreement = self
            .ledger
            .agreement(id)
            .await
            .map_err(chain_down)?
            .ok_or(DenyReason::UnknownAgreement { agreement: id })?;
        if agreement.terms.consumer != principal.consumer {
            return Err(DenyReason::WrongConsumer { agreement: id });
        }
        if agreement.terms.did != did {
            return Err(DenyReason::WrongAsset { agreement: id, did });
        }
        if agreement.terms.service_type != action.service_type() {
            return Err(DenyReason::WrongService {
                agreement: id,
                service: agreement.terms.service_type,
                action,
            });
        }
        let asset = self
            .ledger
            .asset(did)
            .await
            .map_err(chain_down)?
            .ok_or(DenyReason::NotServedHere { did })?;
        if !asset.providers.contains(&self.provider()) {
            return Err(DenyReason::NotServedHere { did });
        }
        let need = self.ledger.required_confirmations();
        if agreement.confirmations < need {
            return Err(DenyReason::NotConfirmed {
                agreement: id,
                have: agreement.confirmations,
                need,
            });
        }
        Ok(agreement)
    }

    fn grant_if_open(
        &self,
        agreement: &Agreement,
        action: Action,
        chain_now: u64,
        fulfilled_by: Option<alloy::primitives::B256>,
    ) -> std::result::Result<Grant, DenyReason> {
        if agreement.access_end <= chain_now {
            return Err(DenyReason::Expired {
                agreement: agreement.id,
                access_end: agreement.access_end,
            });
        }
        Ok(Grant {
            consumer: agreement.terms.consumer,
            did: agreement.terms.did,
            agreement: agreement.id,
            action,
            service_index: agreement.terms.service_index,
            access_end: agreement.access_end,
            fulfilled_by,
        })
    }

    /// Fulfils a locked agreement exactly once, even under concurrent first uses.
    async fn fulfil_once(
        &self,
        principal: &Principal,
        action: Action,
        did: Did,
        id: AgreementId,
    ) -> std::result::Result<Grant, DenyReason> {
        let lock = {
            let mut locks = self
                .fulfil_locks
                .lock()
                .map_err(|_| DenyReason::FulfilFailed {
                    agreement: id,
                    detail: "internal lock poisoned".into(),
                })?;
            locks.entry(id).or_default().clone()
        };
        let _guard = lock.lock().await;
        // Another request may have fulfilled it while we waited: look again.
        let agreement = self.load_checked(principal, action, did, id).await?;
        let result = match agreement.state {
            AgreementState::Refunded => Err(DenyReason::Refunded { agreement: id }),
            AgreementState::Fulfilled => {
                let now = self.ledger.chain_time().await.map_err(chain_down)?;
                self.grant_if_open(&agreement, action, now, None)
            }
            AgreementState::Locked => match self.ledger.fulfill(&agreement).await {
                Ok(tx) => {
                    let fulfilled = self
                        .ledger
                        .agreement(id)
                        .await
                        .map_err(chain_down)?
                        .ok_or(DenyReason::UnknownAgreement { agreement: id })?;
                    let now = self.ledger.chain_time().await.map_err(chain_down)?;
                    match fulfilled.state {
                        AgreementState::Fulfilled => {
                            self.grant_if_open(&fulfilled, action, now, Some(tx.hash))
                        }
                        AgreementState::Locked | AgreementState::Refunded => {
                            Err(DenyReason::FulfilFailed {
                                agreement: id,
                                detail: "the chain does not show the fulfilment".into(),
                            })
                        }
                    }
                }
                Err(LedgerError::Unavailable { .. }) => Err(DenyReason::ChainUnavailable {
                    detail: format!("could not fulfil agreement {id}"),
                }),
                Err(e) => Err(DenyReason::FulfilFailed {
                    agreement: id,
                    detail: e.to_string(),
                }),
            },
        };
        if let Ok(mut locks) = self.fulfil_locks.lock() {
            locks.remove(&id);
        }
        result
    }
}
