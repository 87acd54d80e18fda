//! What SQL may do in a query session, checked twice: on the text (size, placeholders)
//! and on the logical plan (an allow-list of relational operators).
//!
//! The plan check runs after DataFusion has resolved names and before anything is
//! optimised or executed, so every entry point that plans SQL (statements, prepared
//! statements, `GetSchema`) goes through the same door. Anything not on the allow-list is
//! refused: DDL, DML, `COPY`, `SET` and other statements, `EXPLAIN` (a plan describes the
//! provider's storage), and extension nodes nobody reviewed.

use std::collections::HashSet;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{FlightError, Result};

/// Refuses SQL text above `max_bytes` before the parser sees it.
pub(crate) fn check_text(sql: &str, max_bytes: usize) -> Result<()> {
    if sql.len() > max_bytes {
        return Err(FlightError::Refused(format!(
            "the SQL text is {} bytes; this provider accepts at most {max_bytes}",
            sql.len()
        )));
    }
    if sql.trim().is_empty() {
        return Err(FlightError::InvalidRequest("the SQL text is empty".into()));
    }
    Ok(())
}

/// Rewrites positional `?` placeholders (what ODBC, JDBC and ADBC's DB-API send) into
/// DataFusion's `$1, $2, …`. DataFusion would otherwise treat every `?` as the same
/// named parameter. The tokenizer finds them, so a `?` inside a string literal or a
/// comment is left alone; the text is spliced by position, never re-printed.
pub(crate) fn number_placeholders(sql: &str) -> Result<String> {
    if !sql.contains('?') {
        return Ok(sql.to_string());
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| FlightError::InvalidRequest(format!("SQL syntax: {e}")))?;
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset = |line: u64, column: u64| -> Option<usize> {
        let start = *line_starts.get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        let col = usize::try_from(column).ok()?.checked_sub(1)?;
        sql[start..].char_indices().nth(col).map(|(i, _)| start + i)
    };
    let mut out = String::with_capacity(sql.len() + 8);
    let mut copied = 0;
    let mut n = 0;
    for t in tokens {
        if matches!(&t.token, Token::Placeholder(p) if p == "?") {
            let at = offset(t.span.start.line, t.span.start.column).ok_or_else(|| {
                FlightError::InvalidRequest("cannot locate a `?` placeholder".into())
            })?;
            n += 1;
            out.push_str(&sql[copied..at]);
            out.push_str(&format!("${n}"));
            copied = at + 1;
        }
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

/// Checks a resolved plan against the allow-list, and that it reads only `tables`.
pub(crate) fn check_plan(plan: &LogicalPlan, tables: &HashSet<String>) -> Result<()> {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(plan)
        .map_err(|e| {
            FlightError::Refused(format!("{}; only queries are allowed", root_message(&e)))
        })?;
    plan.apply_with_subqueries(|node| {
        let refused = |what: &str| -> DfResult<TreeNodeRecursion> {
            Err(DataFusionError::Plan(format!(
                "{what} is not allowed; only queries are"
            )))
        };
        match node {
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::Window(_)
            | LogicalPlan::Aggregate(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Join(_)
            | LogicalPlan::Repartition(_)
            | LogicalPlan::Union(_)
            | LogicalPlan::EmptyRelation(_)
            | LogicalPlan::Subquery(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::Values(_)
            | LogicalPlan::Distinct(_)
            | LogicalPlan::Unnest(_)
            | LogicalPlan::RecursiveQuery(_) => Ok(TreeNodeRecursion::Continue),
            LogicalPlan::TableScan(scan) => {
                if tables.contains(scan.table_name.table()) {
                    Ok(TreeNodeRecursion::Continue)
                } else {
                    Err(DataFusionError::Plan(format!(
                        "table '{}' is not one of your agreements' tables",
                        scan.table_name
                    )))
                }
            }
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) => {
                refused("EXPLAIN (plans describe the provider's storage)")
            }
            LogicalPlan::Statement(_) => refused("this statement"),
            LogicalPlan::Dml(_) | LogicalPlan::Copy(_) => refused("writing data"),
            LogicalPlan::Ddl(_) => refused("changing the schema"),
            LogicalPlan::DescribeTable(_) => refused("DESCRIBE (use GetTables)"),
            LogicalPlan::Extension(_) => refused("this kind of plan"),
        }
    })
    .map_err(|e| FlightError::Refused(root_message(&e)))?;
    Ok(())
}

/// The innermost message of a DataFusion error, without the context chain and
/// backtraces DataFusion wraps around it.
pub(crate) fn root_message(e: &DataFusionError) -> String {
    let root = e.find_root();
    let text = root.to_string();
    let text = text
        .strip_prefix("Error during planning: ")
        .or_else(|| text.strip_prefix("SQL error: "))
        .unwrap_or(&text);
    text.lines().next().unwrap_or_default().to_string()
}

/// Maps a DataFusion error to what the client is told. Storage errors are logged and
/// reported generically; resource limits get their own status; the rest is the query's
/// own fault and is described.
pub(crate) fn query_error(e: DataFusionError) -> FlightError {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(m) => FlightError::Limit(format!(
            "the query needs more memory than this provider allows per query ({})",
            m.lines().next().unwrap_or_default()
        )),
        DataFusionError::ObjectStore(_)
        | DataFusionError::IoError(_)
        | DataFusionError::ParquetError(_)
        | DataFusionError::External(_) => FlightError::Storage {
            did: "(query)".into(),
            detail: e.to_string(),
        },
        DataFusionError::NotImplemented(m) => {
            FlightError::InvalidRequest(format!("not supported: {m}"))
        }
        _ => FlightError::InvalidRequest(root_message(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_become_numbered_placeholders_outside_literals() {
        let sql = "SELECT '?' AS q, a FROM t -- what?\nWHERE a > ? AND b = ?";
        assert_eq!(
            number_placeholders(sql).expect("rewrite"),
            "SELECT '?' AS q, a FROM t -- what?\nWHERE a > $1 AND b = $2"
        );
        assert_eq!(
            number_placeholders("SELECT 'é', ?").expect("rewrite"),
            "SELECT 'é', $1"
        );
    }

    #[test]
    fn oversized_and_empty_text_is_refused() {
        assert!(check_text(&"x".repeat(11), 10).is_err());
        assert!(check_text("  ", 10).is_err());
        assert!(check_text("SELECT 1", 10).is_ok());
    }
}
