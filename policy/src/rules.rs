//! Provider rules in Cedar, evaluated after the on-chain entitlement.
//!
//! The chain says whether a consumer paid; the provider's rules say whether it still
//! wants to serve them: deny lists, partner groups that see extra columns, rate limits.
//! Rules are Cedar policies over the schema in [`SCHEMA`], validated strictly when they
//! are loaded (a provider that starts with a broken rule file does not start), and
//! reloaded when the files change. A reload that fails validation keeps the last valid
//! rules and logs the error: the provider never runs without rules it has checked.
//!
//! Evaluation fails closed: with rules loaded, a request no `permit` matches is denied,
//! and a request whose evaluation raised an error is denied, even if the error was in a
//! `forbid` that Cedar would otherwise skip.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use alloy::primitives::Address;
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use insitu_ledger::{AgreementId, Did};

use crate::decision::Action;
use crate::error::{PolicyError, Result};

/// The Cedar schema provider rules are written against.
pub const SCHEMA: &str = r#"
namespace Insitu {
  entity Group;
  entity Consumer in [Group];
  entity Asset = { did: String };
  entity Column in [Asset] = { name: String };
  type AccessContext = {
    agreement: String,
    service_index: Long,
    requests_last_minute: Long,
    unix_time: Long,
  };
  action download, query, compute, train appliesTo {
    principal: Consumer,
    resource: Asset,
    context: AccessContext,
  };
  action read_column appliesTo {
    principal: Consumer,
    resource: Column,
    context: AccessContext,
  };
}
"#;

/// How far back `requests_last_minute` counts.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Requests remembered per consumer; beyond this the count saturates.
const RATE_CAP: usize = 100_000;

/// Why the rules refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDenial {
    /// The `@id` of the policy that fired (or its position, `policy3`), or
    /// `default-deny` when no `permit` matched.
    pub rule: String,
}

struct Loaded {
    policies: PolicySet,
    entities: Entities,
    stamp: (Option<SystemTime>, Option<SystemTime>),
}

/// A provider's Cedar rules, reloadable.
pub struct ProviderRules {
    schema: Schema,
    policies_path: Option<PathBuf>,
    entities_path: Option<PathBuf>,
    loaded: RwLock<Arc<Loaded>>,
    requests: Mutex<HashMap<Address, VecDeque<Instant>>>,
}

impl std::fmt::Debug for ProviderRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderRules")
            .field("policies", &self.policies_path)
            .field("entities", &self.entities_path)
            .finish_non_exhaustive()
    }
}

fn rules_error(msg: impl Into<String>) -> PolicyError {
    PolicyError::Rules(msg.into())
}

fn schema() -> Result<Schema> {
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(s, _)| s)
        .map_err(|e| rules_error(format!("the built-in Cedar schema: {e}")))
}

fn uid(kind: &str, id: &str) -> Result<EntityUid> {
    let kind = EntityTypeName::from_str(kind).map_err(|e| rules_error(e.to_string()))?;
    let id = EntityId::from_str(id).map_err(|e| rules_error(e.to_string()))?;
    Ok(EntityUid::from_type_name_and_id(kind, id))
}

fn consumer_uid(consumer: Address) -> Result<EntityUid> {
    uid("Insitu::Consumer", &format!("{consumer:#x}"))
}

fn mtime(path: Option<&Path>) -> Option<SystemTime> {
    path.and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok())
}

/// Parses and strictly validates a policy set and its entities.
fn compile(
    schema: &Schema,
    policies: &str,
    entities: Option<&str>,
) -> Result<(PolicySet, Entities)> {
    let set = PolicySet::from_str(policies)
        .map_err(|e| rules_error(format!("the rules do not parse: {e}")))?;
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    if !result.validation_passed() {
        let errors: Vec<String> = result
            .validation_errors()
            .map(|e| e.to_string())
            .take(5)
            .collect();
        return Err(rules_error(format!(
            "the rules do not validate against the insitu Cedar schema: {}",
            errors.join("; ")
        )));
    }
    let entities = match entities {
        Some(json) => Entities::from_json_str(json, Some(schema))
            .map_err(|e| rules_error(format!("the rule entities are invalid: {e}")))?,
        None => Entities::empty(),
    };
    Ok((set, entities))
}

/// The context of every request: the same for all actions, so one `forbid` can cover
/// them all.
fn access_context(
    agreement: AgreementId,
    service_index: u64,
    recent: i64,
    unix_time: u64,
) -> Result<Context> {
    Context::from_pairs([
        (
            "agreement".to_string(),
            RestrictedExpression::new_string(agreement.to_string()),
        ),
        (
            "service_index".to_string(),
            RestrictedExpression::new_long(i64::try_from(service_index).unwrap_or(i64::MAX)),
        ),
        (
            "requests_last_minute".to_string(),
            RestrictedExpression::new_long(recent),
        ),
        (
            "unix_time".to_string(),
            RestrictedExpression::new_long(i64::try_from(unix_time).unwrap_or(i64::MAX)),
        ),
    ])
    .map_err(|e| rules_error(e.to_string()))
}

impl ProviderRules {
    /// Rules from text (for embedders and tests); they never reload.
    pub fn from_text(policies: &str, entities_json: Option<&str>) -> Result<Self> {
        let schema = schema()?;
        let (policies, entities) = compile(&schema, policies, entities_json)?;
        Ok(ProviderRules {
            schema,
            policies_path: None,
            entities_path: None,
            loaded: RwLock::new(Arc::new(Loaded {
                policies,
                entities,
                stamp: (None, None),
            })),
            requests: Mutex::new(HashMap::new()),
        })
    }

    /// Rules from a `.cedar` file and an optional Cedar entities JSON file (group
    /// memberships). Fails if either is unreadable or invalid.
    pub fn from_files(policies: &Path, entities: Option<&Path>) -> Result<Self> {
        let schema = schema()?;
        let loaded = Self::read(&schema, policies, entities)?;
        Ok(ProviderRules {
            schema,
            policies_path: Some(policies.to_path_buf()),
            entities_path: entities.map(Path::to_path_buf),
            loaded: RwLock::new(Arc::new(loaded)),
            requests: Mutex::new(HashMap::new()),
        })
    }

    fn read(schema: &Schema, policies: &Path, entities: Option<&Path>) -> Result<Loaded> {
        let stamp = (mtime(Some(policies)), mtime(entities));
        let text = std::fs::read_to_string(policies)
            .map_err(|e| rules_error(format!("cannot read {}: {e}", policies.display())))?;
        let ents = entities
            .map(|p| {
                std::fs::read_to_string(p)
                    .map_err(|e| rules_error(format!("cannot read {}: {e}", p.display())))
            })
            .transpose()?;
        let (policies, entities) = compile(schema, &text, ents.as_deref())?;
        Ok(Loaded {
            policies,
            entities,
            stamp,
        })
    }

    fn current(&self) -> Arc<Loaded> {
        match self.loaded.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads the files if they changed since the last load. Returns whether new rules
    /// are in force; on error the previous rules stay.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let Some(path) = &self.policies_path else {
            return Ok(false);
        };
        let stamp = (mtime(Some(path)), mtime(self.entities_path.as_deref()));
        if stamp == self.current().stamp {
            return Ok(false);
        }
        let loaded = Self::read(&self.schema, path, self.entities_path.as_deref());
        match loaded {
            Ok(l) => {
                if let Ok(mut slot) = self.loaded.write() {
                    *slot = Arc::new(l);
                }
                Ok(true)
            }
            Err(e) => {
                // Remember the stamp so a broken file is reported once, not every poll.
                let current = self.current();
                if let Ok(mut slot) = self.loaded.write() {
                    *slot = Arc::new(Loaded {
                        policies: current.policies.clone(),
                        entities: current.entities.clone(),
                        stamp,
                    });
                }
                Err(e)
            }
        }
    }

    /// Polls the rule files every `every` and reloads them when they change.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let rules = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match rules.reload_if_changed() {
                    Ok(true) => tracing::info!("provider rules reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "provider rules not reloaded; the previous rules stay in force")
                    }
                }
            }
        })
    }

    /// How many requests `consumer` made in the last minute, without counting one.
    fn recent_requests(&self, consumer: Address) -> i64 {
        let now = Instant::now();
        self.requests
            .lock()
            .map(|all| {
                all.get(&consumer).map_or(0, |q| {
                    q.iter()
                        .filter(|t| now.duration_since(**t) < RATE_WINDOW)
                        .count() as i64
                })
            })
            .unwrap_or(i64::MAX)
    }

    /// Counts a request of `consumer` and returns how many it made in the last minute.
    fn count_request(&self, consumer: Address) -> i64 {
        let now = Instant::now();
        let Ok(mut all) = self.requests.lock() else {
            return i64::MAX;
        };
        if all.len() > RATE_CAP {
            all.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.duration_since(*t) < RATE_WINDOW)
            });
        }
        let q = all.entry(consumer).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW)
        {
            q.pop_front();
        }
        if q.len() < RATE_CAP {
            q.push_back(now);
        }
        q.len() as i64
    }

    fn entities_for(
        &self,
        loaded: &Loaded,
        consumer: &EntityUid,
        extra: Vec<Entity>,
    ) -> Result<Entities> {
        let mut add = extra;
        if loaded.entities.get(consumer).is_none() {
            add.push(
                Entity::new(consumer.clone(), HashMap::new(), HashSet::new())
                    .map_err(|e| rules_error(e.to_string()))?,
            );
        }
        loaded
            .entities
            .clone()
            .add_entities(add, Some(&self.schema))
            .map_err(|e| rules_error(e.to_string()))
    }

    fn asset_entity(&self, did: Did) -> Result<Entity> {
        let mut attrs = HashMap::new();
        attrs.insert(
            "did".to_string(),
            RestrictedExpression::new_string(did.to_string()),
        );
        Entity::new(
            uid("Insitu::Asset", &did.to_string())?,
            attrs,
            HashSet::new(),
        )
        .map_err(|e| rules_error(e.to_string()))
    }

    fn decide(
        &self,
        loaded: &Loaded,
        request: &Request,
        entities: &Entities,
    ) -> std::result::Result<(), RuleDenial> {
        let response = Authorizer::new().is_authorized(request, &loaded.policies, entities);
        let name = |id: &cedar_policy::PolicyId| {
            loaded
                .policies
                .annotation(id, "id")
                .map(str::to_string)
                .unwrap_or_else(|| id.to_string())
        };
        if let Some(cedar_policy::AuthorizationError::PolicyEvaluationError(e)) =
            response.diagnostics().errors().next()
        {
            return Err(RuleDenial {
                rule: format!("{} (evaluation error)", name(e.policy_id())),
            });
        }
        match response.decision() {
            CedarDecision::Allow => Ok(()),
            CedarDecision::Deny => {
                let mut fired: Vec<String> = response.diagnostics().reason().map(name).collect();
                fired.sort();
                Err(RuleDenial {
                    rule: if fired.is_empty() {
                        "default-deny".into()
                    } else {
                        fired.join(", ")
                    },
                })
            }
        }
    }

    /// Whether a policy that names `read_column` (not a blanket `permit(principal,
    /// action, resource)` written for access) permits the request. A provider's catch-all
    /// permit must not quietly unblock every column.
    fn permits_by_name(&self, loaded: &Loaded, request: &Request, entities: &Entities) -> bool {
        let response = Authorizer::new().is_authorized(request, &loaded.policies, entities);
        if response.decision() != CedarDecision::Allow
            || response.diagnostics().errors().next().is_some()
        {
            return false;
        }
        response.diagnostics().reason().any(|id| {
            loaded.policies.policy(id).is_some_and(|p| {
                !matches!(p.action_constraint(), cedar_policy::ActionConstraint::Any)
            })
        })
    }

    /// Whether the rules let `consumer` perform `action` on `did` under `agreement`.
    /// Counts the request for rate limits.
    pub fn check(
        &self,
        consumer: Address,
        action: Action,
        did: Did,
        agreement: AgreementId,
        service_index: u64,
        unix_time: u64,
    ) -> std::result::Result<(), RuleDenial> {
        let recent = self.count_request(consumer);
        let internal = |e: PolicyError| RuleDenial {
            rule: format!("unevaluable ({e})"),
        };
        let loaded = self.current();
        let principal = consumer_uid(consumer).map_err(internal)?;
        let act = uid("Insitu::Action", &action.to_string()).map_err(internal)?;
        let resource = uid("Insitu::Asset", &did.to_string()).map_err(internal)?;
        let context =
            access_context(agreement, service_index, recent, unix_time).map_err(internal)?;
        let request = Request::new(
            principal.clone(),
            act,
            resource,
            context,
            Some(&self.schema),
        )
        .map_err(|e| internal(rules_error(e.to_string())))?;
        let asset = self.asset_entity(did).map_err(internal)?;
        let entities = self
            .entities_for(&loaded, &principal, vec![asset])
            .map_err(internal)?;
        self.decide(&loaded, &request, &entities)
    }

    /// Which of `columns` (restricted by the service's constraints) the rules grant to
    /// `consumer` anyway, through `read_column` permits. Errors grant nothing.
    pub fn extra_columns(
        &self,
        consumer: Address,
        did: Did,
        agreement: AgreementId,
        service_index: u64,
        columns: &[String],
    ) -> Vec<String> {
        if columns.is_empty() {
            return Vec::new();
        }
        let loaded = self.current();
        let recent = self.recent_requests(consumer);
        let unix_time = crate::engine::unix_now();
        let attempt = || -> Result<Vec<String>> {
            let principal = consumer_uid(consumer)?;
            let action = uid("Insitu::Action", "read_column")?;
            let asset = self.asset_entity(did)?;
            let mut column_entities = Vec::with_capacity(columns.len());
            let mut uids = Vec::with_capacity(columns.len());
            for c in columns {
                let id = uid("Insitu::Column", &format!("{did}/{c}"))?;
                let mut attrs = HashMap::new();
                attrs.insert(
                    "name".to_string(),
                    RestrictedExpression::new_string(c.clone()),
                );
                let parents: HashSet<EntityUid> = [asset.uid()].into_iter().collect();
                column_entities.push(
                    Entity::new(id.clone(), attrs, parents)
                        .map_err(|e| rules_error(e.to_string()))?,
                );
                uids.push(id);
            }
            column_entities.push(asset);
            let entities = self.entities_for(&loaded, &principal, column_entities)?;
            let mut granted = Vec::new();
            for (c, id) in columns.iter().zip(uids) {
                let request = Request::new(
                    principal.clone(),
                    action.clone(),
                    id,
                    access_context(agreement, service_index, recent, unix_time)?,
                    Some(&self.schema),
                )
                .map_err(|e| rules_error(e.to_string()))?;
                if self.permits_by_name(&loaded, &request, &entities) {
                    granted.push(c.clone());
                }
            }
            Ok(granted)
        };
        attempt().unwrap_or_else(|e| {
            tracing::error!(error = %e, "column rules could not be evaluated; no extra columns");
            Vec::new()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::B256;

    const RULES: &str = r#"
        @id("serve-everyone")
        permit(principal, action, resource);

        @id("deny-list")
        forbid(principal == Insitu::Consumer::"0x2222222222222222222222222222222222222222", action, resource);

        @id("rate-limit")
        forbid(principal, action, resource) when { context.requests_last_minute > 3 };

        @id("partners-see-income")
        permit(principal in Insitu::Group::"partners", action == Insitu::Action::"read_column", resource)
        when { resource.name == "income" };
    "#;

    const ENTITIES: &str = r#"[
        {"uid": {"type": "Insitu::Consumer", "id": "0x1111111111111111111111111111111111111111"},
         "attrs": {}, "parents": [{"type": "Insitu::Group", "id": "partners"}]},
        {"uid": {"type": "Insitu::Group", "id": "partners"}, "attrs": {}, "parents": []}
    ]"#;

    fn did() -> Did {
        Did(B256::repeat_byte(9))
    }

    #[test]
    fn deny_lists_rate_limits_and_partner_columns() {
        let rules = ProviderRules::from_text(RULES, Some(ENTITIES)).expect("rules");
        let partner = Address::repeat_byte(0x11);
        let denied = Address::repeat_byte(0x22);
        let other = Address::repeat_byte(0x33);
        let agreement = AgreementId(B256::repeat_byte(1));
        let check = |who| rules.check(who, Action::Query, did(), agreement, 0, 1);
        assert_eq!(
            check(denied),
            Err(RuleDenial {
                rule: "deny-list".into()
            })
        );
        for _ in 0..3 {
            assert_eq!(check(other), Ok(()));
        }
        assert_eq!(check(other).map_err(|d| d.rule), Err("rate-limit".into()));
        let cols = vec!["income".to_string(), "name".to_string()];
        assert_eq!(
            rules.extra_columns(partner, did(), agreement, 0, &cols),
            vec!["income"]
        );
        let third = Address::repeat_byte(0x44);
        assert!(
            rules
                .extra_columns(third, did(), agreement, 0, &cols)
                .is_empty()
        );
    }

    #[test]
    fn nothing_permitted_is_denied_by_default() {
        let rules = ProviderRules::from_text(
            r#"permit(principal, action == Insitu::Action::"download", resource);"#,
            None,
        )
        .expect("rules");
        let r = rules.check(
            Address::repeat_byte(1),
            Action::Query,
            did(),
            AgreementId(B256::ZERO),
            0,
            1,
        );
        assert_eq!(r.map_err(|d| d.rule), Err("default-deny".into()));
    }

    #[test]
    fn rules_that_do_not_validate_are_refused() {
        for bad in [
            "permit(principal, action, resource) when { context.nope > 1 };",
            "permit(principal == Insitu::User::\"x\", action, resource);",
            "this is not cedar",
        ] {
            assert!(ProviderRules::from_text(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_broken_reload_keeps_the_previous_rules() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("rules.cedar");
        std::fs::write(&path, "permit(principal, action, resource);").expect("write");
        let rules = ProviderRules::from_files(&path, None).expect("load");
        let agreement = AgreementId(B256::ZERO);
        let ok = |r: &ProviderRules| {
            r.check(
                Address::repeat_byte(5),
                Action::Query,
                did(),
                agreement,
                0,
                1,
            )
            .is_ok()
        };
        assert!(ok(&rules));
        std::fs::write(&path, "permit(principal, action, resource) when { nope };").expect("write");
        bump_mtime(&path, 5);
        assert!(rules.reload_if_changed().is_err());
        assert!(ok(&rules), "previous rules stay in force");
        std::fs::write(
            &path,
            "forbid(principal, action, resource);\npermit(principal, action, resource);",
        )
        .expect("write");
        bump_mtime(&path, 10);
        assert_eq!(rules.reload_if_changed().ok(), Some(true));
        assert!(!ok(&rules));
    }

    fn bump_mtime(path: &Path, seconds: u64) {
        let f = std::fs::File::options()
            .write(true)
            .open(path)
            .expect("open");
        f.set_modified(SystemTime::now() + Duration::from_secs(seconds))
            .expect("mtime");
    }
}
