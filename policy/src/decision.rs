use std::fmt;

use alloy::primitives::{Address, B256};
use insitu_ledger::{AgreementId, Did, ServiceType};
use serde::{Deserialize, Serialize};

/// What a principal wants to do with an asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Download,
    Query,
    Compute,
    Train,
}

impl Action {
    /// The service type an agreement must be for to allow this action.
    pub fn service_type(self) -> ServiceType {
        match self {
            Action::Download => ServiceType::Download,
            Action::Query => ServiceType::Query,
            Action::Compute => ServiceType::Compute,
            Action::Train => ServiceType::Train,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.service_type(), f)
    }
}

/// Permission to perform one action on one asset under one agreement, until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub consumer: Address,
    pub did: Did,
    pub agreement: AgreementId,
    pub action: Action,
    pub service_index: u64,
    /// End of the access window, in chain time (unix seconds).
    pub access_end: u64,
    /// The fulfil transaction this decision sent, if it was the first use.
    pub fulfilled_by: Option<B256>,
}

/// Why a request was refused. Each variant maps to one clear message for the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum DenyReason {
    UnknownAgreement {
        agreement: AgreementId,
    },
    WrongConsumer {
        agreement: AgreementId,
    },
    WrongAsset {
        agreement: AgreementId,
        did: Did,
    },
    WrongService {
        agreement: AgreementId,
        service: ServiceType,
        action: Action,
    },
    NotServedHere {
        did: Did,
    },
    NotConfirmed {
        agreement: AgreementId,
        have: u64,
        need: u64,
    },
    Refunded {
        agreement: AgreementId,
    },
    Expired {
        agreement: AgreementId,
        access_end: u64,
    },
    FulfilDeadlinePassed {
        agreement: AgreementId,
    },
    FulfilFailed {
        agreement: AgreementId,
        detail: String,
    },
    /// The provider's Cedar rules refused after the chain granted.
    ProviderRule {
        rule: String,
    },
    /// The chain could not be asked. Not the consumer's fault, and never a grant.
    ChainUnavailable {
        detail: String,
    },
    AuditUnavailable,
    /// The asset is served to named consumers only (a compute result), and the caller
    /// is not one of them.
    NotInAudience {
        did: Did,
    },
    /// The provider's catalog could not say who may read the asset.
    CatalogUnavailable,
}

impl DenyReason {
    /// Whether the denial is the service's fault (retry later) rather than the request's.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            DenyReason::ChainUnavailable { .. }
                | DenyReason::AuditUnavailable
                | DenyReason::CatalogUnavailable
        )
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::UnknownAgreement { agreement } => write!(
                f,
                "agreement {agreement} does not exist on this chain (no order and no payment lock); order the asset first"
            ),
            DenyReason::WrongConsumer { agreement } => {
                write!(f, "agreement {agreement} belongs to another consumer")
            }
            DenyReason::WrongAsset { agreement, did } => {
                write!(f, "agreement {agreement} is not for asset {did}")
            }
            DenyReason::WrongService {
                agreement,
                service,
                action,
            } => write!(
                f,
                "agreement {agreement} is for the {service} service, not {action}"
            ),
            DenyReason::NotServedHere { did } => {
                write!(f, "this provider does not serve asset {did}")
            }
            DenyReason::NotConfirmed {
                agreement,
                have,
                need,
            } => write!(
                f,
                "agreement {agreement} has {have} of {need} required confirmations; retry shortly"
            ),
            DenyReason::Refunded { agreement } => {
                write!(f, "agreement {agreement} was refunded and grants nothing")
            }
            DenyReason::Expired {
                agreement,
                access_end,
            } => write!(
                f,
                "agreement {agreement} has expired (access ended at {access_end}); order again"
            ),
            DenyReason::FulfilDeadlinePassed { agreement } => write!(
                f,
                "the fulfilment deadline of agreement {agreement} has passed; the consumer may refund it"
            ),
            DenyReason::FulfilFailed { agreement, detail } => {
                write!(f, "fulfilling agreement {agreement} failed: {detail}")
            }
            DenyReason::ProviderRule { rule } => {
                write!(f, "refused by the provider's rule `{rule}`")
            }
            DenyReason::ChainUnavailable { detail } => {
                write!(
                    f,
                    "the chain is unavailable, so nothing is granted: {detail}"
                )
            }
            DenyReason::AuditUnavailable => {
                write!(f, "the audit log is unavailable, so nothing is granted")
            }
            DenyReason::NotInAudience { did } => {
                write!(f, "{did} is served to its owner only")
            }
            DenyReason::CatalogUnavailable => {
                write!(
                    f,
                    "the provider's catalog is unavailable, so nothing is granted"
                )
            }
        }
    }
}

/// The outcome of [`crate::PolicyEngine::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Grant),
    Deny(DenyReason),
}
