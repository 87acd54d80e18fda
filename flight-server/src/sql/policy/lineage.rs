//! The check half of enforcement: column lineage through the whole plan.
//!
//! Every output field of every node carries the set of source columns it was computed
//! from, so an alias, a CTE, a subquery, a cast or a scalar function cannot launder a
//! protected column: whatever a later node calls it, its lineage still names the source.
//! Every use of an expression (projection, filter, join key, group key, sort key,
//! aggregate argument) is checked against the constraints of the tables in its lineage.
//!
//! For aggregate-only tables the checker also tracks which tables' *rows* flow through a
//! node unaggregated. Those rows must meet an `Aggregate` before the output, and on the
//! way they can only be filtered, sorted, grouped and joined on dimension columns. Set
//! operations, `DISTINCT`, window functions and subqueries over them are refused: each
//! would let rows or row-level facts out around the aggregate's threshold.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, JoinType};
use datafusion::logical_expr::expr::{AggregateFunction, Exists, InSubquery, SetComparison};
use datafusion::logical_expr::utils::{grouping_set_to_exprlist, split_conjunction};
use datafusion::logical_expr::{
    Aggregate, BinaryExpr, Distinct, Expr, Join, LogicalPlan, Operator, Subquery,
};
use insitu_policy::constraints::{PRIVATE_FUNCTIONS, ROW_REVEALING, rule};

use super::TablePolicy;
use crate::error::{FlightError, Result};

/// A source column: (table index, column index).
pub(crate) type Col = (usize, usize);
type Lin = BTreeSet<Col>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Select,
    Filter,
    Sort,
    Group,
    JoinKey,
    /// An aggregate's argument; `bare` if it is a column (through casts) and nothing else.
    AggArg {
        bare: bool,
    },
}

struct Info {
    fields: Vec<Lin>,
    /// Aggregate-only tables whose rows flow through unaggregated.
    raw: BTreeSet<usize>,
}

/// What the check found that the rewrite needs.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// Noised values released by aggregates over private tables (an average is two).
    pub releases: usize,
    /// Private tables aggregated by the query.
    pub private_tables: BTreeSet<usize>,
    /// The bounded source column behind each summed or averaged argument, by the
    /// argument's name in the plan.
    pub bounded_args: HashMap<String, String>,
}

pub(crate) struct Checker<'a> {
    tables: &'a [TablePolicy],
    by_name: HashMap<&'a str, usize>,
    outer: Vec<(Arc<DFSchema>, Vec<Lin>)>,
    pub findings: Findings,
}

fn refuse(rule: &str, table: &TablePolicy, detail: String) -> FlightError {
    FlightError::Refused(format!("rule `{rule}` of table `{}`: {detail}", table.name))
}

/// Strips casts: what is left of `CAST(x AS …)` is `x`.
pub(crate) fn uncast(e: &Expr) -> &Expr {
    match e {
        Expr::Cast(c) => uncast(&c.expr),
        Expr::TryCast(c) => uncast(&c.expr),
        Expr::Alias(a) => uncast(&a.expr),
        other => other,
    }
}

fn is_bare(e: &Expr) -> bool {
    matches!(uncast(e), Expr::Column(_))
}

/// The aggregate function inside an aggregate expression (through aliases).
pub(crate) fn aggregate_of(e: &Expr) -> Option<&AggregateFunction> {
    match e {
        Expr::AggregateFunction(af) => Some(af),
        Expr::Alias(a) => aggregate_of(&a.expr),
        _ => None,
    }
}

impl<'a> Checker<'a> {
    pub fn new(tables: &'a [TablePolicy]) -> Self {
        Checker {
            tables,
            by_name: tables
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.as_str(), i))
                .collect(),
            outer: Vec::new(),
            findings: Findings::default(),
        }
    }

    /// Checks a whole query.
    pub fn check(&mut self, plan: &LogicalPlan) -> Result<()> {
        let info = self.node(plan)?;
        if let Some(t) = info.raw.first() {
            let table = &self.tables[*t];
            return Err(refuse(
                rule::AGGREGATE_ONLY,
                table,
                "this table only answers aggregates; group its rows (GROUP BY a dimension) or aggregate them (count, sum, …)".into(),
            ));
        }
        Ok(())
    }

    fn column_name(&self, c: Col) -> &str {
        self.tables[c.0]
            .columns
            .get(c.1)
            .map(String::as_str)
            .unwrap_or("?")
    }

    /// Checks one use of an expression whose lineage is `lin`, over rows in which the
    /// aggregate-only tables `raw` are not yet aggregated.
    fn check_use(&self, lin: &Lin, usage: Use, raw: &BTreeSet<usize>) -> Result<()> {
        for &(t, c) in lin {
            let table = &self.tables[t];
            let name = self.column_name((t, c));
            let k = &table.constraints;
            if k.blocked_columns.iter().any(|b| b == name) {
                return Err(refuse(
                    rule::BLOCKED_COLUMNS,
                    table,
                    format!("column `{name}` is blocked and cannot be used anywhere in a query"),
                ));
            }
            let join_only = k.join_only_columns.iter().any(|j| j == name);
            if let Some(allowed) = &k.allowed_columns
                && !join_only
                && !allowed.iter().any(|a| a == name)
            {
                return Err(refuse(
                    rule::ALLOWED_COLUMNS,
                    table,
                    format!(
                        "column `{name}` is not among the allowed columns ({})",
                        allowed.join(", ")
                    ),
                ));
            }
            if join_only && usage != Use::JoinKey {
                return Err(refuse(
                    rule::JOIN_ONLY_COLUMNS,
                    table,
                    format!(
                        "column `{name}` may only be equated with another table's column in JOIN … ON, never selected, filtered, grouped or computed on"
                    ),
                ));
            }
            let Some(agg) = &k.aggregate else { continue };
            if !raw.contains(&t) {
                continue;
            }
            let dimension = agg.dimensions.iter().any(|d| d == name);
            match usage {
                Use::Filter | Use::Sort | Use::Group | Use::JoinKey if !dimension && !join_only => {
                    let dims = if agg.dimensions.is_empty() {
                        "none".to_string()
                    } else {
                        agg.dimensions.join(", ")
                    };
                    return Err(refuse(
                        rule::DIMENSIONS,
                        table,
                        format!(
                            "column `{name}` is not a dimension, so rows cannot be grouped, filtered, sorted or joined on it (dimensions: {dims})"
                        ),
                    ));
                }
                Use::AggArg { bare: false } if dimension || name == agg.entity => {
                    return Err(refuse(
                        rule::ARGUMENTS,
                        table,
                        format!(
                            "`{name}` can be grouped or filtered on but not computed on inside an aggregate (a condition inside an aggregate could single out one entity)"
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn resolve(&self, schema: &DFSchema, fields: &[Lin], col: &Column) -> Result<Lin> {
        match schema.maybe_index_of_column(col) {
            Some(i) => Ok(fields.get(i).cloned().unwrap_or_default()),
            None => Err(FlightError::Refused(format!(
                "column `{col}` could not be traced to its source, so it is refused"
            ))),
        }
    }

    fn resolve_outer(&self, col: &Column) -> Result<Lin> {
        for (schema, fields) in self.outer.iter().rev() {
            if let Some(i) = schema.maybe_index_of_column(col) {
                return Ok(fields.get(i).cloned().unwrap_or_default());
            }
        }
        Err(FlightError::Refused(format!(
            "outer column `{col}` could not be traced to its source, so it is refused"
        )))
    }

    /// The lineage of `e` evaluated over (`schema`, `fields`), checked for `usage`.
    fn expr(
        &mut self,
        e: &Expr,
        schema: &Arc<DFSchema>,
        fields: &[Lin],
        usage: Use,
        raw: &BTreeSet<usize>,
    ) -> Result<Lin> {
        let mut columns: Vec<Column> = Vec::new();
        let mut outer: Vec<Column> = Vec::new();
        let mut subqueries: Vec<Subquery> = Vec::new();
        let _ = e.apply(|node| {
            match node {
                Expr::Column(c) => columns.push(c.clone()),
                Expr::OuterReferenceColumn(_, c) => outer.push(c.clone()),
                Expr::ScalarSubquery(sq)
                | Expr::Exists(Exists { subquery: sq, .. })
                | Expr::InSubquery(InSubquery { subquery: sq, .. })
                | Expr::SetComparison(SetComparison { subquery: sq, .. }) => {
                    subqueries.push(sq.clone())
                }
                _ => {}
            }
            Ok(TreeNodeRecursion::Continue)
        });
        let mut lin = Lin::new();
        for c in &columns {
            lin.extend(self.resolve(schema, fields, c)?);
        }
        for c in &outer {
            lin.extend(self.resolve_outer(c)?);
        }
        for sq in &subqueries {
            self.outer.push((schema.clone(), fields.to_vec()));
            let info = self.node(&sq.subquery);
            self.outer.pop();
            let info = info?;
            if let Some(t) = info.raw.first() {
                return Err(refuse(
                    rule::AGGREGATE_ONLY,
                    &self.tables[*t],
                    "a subquery may read this table only through an aggregate".into(),
                ));
            }
            for f in info.fields {
                lin.extend(f);
            }
        }
        self.check_use(&lin, usage, raw)?;
        Ok(lin)
    }

    fn passthrough(&mut self, input: &LogicalPlan) -> Result<Info> {
        self.node(input)
    }

    fn refuse_raw(&self, raw: &BTreeSet<usize>, what: &str) -> Result<()> {
        match raw.first() {
            Some(t) => Err(refuse(
                rule::AGGREGATE_ONLY,
                &self.tables[*t],
                format!("{what} over this table's rows is not allowed; aggregate them first"),
            )),
            None => Ok(()),
        }
    }

    fn node(&mut self, plan: &LogicalPlan) -> Result<Info> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let Some(&t) = self.by_name.get(scan.table_name.table()) else {
                    return Err(FlightError::Refused(format!(
                        "table '{}' is not one of your agreements' tables",
                        scan.table_name
                    )));
                };
                let width = scan.source.schema().fields().len();
                let fields = match &scan.projection {
                    Some(p) => p.iter().map(|i| Lin::from([(t, *i)])).collect(),
                    None => (0..width).map(|i| Lin::from([(t, i)])).collect(),
                };
                let mut raw = BTreeSet::new();
                if self.tables[t].constraints.aggregate.is_some() {
                    raw.insert(t);
                }
                Ok(Info { fields, raw })
            }
            LogicalPlan::Projection(p) => {
                let input = self.node(&p.input)?;
                let schema = p.input.schema().clone();
                let mut fields = Vec::with_capacity(p.expr.len());
                for e in &p.expr {
                    fields.push(self.expr(e, &schema, &input.fields, Use::Select, &input.raw)?);
                }
                Ok(Info {
                    fields,
                    raw: input.raw,
                })
            }
            LogicalPlan::Filter(f) => {
                let input = self.node(&f.input)?;
                let schema = f.input.schema().clone();
                self.expr(
                    &f.predicate,
                    &schema,
                    &input.fields,
                    Use::Filter,
                    &input.raw,
                )?;
                Ok(input)
            }
            LogicalPlan::Sort(s) => {
                let input = self.node(&s.input)?;
                let schema = s.input.schema().clone();
                for se in &s.expr {
                    self.expr(&se.expr, &schema, &input.fields, Use::Sort, &input.raw)?;
                }
                Ok(input)
            }
            LogicalPlan::Limit(l) => self.passthrough(&l.input),
            LogicalPlan::SubqueryAlias(a) => self.passthrough(&a.input),
            LogicalPlan::Repartition(r) => self.passthrough(&r.input),
            LogicalPlan::Subquery(s) => self.passthrough(&s.subquery),
            LogicalPlan::Window(w) => {
                let input = self.node(&w.input)?;
                self.refuse_raw(&input.raw, "a window function")?;
                let schema = w.input.schema().clone();
                let mut fields = input.fields.clone();
                for e in &w.window_expr {
                    fields.push(self.expr(e, &schema, &input.fields, Use::Select, &input.raw)?);
                }
                Ok(Info {
                    fields,
                    raw: input.raw,
                })
            }
            LogicalPlan::Aggregate(a) => self.aggregate(a),
            LogicalPlan::Join(j) => self.join(j),
            LogicalPlan::Union(u) => {
                let mut fields: Vec<Lin> = vec![Lin::new(); u.schema.fields().len()];
                for input in &u.inputs {
                    let info = self.node(input)?;
                    self.refuse_raw(&info.raw, "UNION, INTERSECT or EXCEPT")?;
                    for (acc, f) in fields.iter_mut().zip(info.fields) {
                        acc.extend(f);
                    }
                }
                Ok(Info {
                    fields,
                    raw: BTreeSet::new(),
                })
            }
            LogicalPlan::Distinct(Distinct::All(input)) => {
                let info = self.node(input)?;
                self.refuse_raw(
                    &info.raw,
                    "SELECT DISTINCT (use GROUP BY, which is thresholded)",
                )?;
                Ok(info)
            }
            LogicalPlan::Distinct(Distinct::On(on)) => {
                let input = self.node(&on.input)?;
                self.refuse_raw(&input.raw, "DISTINCT ON")?;
                let schema = on.input.schema().clone();
                for e in &on.on_expr {
                    self.expr(e, &schema, &input.fields, Use::Select, &input.raw)?;
                }
                for se in on.sort_expr.iter().flatten() {
                    self.expr(&se.expr, &schema, &input.fields, Use::Select, &input.raw)?;
                }
                let mut fields = Vec::with_capacity(on.select_expr.len());
                for e in &on.select_expr {
                    fields.push(self.expr(e, &schema, &input.fields, Use::Select, &input.raw)?);
                }
                Ok(Info {
                    fields,
                    raw: input.raw,
                })
            }
            LogicalPlan::Values(v) => {
                let empty = Arc::new(DFSchema::empty());
                let mut fields: Vec<Lin> = vec![Lin::new(); v.schema.fields().len()];
                let none = BTreeSet::new();
                for row in &v.values {
                    for (acc, e) in fields.iter_mut().zip(row) {
                        acc.extend(self.expr(e, &empty, &[], Use::Select, &none)?);
                    }
                }
                Ok(Info {
                    fields,
                    raw: BTreeSet::new(),
                })
            }
            LogicalPlan::EmptyRelation(e) => Ok(Info {
                fields: vec![Lin::new(); e.schema.fields().len()],
                raw: BTreeSet::new(),
            }),
            LogicalPlan::Unnest(u) => {
                let input = self.node(&u.input)?;
                self.refuse_raw(&input.raw, "UNNEST")?;
                let all: Lin = input.fields.iter().flatten().copied().collect();
                Ok(Info {
                    fields: vec![all; u.schema.fields().len()],
                    raw: input.raw,
                })
            }
            LogicalPlan::RecursiveQuery(r) => {
                let a = self.node(&r.static_term)?;
                let b = self.node(&r.recursive_term)?;
                self.refuse_raw(&a.raw, "a recursive query")?;
                self.refuse_raw(&b.raw, "a recursive query")?;
                let all: Lin = a
                    .fields
                    .iter()
                    .chain(&b.fields)
                    .flatten()
                    .copied()
                    .collect();
                Ok(Info {
                    fields: vec![all; r.static_term.schema().fields().len()],
                    raw: BTreeSet::new(),
                })
            }
            other => Err(FlightError::Refused(format!(
                "{} is not allowed in a query",
                other.display()
            ))),
        }
    }

    fn aggregate(&mut self, a: &Aggregate) -> Result<Info> {
        let input = self.node(&a.input)?;
        let schema = a.input.schema().clone();
        let raw = input.raw.clone();
        let mut fields = Vec::new();
        let groups = grouping_set_to_exprlist(&a.group_expr)
            .map_err(|e| FlightError::Refused(e.to_string()))?;
        for g in groups {
            fields.push(self.expr(g, &schema, &input.fields, Use::Group, &raw)?);
        }
        let group_width = a.schema.fields().len().saturating_sub(a.aggr_expr.len());
        while fields.len() < group_width {
            // The grouping id of GROUPING SETS / ROLLUP / CUBE.
            fields.push(Lin::new());
        }
        let private: Vec<usize> = raw
            .iter()
            .copied()
            .filter(|t| self.tables[*t].constraints.privacy.is_some())
            .collect();
        if private.len() > 1 {
            return Err(refuse(
                rule::PRIVACY,
                &self.tables[private[1]],
                "one aggregate may combine rows of at most one differentially private table".into(),
            ));
        }
        for e in &a.aggr_expr {
            let Some(af) = aggregate_of(e) else {
                fields.push(self.expr(
                    e,
                    &schema,
                    &input.fields,
                    Use::AggArg { bare: false },
                    &raw,
                )?);
                continue;
            };
            let name = af.func.name().to_ascii_lowercase();
            let mut lin = Lin::new();
            let mut arg_lins = Vec::new();
            for arg in &af.params.args {
                let l = self.expr(
                    arg,
                    &schema,
                    &input.fields,
                    Use::AggArg { bare: is_bare(arg) },
                    &raw,
                )?;
                lin.extend(l.iter().copied());
                arg_lins.push(l);
            }
            if let Some(f) = &af.params.filter {
                lin.extend(self.expr(
                    f,
                    &schema,
                    &input.fields,
                    Use::AggArg { bare: false },
                    &raw,
                )?);
            }
            for s in &af.params.order_by {
                self.expr(
                    &s.expr,
                    &schema,
                    &input.fields,
                    Use::AggArg { bare: false },
                    &raw,
                )?;
            }
            for &t in &raw {
                let table = &self.tables[t];
                let Some(rule_) = &table.constraints.aggregate else {
                    continue;
                };
                if ROW_REVEALING.contains(&name.as_str()) {
                    return Err(refuse(
                        rule::FUNCTIONS,
                        table,
                        format!("`{name}` returns individual rows' values"),
                    ));
                }
                if !rule_
                    .functions
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(&name))
                {
                    return Err(refuse(
                        rule::FUNCTIONS,
                        table,
                        format!(
                            "`{name}` is not an allowed aggregate (allowed: {})",
                            rule_.functions.join(", ")
                        ),
                    ));
                }
                let entity_arg = lin
                    .iter()
                    .any(|c| c.0 == t && self.column_name(*c) == rule_.entity);
                if (name == "min" || name == "max") && entity_arg {
                    return Err(refuse(
                        rule::FUNCTIONS,
                        table,
                        format!("`{name}` of the entity column returns one entity's value"),
                    ));
                }
            }
            if let Some(&t) = private.first() {
                let table = &self.tables[t];
                let privacy = table.constraints.privacy.as_ref();
                if !PRIVATE_FUNCTIONS.contains(&name.as_str()) {
                    return Err(refuse(
                        rule::PRIVACY,
                        table,
                        format!("`{name}` cannot be noised; use count, sum or avg"),
                    ));
                }
                if name != "count" {
                    if af.params.distinct {
                        return Err(refuse(
                            rule::PRIVACY,
                            table,
                            format!("`{name}(DISTINCT …)` has no bounded sensitivity"),
                        ));
                    }
                    let bounded = af.params.args.len() == 1
                        && match uncast(&af.params.args[0]) {
                            Expr::Column(_) => {
                                arg_lins[0].len() == 1
                                    && arg_lins[0].iter().all(|c| {
                                        c.0 == t
                                            && privacy.is_some_and(|p| {
                                                p.bounds.contains_key(self.column_name(*c))
                                            })
                                    })
                            }
                            _ => false,
                        };
                    if bounded {
                        let source = arg_lins[0]
                            .iter()
                            .next()
                            .map(|c| self.column_name(*c).to_string())
                            .unwrap_or_default();
                        let key = af.params.args[0].schema_name().to_string();
                        let known = self.findings.bounded_args.insert(key, source.clone());
                        if known.is_some_and(|k| k != source) {
                            return Err(refuse(
                                rule::PRIVACY,
                                table,
                                "two different columns go by the same name in private aggregates; rename one".into(),
                            ));
                        }
                    }
                    if !bounded {
                        return Err(refuse(
                            rule::PRIVACY,
                            table,
                            format!(
                                "`{name}` needs a single column with declared bounds (bounded: {})",
                                privacy
                                    .map(|p| p
                                        .bounds
                                        .keys()
                                        .cloned()
                                        .collect::<Vec<_>>()
                                        .join(", "))
                                    .unwrap_or_default()
                            ),
                        ));
                    }
                }
                if af.params.filter.is_some() {
                    return Err(refuse(
                        rule::PRIVACY,
                        table,
                        "FILTER clauses are not supported on private aggregates".into(),
                    ));
                }
                self.findings.releases += if name == "avg" { 2 } else { 1 };
                self.findings.private_tables.insert(t);
            }
            fields.push(lin);
        }
        Ok(Info {
            fields,
            raw: BTreeSet::new(),
        })
    }

    fn join(&mut self, j: &Join) -> Result<Info> {
        let left = self.node(&j.left)?;
        let right = self.node(&j.right)?;
        for info in [&left, &right] {
            if let Some(t) = info
                .raw
                .iter()
                .find(|t| self.tables[**t].constraints.privacy.is_some())
            {
                return Err(refuse(
                    rule::PRIVACY,
                    &self.tables[*t],
                    "a differentially private table cannot be joined (a join multiplies one row's contribution)".into(),
                ));
            }
        }
        let raw: BTreeSet<usize> = left.raw.union(&right.raw).copied().collect();
        let combined = Arc::new(
            j.left
                .schema()
                .join(j.right.schema())
                .map_err(|e| FlightError::Refused(e.to_string()))?,
        );
        let fields: Vec<Lin> = left.fields.iter().chain(&right.fields).cloned().collect();
        let width_left = left.fields.len();
        for (l, r) in &j.on {
            self.join_key(l, r, &combined, &fields, &raw)?;
        }
        if let Some(filter) = &j.filter {
            for conjunct in split_conjunction(filter) {
                let pair = match uncast(conjunct) {
                    Expr::BinaryExpr(BinaryExpr {
                        left: a,
                        op: Operator::Eq,
                        right: b,
                    }) if is_bare(a) && is_bare(b) => {
                        let side = |e: &Expr| match uncast(e) {
                            Expr::Column(c) => {
                                combined.maybe_index_of_column(c).map(|i| i < width_left)
                            }
                            _ => None,
                        };
                        match (side(a), side(b)) {
                            (Some(x), Some(y)) if x != y => Some((a.as_ref(), b.as_ref())),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                match pair {
                    Some((a, b)) => self.join_key(a, b, &combined, &fields, &raw)?,
                    None => {
                        self.expr(conjunct, &combined, &fields, Use::Filter, &raw)?;
                    }
                }
            }
        }
        let out = match j.join_type {
            JoinType::LeftSemi | JoinType::LeftAnti => left.fields,
            JoinType::RightSemi | JoinType::RightAnti => right.fields,
            JoinType::LeftMark => {
                let mut f = left.fields;
                f.push(Lin::new());
                f
            }
            JoinType::RightMark => {
                let mut f = right.fields;
                f.push(Lin::new());
                f
            }
            _ => fields,
        };
        Ok(Info { fields: out, raw })
    }

    /// An equi-join key pair: join-only columns may be equated only with a column of
    /// another table (never a literal list, never the same table).
    fn join_key(
        &mut self,
        a: &Expr,
        b: &Expr,
        schema: &Arc<DFSchema>,
        fields: &[Lin],
        raw: &BTreeSet<usize>,
    ) -> Result<()> {
        let usage_a = if is_bare(a) {
            Use::JoinKey
        } else {
            Use::Filter
        };
        let usage_b = if is_bare(b) {
            Use::JoinKey
        } else {
            Use::Filter
        };
        let la = self.expr(a, schema, fields, usage_a, raw)?;
        let lb = self.expr(b, schema, fields, usage_b, raw)?;
        for (mine, other) in [(&la, &lb), (&lb, &la)] {
            for &(t, c) in mine {
                let table = &self.tables[t];
                let name = self.column_name((t, c));
                if !table
                    .constraints
                    .join_only_columns
                    .iter()
                    .any(|j| j == name)
                {
                    continue;
                }
                if other.is_empty() || other.iter().any(|(ot, _)| *ot == t) {
                    return Err(refuse(
                        rule::JOIN_ONLY_COLUMNS,
                        table,
                        format!(
                            "join-only column `{name}` must be equated with a column of another granted table"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
