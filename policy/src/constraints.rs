//! What a query service lets out of its asset, declared by the provider per service.
//!
//! Constraints are provider-private (a row filter or a blocked column list can say more
//! about the data than the provider wants to publish), stored next to the asset's private
//! location, and enforced by the flight server's plan rewriter, never by client hints.
//! They are validated against the asset's schema when they are set, so a typo fails at
//! publication rather than opening a column at query time.
//!
//! Every rule has a stable name ([`rule`]) that refusals and the audit log quote, so a
//! consumer learns which rule fired and an operator can count them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Names of the rules, as refusals and audit records quote them.
pub mod rule {
    pub const ALLOWED_COLUMNS: &str = "allowed_columns";
    pub const BLOCKED_COLUMNS: &str = "blocked_columns";
    pub const JOIN_ONLY_COLUMNS: &str = "join_only_columns";
    pub const MASKED_COLUMNS: &str = "masked_columns";
    pub const ROW_FILTER: &str = "row_filter";
    pub const AGGREGATE_ONLY: &str = "aggregate_only";
    pub const DIMENSIONS: &str = "aggregate_only.dimensions";
    pub const FUNCTIONS: &str = "aggregate_only.functions";
    pub const ARGUMENTS: &str = "aggregate_only.arguments";
    pub const MIN_ENTITIES: &str = "aggregate_only.min_entities";
    pub const ROW_LIMIT: &str = "row_limit";
    pub const BYTE_LIMIT: &str = "byte_limit";
    pub const TEMPLATES: &str = "templates";
    pub const PRIVACY: &str = "privacy";
    pub const PRIVACY_BUDGET: &str = "privacy.budget";
}

/// Aggregates that return one row's value (or all of them) whatever the group size.
/// They are refused in aggregate-only mode even if a provider lists them.
pub const ROW_REVEALING: &[&str] = &[
    "array_agg",
    "string_agg",
    "listagg",
    "first_value",
    "last_value",
    "nth_value",
    "any_value",
];

/// Aggregates a differentially private service can noise.
pub const PRIVATE_FUNCTIONS: &[&str] = &["count", "sum", "avg"];

/// How a masked column is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mask {
    /// A keyed hash (HMAC-SHA-256, hex): equal values stay equal within one agreement,
    /// and nobody without the provider's key can test a guess.
    Hash,
    /// Always NULL.
    Redact,
}

/// Aggregate-only mode: rows never leave, only groups of enough distinct entities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateRule {
    /// Aggregate functions consumers may call (lower case). Defaults to count, sum, avg.
    #[serde(default = "default_functions")]
    pub functions: Vec<String>,
    /// Columns that may be grouped by, filtered on, sorted by and joined on.
    #[serde(default)]
    pub dimensions: Vec<String>,
    /// The column identifying the person or thing a row is about.
    pub entity: String,
    /// Groups with fewer distinct entities than this are suppressed.
    pub min_entities: u64,
}

fn default_functions() -> Vec<String> {
    vec!["count".into(), "sum".into(), "avg".into()]
}

/// The noise distribution of a differentially private service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    /// Pure ε-DP.
    #[default]
    Laplace,
    /// (ε, δ)-DP; needs `delta`.
    Gaussian,
}

/// Differential privacy for an aggregate-only service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyRule {
    #[serde(default)]
    pub mechanism: Mechanism,
    /// ε spent by each query, shared by the noised aggregates in it.
    pub epsilon_per_query: f64,
    /// Total ε one agreement may spend.
    pub budget: f64,
    /// δ of the Gaussian mechanism.
    #[serde(default)]
    pub delta: Option<f64>,
    /// Declared `[low, high]` bounds of each column that may be summed or averaged;
    /// values are clamped to them, which is what bounds the sensitivity.
    #[serde(default)]
    pub bounds: BTreeMap<String, [f64; 2]>,
}

/// ε in integer nano-units, so that spending is exact: ten queries of 0.1 spend 1.0.
pub fn nano_epsilon(epsilon: f64) -> u64 {
    (epsilon * 1e9).round().max(0.0) as u64
}

impl PrivacyRule {
    pub fn cost_nano(&self) -> u64 {
        nano_epsilon(self.epsilon_per_query)
    }

    pub fn budget_nano(&self) -> u64 {
        nano_epsilon(self.budget)
    }
}

/// The constraints of one query service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConstraints {
    /// If set, the only columns that may be referenced (join-only columns aside).
    #[serde(default)]
    pub allowed_columns: Option<Vec<String>>,
    /// Columns that may not be referenced anywhere in a query.
    #[serde(default)]
    pub blocked_columns: Vec<String>,
    /// Columns that may only be equated with another asset's column in `JOIN … ON`.
    #[serde(default)]
    pub join_only_columns: Vec<String>,
    #[serde(default)]
    pub masked_columns: BTreeMap<String, Mask>,
    /// A SQL predicate rows must satisfy; `$consumer` is the caller's address (lower-case
    /// hex with `0x`).
    #[serde(default)]
    pub row_filter: Option<String>,
    #[serde(default)]
    pub aggregate: Option<AggregateRule>,
    /// Most rows one answer may have.
    #[serde(default)]
    pub row_limit: Option<u64>,
    /// Most bytes (Arrow, uncompressed) one answer may have.
    #[serde(default)]
    pub byte_limit: Option<u64>,
    /// If not empty, only these statements may run; literals and `?` in a template match
    /// any literal or parameter.
    #[serde(default)]
    pub templates: Vec<String>,
    #[serde(default)]
    pub privacy: Option<PrivacyRule>,
}

impl QueryConstraints {
    /// Parses constraints from TOML (what a provider writes) or JSON (what is stored).
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim_start();
        if trimmed.starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("constraints JSON: {e}"))
        } else {
            toml::from_str(text).map_err(|e| format!("constraints TOML: {e}"))
        }
    }

    /// The canonical stored form.
    pub fn to_json(&self) -> Result<String, String> {
        serde_json::to_string(self).map_err(|e| e.to_string())
    }

    /// Whether these constraints restrict anything at all.
    pub fn is_unconstrained(&self) -> bool {
        *self == QueryConstraints::default()
    }

    /// Checks the constraints against the asset's column names.
    pub fn validate(&self, columns: &[String]) -> Result<(), String> {
        let known: BTreeSet<&str> = columns.iter().map(String::as_str).collect();
        let check = |what: &str, names: &mut dyn Iterator<Item = &String>| {
            for n in names {
                if !known.contains(n.as_str()) {
                    return Err(format!(
                        "{what} names column `{n}`, which the asset does not have"
                    ));
                }
            }
            Ok(())
        };
        if let Some(allowed) = &self.allowed_columns {
            check(rule::ALLOWED_COLUMNS, &mut allowed.iter())?;
        }
        check(rule::BLOCKED_COLUMNS, &mut self.blocked_columns.iter())?;
        check(rule::JOIN_ONLY_COLUMNS, &mut self.join_only_columns.iter())?;
        check(rule::MASKED_COLUMNS, &mut self.masked_columns.keys())?;
        for c in &self.join_only_columns {
            if self.blocked_columns.contains(c) {
                return Err(format!("column `{c}` is both blocked and join-only"));
            }
        }
        if let Some(allowed) = &self.allowed_columns {
            for c in allowed {
                if self.blocked_columns.contains(c) {
                    return Err(format!("column `{c}` is both allowed and blocked"));
                }
            }
        }
        if let Some(f) = &self.row_filter
            && f.trim().is_empty()
        {
            return Err("the row filter is empty".into());
        }
        if self.row_limit == Some(0) || self.byte_limit == Some(0) {
            return Err("row and byte limits must be at least 1".into());
        }
        if let Some(agg) = &self.aggregate {
            check(rule::DIMENSIONS, &mut agg.dimensions.iter())?;
            check("aggregate_only.entity", &mut std::iter::once(&agg.entity))?;
            if agg.min_entities < 1 {
                return Err("aggregate_only.min_entities must be at least 1".into());
            }
            if agg.functions.is_empty() {
                return Err("aggregate_only.functions is empty".into());
            }
            for f in &agg.functions {
                if ROW_REVEALING.contains(&f.to_ascii_lowercase().as_str()) {
                    return Err(format!(
                        "`{f}` returns individual rows' values and cannot be allowed in aggregate-only mode"
                    ));
                }
            }
            for d in &agg.dimensions {
                if self.join_only_columns.contains(d) || self.blocked_columns.contains(d) {
                    return Err(format!(
                        "dimension `{d}` is also blocked or join-only; pick one"
                    ));
                }
            }
        }
        if let Some(p) = &self.privacy {
            let Some(agg) = &self.aggregate else {
                return Err("privacy needs aggregate-only mode ([aggregate])".into());
            };
            if !(p.epsilon_per_query.is_finite() && p.epsilon_per_query > 0.0) {
                return Err("privacy.epsilon_per_query must be a positive number".into());
            }
            if !(p.budget.is_finite() && p.budget >= p.epsilon_per_query) {
                return Err("privacy.budget must be at least epsilon_per_query".into());
            }
            if p.cost_nano() == 0 {
                return Err("privacy.epsilon_per_query is below 1e-9".into());
            }
            if p.mechanism == Mechanism::Gaussian
                && !matches!(p.delta, Some(d) if d > 0.0 && d < 1.0)
            {
                return Err("the Gaussian mechanism needs 0 < privacy.delta < 1".into());
            }
            check("privacy.bounds", &mut p.bounds.keys())?;
            for (c, [lo, hi]) in &p.bounds {
                if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                    return Err(format!(
                        "privacy.bounds for `{c}` must be finite, low < high"
                    ));
                }
            }
            for f in &agg.functions {
                if !PRIVATE_FUNCTIONS.contains(&f.to_ascii_lowercase().as_str()) {
                    return Err(format!(
                        "`{f}` cannot be noised; a private service allows only count, sum and avg"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The rules these constraints put in force, for the audit log.
    pub fn rules(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.allowed_columns.is_some() {
            out.push(rule::ALLOWED_COLUMNS.to_string());
        }
        if !self.blocked_columns.is_empty() {
            out.push(rule::BLOCKED_COLUMNS.to_string());
        }
        if !self.join_only_columns.is_empty() {
            out.push(rule::JOIN_ONLY_COLUMNS.to_string());
        }
        if !self.masked_columns.is_empty() {
            out.push(rule::MASKED_COLUMNS.to_string());
        }
        if self.row_filter.is_some() {
            out.push(rule::ROW_FILTER.to_string());
        }
        if let Some(a) = &self.aggregate {
            out.push(format!(
                "{}(min_entities={})",
                rule::AGGREGATE_ONLY,
                a.min_entities
            ));
        }
        if let Some(n) = self.row_limit {
            out.push(format!("{}({n})", rule::ROW_LIMIT));
        }
        if let Some(n) = self.byte_limit {
            out.push(format!("{}({n})", rule::BYTE_LIMIT));
        }
        if !self.templates.is_empty() {
            out.push(rule::TEMPLATES.to_string());
        }
        if let Some(p) = &self.privacy {
            out.push(format!(
                "{}(epsilon={})",
                rule::PRIVACY,
                p.epsilon_per_query
            ));
        }
        out
    }

    /// Lifts `columns` out of the blocked and not-allowed sets: what a provider rule
    /// granting extra columns to a partner group does.
    pub fn unblock(&mut self, columns: &[String]) {
        self.blocked_columns.retain(|c| !columns.contains(c));
        if let Some(allowed) = &mut self.allowed_columns {
            for c in columns {
                if !allowed.contains(c) {
                    allowed.push(c.clone());
                }
            }
        }
    }

    /// Columns a consumer cannot use freely by default: candidates for a provider rule
    /// that grants extra columns.
    pub fn restricted_columns(&self, columns: &[String]) -> Vec<String> {
        columns
            .iter()
            .filter(|c| {
                self.blocked_columns.contains(c)
                    || self
                        .allowed_columns
                        .as_ref()
                        .is_some_and(|a| !a.contains(c) && !self.join_only_columns.contains(c))
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<String> {
        ["id", "name", "region", "income", "email"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn toml_constraints_parse_and_validate() {
        let c = QueryConstraints::parse(
            r#"
            blocked_columns = ["name"]
            join_only_columns = ["email"]
            row_limit = 100
            [masked_columns]
            id = "hash"
            [aggregate]
            dimensions = ["region"]
            entity = "id"
            min_entities = 5
            [privacy]
            epsilon_per_query = 0.1
            budget = 1.0
            bounds = { income = [0.0, 100000.0] }
            "#,
        )
        .expect("parse");
        c.validate(&cols()).expect("valid");
        assert_eq!(c.privacy.as_ref().map(|p| p.cost_nano()), Some(100_000_000));
        let json = c.to_json().expect("json");
        assert_eq!(QueryConstraints::parse(&json).expect("json parse"), c);
        assert!(c.rules().iter().any(|r| r.starts_with("aggregate_only")));
    }

    #[test]
    fn mistakes_are_refused_at_validation() {
        let bad = [
            r#"blocked_columns = ["nope"]"#,
            r#"blocked_columns = ["email"]
               join_only_columns = ["email"]"#,
            r#"[aggregate]
               entity = "id"
               min_entities = 3
               functions = ["array_agg"]"#,
            r#"[aggregate]
               entity = "id"
               min_entities = 3
               functions = ["max"]
               [privacy]
               epsilon_per_query = 0.1
               budget = 1.0"#,
            r#"[aggregate]
               entity = "id"
               min_entities = 3
               [privacy]
               mechanism = "gaussian"
               epsilon_per_query = 0.1
               budget = 1.0"#,
            r#"[privacy]
               epsilon_per_query = 0.1
               budget = 1.0"#,
            r#"unknown_key = 1"#,
        ];
        for text in bad {
            let parsed = QueryConstraints::parse(text);
            assert!(
                parsed.and_then(|c| c.validate(&cols())).is_err(),
                "{text} should be refused"
            );
        }
    }

    #[test]
    fn exact_spending_in_nano_epsilon() {
        let per = nano_epsilon(0.1);
        assert_eq!(per * 10, nano_epsilon(1.0));
    }

    #[test]
    fn unblocking_lifts_blocked_and_not_allowed_columns() {
        let mut c = QueryConstraints {
            allowed_columns: Some(vec!["region".into()]),
            blocked_columns: vec!["name".into()],
            ..Default::default()
        };
        let restricted = c.restricted_columns(&cols());
        assert!(restricted.contains(&"name".to_string()));
        assert!(restricted.contains(&"income".to_string()));
        assert!(!restricted.contains(&"region".to_string()));
        c.unblock(&["name".into(), "income".into()]);
        assert!(c.blocked_columns.is_empty());
        assert!(
            c.allowed_columns
                .as_ref()
                .is_some_and(|a| a.contains(&"income".to_string()))
        );
    }
}
