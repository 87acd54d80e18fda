//! The rewrite half of enforcement, applied to a plan the checker accepted.
//!
//! - **At each protected scan:** the row filter, then masks, then (for aggregate-only
//!   tables) a hidden copy of the entity column, `__insitu_e<n>`. Everything above the
//!   scan sees only filtered, masked rows, whatever the query says.
//! - **On the way up:** projections carry the hidden columns along, so an alias, CTE or
//!   subquery between the scan and the aggregate cannot drop them.
//! - **At each aggregate over protected rows:** one `count(DISTINCT __insitu_e<n>)` per
//!   table, a filter that drops groups below the table's `min_entities` (before any
//!   `HAVING` can look at them), and a projection that restores the original output,
//!   with noise on private aggregates.
//!
//! Every rewrite keeps each node's output names and types, so the schema a client was
//! given when the statement was planned is the schema it receives.

use std::collections::HashMap;
use std::sync::Arc;

use alloy::primitives::Address;
use arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::execution::session_state::SessionState;
use datafusion::functions_aggregate::expr_fn::{count, count_distinct, sum};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Aggregate, Cast, Expr, Filter, LogicalPlan, Projection, TableScan, when,
};
use hmac::{Hmac, Mac};
use insitu_policy::constraints::rule;
use insitu_policy::{Mask, Mechanism};
use sha2::Sha256;

use super::TablePolicy;
use super::lineage::aggregate_of;
use super::udf::{MaskHash, Noise};
use crate::error::{FlightError, Result};

const HIDDEN: &str = "__insitu_e";
const ENTITIES: &str = "__insitu_n";

fn lit_f64(v: f64) -> Expr {
    Expr::Literal(ScalarValue::Float64(Some(v)), None)
}

fn cast(e: Expr, to: DataType) -> Expr {
    Expr::Cast(Cast::new(Box::new(e), to))
}

fn df(e: datafusion::error::DataFusionError) -> FlightError {
    FlightError::Internal(format!("rewriting the plan: {e}"))
}

fn clamp(e: Expr, lo: f64, hi: f64) -> Result<Expr> {
    when(e.clone().lt(lit_f64(lo)), lit_f64(lo))
        .when(e.clone().gt(lit_f64(hi)), lit_f64(hi))
        .otherwise(e)
        .map_err(df)
}

/// How one original aggregate output is rebuilt above the rewritten aggregate.
enum Output {
    Plain(usize),
    Noised {
        at: usize,
        sensitivity: f64,
        round: bool,
    },
    Average {
        sum: usize,
        count: usize,
        lo: f64,
        hi: f64,
    },
}

pub(crate) struct Rewriter<'a> {
    tables: &'a [TablePolicy],
    by_name: HashMap<&'a str, usize>,
    state: &'a SessionState,
    consumer: Address,
    mask_key: &'a [u8; 32],
    /// ε (and δ) of one noised release: the query's ε split over all its releases.
    epsilon_per_release: f64,
    delta_per_release: f64,
    hidden: HashMap<String, usize>,
    /// From the checker: the bounded column behind each private aggregate argument.
    bounded_args: HashMap<String, String>,
}

impl<'a> Rewriter<'a> {
    pub fn new(
        tables: &'a [TablePolicy],
        state: &'a SessionState,
        consumer: Address,
        mask_key: &'a [u8; 32],
        findings: super::lineage::Findings,
    ) -> Self {
        let releases = findings.releases.max(1) as f64;
        let private = tables.iter().find_map(|t| t.constraints.privacy.as_ref());
        Rewriter {
            tables,
            by_name: tables
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.as_str(), i))
                .collect(),
            state,
            consumer,
            mask_key,
            epsilon_per_release: private.map_or(1.0, |p| p.epsilon_per_query / releases),
            delta_per_release: private.and_then(|p| p.delta).map_or(0.0, |d| d / releases),
            hidden: HashMap::new(),
            bounded_args: findings.bounded_args,
        }
    }

    pub fn rewrite(&mut self, plan: LogicalPlan) -> Result<LogicalPlan> {
        let mut failure: Option<FlightError> = None;
        let out = plan
            .transform_up_with_subqueries(|node| match self.node(node) {
                Ok(t) => Ok(t),
                Err(e) => {
                    let msg = e.to_string();
                    failure = Some(e);
                    Err(datafusion::error::DataFusionError::Plan(msg))
                }
            })
            .map_err(|e| failure.take().unwrap_or_else(|| df(e)))?;
        Ok(out.data)
    }

    fn node(&mut self, node: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
        match node {
            LogicalPlan::TableScan(scan) => self.source(scan),
            LogicalPlan::Projection(p) => {
                let hidden = self.hidden_in(p.input.schema());
                let mut expr = p.expr;
                expr.extend(hidden.into_iter().map(|(c, _)| Expr::Column(c)));
                Ok(Transformed::yes(LogicalPlan::Projection(
                    Projection::try_new(expr, p.input).map_err(df)?,
                )))
            }
            LogicalPlan::Aggregate(a) => self.aggregate(a),
            other => Ok(Transformed::yes(other.recompute_schema().map_err(df)?)),
        }
    }

    /// The hidden entity columns in `schema`, with their tables.
    fn hidden_in(&self, schema: &DFSchema) -> Vec<(Column, usize)> {
        schema
            .iter()
            .filter_map(|(q, f)| {
                self.hidden
                    .get(f.name())
                    .map(|t| (Column::from((q, f)), *t))
            })
            .collect()
    }

    /// The mask key of one table: the provider's key bound to asset and agreement.
    fn table_key(&self, t: &TablePolicy) -> [u8; 32] {
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(self.mask_key) else {
            return *self.mask_key;
        };
        mac.update(t.did.0.as_slice());
        mac.update(t.agreement.0.as_slice());
        mac.finalize().into_bytes().into()
    }

    fn row_filter(&self, sql: &str, schema: &DFSchema, table: &TablePolicy) -> Result<Expr> {
        let invalid = |detail: String| {
            tracing::error!(table = %table.name, %detail, "invalid row filter");
            FlightError::Refused(format!(
                "rule `{}` of table `{}` cannot be applied, so the query is refused",
                rule::ROW_FILTER,
                table.name
            ))
        };
        let expr = self
            .state
            .create_logical_expr(sql, schema)
            .map_err(|e| invalid(e.to_string()))?;
        let consumer = format!("{:#x}", self.consumer);
        let mut bad: Option<String> = None;
        let expr = expr
            .transform(|e| match e {
                Expr::Placeholder(p) if p.id == "$consumer" => Ok(Transformed::yes(Expr::Literal(
                    ScalarValue::Utf8(Some(consumer.clone())),
                    None,
                ))),
                Expr::Placeholder(p) => {
                    bad = Some(p.id.clone());
                    Ok(Transformed::no(Expr::Placeholder(p)))
                }
                other => Ok(Transformed::no(other)),
            })
            .map_err(|e| invalid(e.to_string()))?
            .data;
        if let Some(p) = bad {
            return Err(invalid(format!("unknown placeholder {p}")));
        }
        Ok(expr)
    }

    fn source(&mut self, scan: TableScan) -> Result<Transformed<LogicalPlan>> {
        let Some(&t) = self.by_name.get(scan.table_name.table()) else {
            return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
        };
        let table = &self.tables[t];
        let k = &table.constraints;
        if k.row_filter.is_none() && k.masked_columns.is_empty() && k.aggregate.is_none() {
            return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
        }
        let schema = scan.projected_schema.clone();
        let mut plan = LogicalPlan::TableScan(scan);
        if let Some(f) = &k.row_filter {
            let predicate = self.row_filter(f, &schema, table)?;
            plan = LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(plan)).map_err(df)?);
        }
        let key = self.table_key(table);
        let mut exprs = Vec::with_capacity(schema.fields().len() + 1);
        for (q, field) in schema.iter() {
            let column = Expr::Column(Column::from((q, field)));
            exprs.push(match k.masked_columns.get(field.name()) {
                Some(Mask::Hash) => {
                    MaskHash::expr(key, column).alias_qualified(q.cloned(), field.name())
                }
                Some(Mask::Redact) => {
                    let null = ScalarValue::try_from(field.data_type()).map_err(df)?;
                    Expr::Literal(null, None).alias_qualified(q.cloned(), field.name())
                }
                None => column,
            });
        }
        if let Some(agg) = &k.aggregate {
            let (q, field) = schema
                .iter()
                .find(|(_, f)| f.name() == &agg.entity)
                .ok_or_else(|| {
                    FlightError::Refused(format!(
                        "rule `{}` of table `{}` names an entity column the table lacks",
                        rule::AGGREGATE_ONLY,
                        table.name
                    ))
                })?;
            let name = format!("{HIDDEN}{}", self.hidden.len());
            exprs.push(Expr::Column(Column::from((q, field))).alias(name.clone()));
            self.hidden.insert(name, t);
        }
        plan = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(plan)).map_err(df)?);
        Ok(Transformed::yes(plan))
    }

    fn noise_scale(&self, mechanism: Mechanism, sensitivity: f64) -> f64 {
        match mechanism {
            Mechanism::Laplace => sensitivity / self.epsilon_per_release,
            Mechanism::Gaussian => {
                sensitivity * (2.0 * (1.25 / self.delta_per_release).ln()).sqrt()
                    / self.epsilon_per_release
            }
        }
    }

    fn aggregate(&mut self, a: Aggregate) -> Result<Transformed<LogicalPlan>> {
        let hidden = self.hidden_in(a.input.schema());
        if hidden.is_empty() {
            return Ok(Transformed::yes(LogicalPlan::Aggregate(
                Aggregate::try_new(a.input, a.group_expr, a.aggr_expr).map_err(df)?,
            )));
        }
        let original = a.schema.clone();
        let group_width = original.fields().len() - a.aggr_expr.len();
        let private = hidden.iter().find_map(|(_, t)| {
            self.tables[*t]
                .constraints
                .privacy
                .as_ref()
                .map(|p| (*t, p))
        });
        let mut aggr = Vec::with_capacity(a.aggr_expr.len() + hidden.len());
        let mut outputs = Vec::with_capacity(a.aggr_expr.len());
        for e in a.aggr_expr {
            let (Some((t, p)), Some(af)) = (private, aggregate_of(&e)) else {
                aggr.push(e);
                outputs.push(Output::Plain(aggr.len() - 1));
                continue;
            };
            let name = af.func.name().to_ascii_lowercase();
            let arg = af.params.args.first().cloned();
            let bounds = |arg: &Expr| -> Result<(f64, f64)> {
                let table = &self.tables[t];
                self.bounded_args
                    .get(&arg.schema_name().to_string())
                    .and_then(|c| p.bounds.get(c))
                    .map(|[lo, hi]| (*lo, *hi))
                    .ok_or_else(|| {
                        FlightError::Refused(format!(
                            "rule `{}` of table `{}`: the summed column needs declared bounds",
                            rule::PRIVACY,
                            table.name
                        ))
                    })
            };
            match (name.as_str(), arg) {
                ("sum", Some(arg)) => {
                    let (lo, hi) = bounds(&arg)?;
                    aggr.push(sum(clamp(cast(arg, DataType::Float64), lo, hi)?));
                    outputs.push(Output::Noised {
                        at: aggr.len() - 1,
                        sensitivity: lo.abs().max(hi.abs()),
                        round: false,
                    });
                }
                ("avg", Some(arg)) => {
                    let (lo, hi) = bounds(&arg)?;
                    aggr.push(sum(clamp(cast(arg.clone(), DataType::Float64), lo, hi)?));
                    aggr.push(count(arg));
                    outputs.push(Output::Average {
                        sum: aggr.len() - 2,
                        count: aggr.len() - 1,
                        lo,
                        hi,
                    });
                }
                _ => {
                    aggr.push(e);
                    outputs.push(Output::Noised {
                        at: aggr.len() - 1,
                        sensitivity: 1.0,
                        round: true,
                    });
                }
            }
        }
        let counted = aggr.len();
        for (i, (c, _)) in hidden.iter().enumerate() {
            aggr.push(count_distinct(Expr::Column(c.clone())).alias(format!("{ENTITIES}{i}")));
        }
        let rebuilt = Aggregate::try_new(a.input, a.group_expr, aggr).map_err(df)?;
        let schema = rebuilt.schema.clone();
        let thresholds = hidden.iter().enumerate().map(|(i, (_, t))| {
            let k = self.tables[*t]
                .constraints
                .aggregate
                .as_ref()
                .map_or(1, |r| r.min_entities);
            Expr::Column(Column::from_name(format!("{ENTITIES}{i}"))).gt_eq(Expr::Literal(
                ScalarValue::Int64(Some(i64::try_from(k).unwrap_or(i64::MAX))),
                None,
            ))
        });
        let predicate =
            conjunction(thresholds).ok_or_else(|| FlightError::Internal("no threshold".into()))?;
        let filtered = LogicalPlan::Filter(
            Filter::try_new(predicate, Arc::new(LogicalPlan::Aggregate(rebuilt))).map_err(df)?,
        );
        let column = |i: usize| Expr::Column(Column::from(schema.qualified_field(i)));
        let mut exprs = Vec::with_capacity(original.fields().len());
        for i in 0..group_width {
            exprs.push(column(i));
        }
        let mechanism = private.map_or(Mechanism::Laplace, |(_, p)| p.mechanism);
        for (j, out) in outputs.into_iter().enumerate() {
            let (q, field) = original.qualified_field(group_width + j);
            let ty = field.data_type().clone();
            let e = match out {
                Output::Plain(at) => column(group_width + at),
                Output::Noised {
                    at,
                    sensitivity,
                    round,
                } => cast(
                    Noise::expr(
                        mechanism,
                        column(group_width + at),
                        self.noise_scale(mechanism, sensitivity),
                        round,
                    ),
                    ty,
                ),
                Output::Average { sum, count, lo, hi } => {
                    let s = Noise::expr(
                        mechanism,
                        column(group_width + sum),
                        self.noise_scale(mechanism, lo.abs().max(hi.abs())),
                        false,
                    );
                    let n = Noise::expr(
                        mechanism,
                        column(group_width + count),
                        self.noise_scale(mechanism, 1.0),
                        true,
                    );
                    let n = when(n.clone().lt(lit_f64(1.0)), lit_f64(1.0))
                        .otherwise(n)
                        .map_err(df)?;
                    cast(clamp(s / n, lo, hi)?, ty)
                }
            };
            exprs.push(e.alias_qualified(q.cloned(), field.name()));
        }
        debug_assert_eq!(counted + hidden.len(), schema.fields().len() - group_width);
        let projected = Projection::try_new(exprs, Arc::new(filtered)).map_err(df)?;
        Ok(Transformed::yes(LogicalPlan::Projection(projected)))
    }
}
