//! Query policy: the provider's constraints, enforced on the logical plan.
//!
//! Every entry point that plans SQL (statements, prepared statements with any bound
//! values, `GetSchema`, `GetFlightInfo`) runs [`enforce`] on the resolved plan, before
//! optimisation: the **check**, so a refusal arrives at planning time with the rule
//! that fired, then the **rewrite** (row filters, masks, group thresholds, noise),
//! whose schema is the one the client is given. Execution enforces again on the plan
//! with its parameters bound, and only that rewritten plan reaches the optimiser.
//! Limits on rows and bytes are enforced on the stream.
//!
//! When several assets meet in one query, each table keeps its own constraints, and the
//! query-wide ones combine to the most restrictive: the smallest row and byte limits,
//! and every table's templates must admit the statement.

mod lineage;
mod rewrite;
mod templates;
mod udf;

use std::sync::Arc;

use alloy::primitives::Address;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use insitu_ledger::{AgreementId, Did};
use insitu_policy::QueryConstraints;
use insitu_policy::constraints::rule;

use crate::error::{FlightError, Result};

pub(crate) use lineage::Findings;

/// One granted table and the constraints in force for this consumer (the service's,
/// after the provider's rules granted any extra columns).
#[derive(Debug, Clone)]
pub(crate) struct TablePolicy {
    pub name: String,
    pub did: Did,
    pub agreement: AgreementId,
    /// The table's columns, in schema order.
    pub columns: Vec<String>,
    pub schema: arrow::datatypes::SchemaRef,
    pub constraints: Arc<QueryConstraints>,
}

/// ε one query spends from one agreement's budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Charge {
    pub agreement: AgreementId,
    pub table: String,
    /// nano-ε
    pub cost: u64,
    /// nano-ε
    pub budget: u64,
}

/// The outcome of enforcement for one execution.
#[derive(Debug)]
pub(crate) struct Enforced {
    pub plan: LogicalPlan,
    /// The rules in force, for the audit log.
    pub rules: Vec<String>,
    pub row_limit: Option<u64>,
    pub byte_limit: Option<u64>,
    pub charges: Vec<Charge>,
}

/// Checks constraints against the schema of the asset they govern, the way the rewriter
/// will use them: names, mask types, and a row filter that plans. Providers call this
/// when they set constraints, so a mistake fails then and not at query time.
pub fn validate_constraints(
    constraints: &QueryConstraints,
    schema: &arrow::datatypes::Schema,
) -> Result<()> {
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    constraints
        .validate(&columns)
        .map_err(FlightError::InvalidRequest)?;
    for (column, mask) in &constraints.masked_columns {
        if *mask == insitu_policy::Mask::Hash
            && let Ok(field) = schema.field_with_name(column)
            && !udf::hashable(field.data_type())
        {
            return Err(FlightError::InvalidRequest(format!(
                "column `{column}` is {}; hash masks support 32/64-bit integers and strings, so redact it instead",
                field.data_type()
            )));
        }
    }
    if let Some(filter) = &constraints.row_filter {
        let df_schema = datafusion::common::DFSchema::try_from(schema.clone())
            .map_err(|e| FlightError::Internal(e.to_string()))?;
        let state = datafusion::execution::session_state::SessionStateBuilder::new()
            .with_default_features()
            .build();
        state.create_logical_expr(filter, &df_schema).map_err(|e| {
            FlightError::InvalidRequest(format!(
                "the row filter does not plan against the asset's columns: {}",
                super::guard::root_message(&e)
            ))
        })?;
    }
    Ok(())
}

/// The granted tables a plan reads.
pub(crate) fn tables_read(plan: &LogicalPlan) -> std::collections::HashSet<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut read = std::collections::HashSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            read.insert(scan.table_name.table().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    read
}

/// Refuses `sql` unless every table it reads that has templates admits it.
pub(crate) fn check_templates(sql: &str, plan: &LogicalPlan, tables: &[TablePolicy]) -> Result<()> {
    let read = tables_read(plan);
    for t in tables.iter().filter(|t| read.contains(&t.name)) {
        let templates = &t.constraints.templates;
        if !templates.is_empty() && !templates::matches(sql, templates)? {
            return Err(FlightError::Refused(format!(
                "rule `{}` of table `{}`: this statement is not one of the provider's approved queries",
                rule::TEMPLATES,
                t.name
            )));
        }
    }
    Ok(())
}

/// The rules in force over `tables`, as the audit log records them (`table:rule`).
pub(crate) fn rules_in_force(tables: &[TablePolicy]) -> Vec<String> {
    tables
        .iter()
        .flat_map(|t| {
            t.constraints
                .rules()
                .into_iter()
                .map(move |r| format!("{}:{r}", t.name))
        })
        .collect()
}

/// Checks a resolved plan against every table's constraints.
pub(crate) fn check(plan: &LogicalPlan, tables: &[TablePolicy]) -> Result<Findings> {
    let mut checker = lineage::Checker::new(tables);
    checker.check(plan)?;
    Ok(checker.findings)
}

/// Checks, then rewrites a bound plan for execution.
pub(crate) fn enforce(
    plan: LogicalPlan,
    tables: &[TablePolicy],
    state: &SessionState,
    consumer: Address,
    mask_key: &[u8; 32],
) -> Result<Enforced> {
    let findings = check(&plan, tables)?;
    for t in tables {
        for (column, mask) in &t.constraints.masked_columns {
            if *mask == insitu_policy::Mask::Hash
                && let Ok(field) = t.schema.field_with_name(column)
                && !udf::hashable(field.data_type())
            {
                return Err(FlightError::Refused(format!(
                    "rule `{}` of table `{}`: column `{column}` ({}) cannot be hash-masked; the provider must redact it",
                    rule::MASKED_COLUMNS,
                    t.name,
                    field.data_type()
                )));
            }
        }
    }
    let charges: Vec<Charge> = findings
        .private_tables
        .iter()
        .filter_map(|i| {
            let t = &tables[*i];
            t.constraints.privacy.as_ref().map(|p| Charge {
                agreement: t.agreement,
                table: t.name.clone(),
                cost: p.cost_nano(),
                budget: p.budget_nano(),
            })
        })
        .collect();
    let rules = rules_in_force(tables);
    let row_limit = tables.iter().filter_map(|t| t.constraints.row_limit).min();
    let byte_limit = tables.iter().filter_map(|t| t.constraints.byte_limit).min();
    let mut plan =
        rewrite::Rewriter::new(tables, state, consumer, mask_key, findings).rewrite(plan)?;
    if let Some(n) = row_limit {
        // One row more than allowed, so the stream can tell "exactly at the limit" from
        // "over it" without the engine producing the rest.
        let fetch = usize::try_from(n.saturating_add(1)).unwrap_or(usize::MAX);
        plan = LogicalPlanBuilder::from(plan)
            .limit(0, Some(fetch))
            .and_then(|b| b.build())
            .map_err(|e| FlightError::Internal(e.to_string()))?;
    }
    Ok(Enforced {
        plan,
        rules,
        row_limit,
        byte_limit,
        charges,
    })
}

#[cfg(test)]
mod tests;

/// Query constraints for plans from any DataFusion session: what the provider's Flight
/// SQL service enforces, for a data platform that plans SQL in its own engine or
/// gateway. Check a resolved plan (`create_logical_plan`), then rewrite it before
/// optimising and executing.
#[derive(Debug, Clone)]
pub struct ConstrainedPlanner {
    tables: Vec<TablePolicy>,
    consumer: Address,
    mask_key: [u8; 32],
}

/// Builder for [`ConstrainedPlanner`].
#[derive(Debug, Clone, Default)]
pub struct ConstrainedPlannerBuilder {
    tables: Vec<TablePolicy>,
    consumer: Address,
    mask_key: Option<[u8; 32]>,
}

impl ConstrainedPlannerBuilder {
    /// A table of the session (by its unqualified name) and its constraints. Tables
    /// not declared are refused.
    pub fn table(
        mut self,
        name: impl Into<String>,
        did: Did,
        agreement: AgreementId,
        schema: arrow::datatypes::SchemaRef,
        constraints: QueryConstraints,
    ) -> Self {
        self.tables.push(TablePolicy {
            name: name.into(),
            did,
            agreement,
            columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
            schema,
            constraints: Arc::new(constraints),
        });
        self
    }

    /// The consumer the plans run for (`$consumer` in row filters).
    pub fn consumer(mut self, consumer: Address) -> Self {
        self.consumer = consumer;
        self
    }

    /// The key of hash masks; random if unset.
    pub fn mask_key(mut self, key: [u8; 32]) -> Self {
        self.mask_key = Some(key);
        self
    }

    pub fn build(self) -> ConstrainedPlanner {
        ConstrainedPlanner {
            tables: self.tables,
            consumer: self.consumer,
            mask_key: self.mask_key.unwrap_or_else(rand::random),
        }
    }
}

impl ConstrainedPlanner {
    pub fn builder() -> ConstrainedPlannerBuilder {
        ConstrainedPlannerBuilder::default()
    }

    /// Refuses a plan that breaks a constraint, naming the rule.
    pub fn check(&self, sql: &str, plan: &LogicalPlan) -> Result<()> {
        check_templates(sql, plan, &self.tables)?;
        check(plan, &self.tables).map(|_| ())
    }

    /// Checks, then rewrites the plan for execution (row filters, masks, thresholds,
    /// noise, the row limit). Byte limits and privacy budgets are the caller's to keep.
    pub fn rewrite(&self, plan: LogicalPlan, state: &SessionState) -> Result<LogicalPlan> {
        enforce(plan, &self.tables, state, self.consumer, &self.mask_key).map(|e| e.plan)
    }
}
