//! Planning and running one query: bind parameters, stream results with a deadline,
//! honour cancellation, and cast view types to plain ones at the boundary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::LogicalPlan;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::watch;

use super::guard::{check_plan, check_text, number_placeholders, query_error, root_message};
use super::session::{GatedSession, QueryLimits};
use crate::error::{FlightError, Result};

/// Plans `sql` in `session`, checks the plan and binds `params` (one row, Arrow IPC).
pub(crate) async fn plan(
    session: &GatedSession,
    sql: &str,
    params: Option<&[u8]>,
    limits: &QueryLimits,
) -> Result<LogicalPlan> {
    check_text(sql, limits.max_sql_bytes)?;
    let sql = number_placeholders(sql)?;
    let plan = session
        .ctx
        .state()
        .create_logical_plan(&sql)
        .await
        .map_err(|e| FlightError::InvalidRequest(root_message(&e)))?;
    check_plan(&plan, &session.table_names())?;
    // The constraints themselves are checked by `policy::enforce`, which every caller
    // runs next (on the bound plan, for the schema or for execution).
    super::policy::check_templates(&sql, &plan, &session.policies)?;
    match params {
        Some(ipc) => bind(plan, ipc),
        None => Ok(plan),
    }
}

/// The parameters a plan expects, as a schema (`$1`, `$2`, … in order). Types DataFusion
/// could not infer are `Null`, which clients read as "any".
pub(crate) fn parameter_schema(plan: &LogicalPlan) -> Result<Schema> {
    let types = plan
        .get_parameter_types()
        .map_err(|e| FlightError::InvalidRequest(root_message(&e)))?;
    let mut named: Vec<(usize, String, DataType)> = types
        .into_iter()
        .map(|(name, ty)| {
            let index = name
                .trim_start_matches('$')
                .parse::<usize>()
                .unwrap_or(usize::MAX);
            (index, name, ty.unwrap_or(DataType::Null))
        })
        .collect();
    named.sort();
    Ok(Schema::new(
        named
            .into_iter()
            .map(|(_, name, ty)| Field::new(name, ty, true))
            .collect::<Vec<_>>(),
    ))
}

/// Replaces the plan's placeholders with the values of the single row in `ipc`.
fn bind(plan: LogicalPlan, ipc: &[u8]) -> Result<LogicalPlan> {
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
        .map_err(|e| FlightError::InvalidRequest(format!("unreadable parameters: {e}")))?;
    let batches: Vec<RecordBatch> = reader
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| FlightError::InvalidRequest(format!("unreadable parameters: {e}")))?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Err(FlightError::InvalidRequest(
            "no parameter values were bound".into(),
        ));
    };
    if rows != 1 {
        return Err(FlightError::InvalidRequest(format!(
            "bind exactly one row of parameters per execution (got {rows})"
        )));
    }
    let expected = parameter_schema(&plan)?;
    if batch.num_columns() != expected.fields().len() {
        return Err(FlightError::InvalidRequest(format!(
            "the statement has {} parameters but {} values were bound",
            expected.fields().len(),
            batch.num_columns()
        )));
    }
    let mut values = Vec::with_capacity(batch.num_columns());
    for (column, field) in batch.columns().iter().zip(expected.fields()) {
        let mut value = ScalarValue::try_from_array(column, 0)
            .map_err(|e| FlightError::InvalidRequest(root_message(&e)))?;
        if *field.data_type() != DataType::Null && value.data_type() != *field.data_type() {
            value = value.cast_to(field.data_type()).map_err(|e| {
                FlightError::InvalidRequest(format!(
                    "parameter {} must be {}: {}",
                    field.name(),
                    field.data_type(),
                    root_message(&e)
                ))
            })?;
        }
        values.push(value);
    }
    plan.with_param_values(ParamValues::from(values))
        .map_err(|e| FlightError::InvalidRequest(root_message(&e)))
}

/// The type a client receives for `dt`: view types become their plain forms, for
/// clients that predate them (most JDBC/ODBC drivers and older pyarrow).
pub(crate) fn plain_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::ListView(f) | DataType::List(f) => DataType::List(plain_field(f)),
        DataType::LargeListView(f) | DataType::LargeList(f) => DataType::LargeList(plain_field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(plain_field(f), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(plain_field).collect()),
        DataType::Map(f, sorted) => DataType::Map(plain_field(f), *sorted),
        DataType::Dictionary(k, v) => DataType::Dictionary(k.clone(), Box::new(plain_type(v))),
        other => other.clone(),
    }
}

fn plain_field(f: &FieldRef) -> FieldRef {
    Arc::new(f.as_ref().clone().with_data_type(plain_type(f.data_type())))
}

pub(crate) fn plain_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema.fields().iter().map(plain_field).collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

fn to_plain(batch: RecordBatch, target: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == target.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(target.fields())
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| FlightError::Internal(format!("casting results: {e}")))?;
    RecordBatch::try_new(target.clone(), columns)
        .map_err(|e| FlightError::Internal(format!("casting results: {e}")))
}

/// Counters of query executions since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Streams being served now.
    pub active: usize,
    pub completed: u64,
    /// Failed with an error (limits, timeouts, bad SQL at execution).
    pub failed: u64,
    /// Ended early: cancelled, or the client went away.
    pub abandoned: u64,
}

/// The running queries, for cancellation, accounting and the concurrency cap.
#[derive(Debug)]
pub(crate) struct Running {
    slots: Arc<tokio::sync::Semaphore>,
    max: usize,
    active: AtomicUsize,
    completed: AtomicU64,
    failed: AtomicU64,
    abandoned: AtomicU64,
    cancels: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// Queries cancelled before their `DoGet`, until their ticket expires.
    cancelled_early: Mutex<HashMap<String, u64>>,
}

/// What `CancelFlightInfo` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelOutcome {
    Cancelled,
    /// Not running now: it is marked so that a later `DoGet` is refused.
    NotRunning,
}

impl Running {
    pub fn new(max_concurrent: usize) -> Self {
        let max = max_concurrent.max(1);
        Running {
            slots: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
            active: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            cancels: Mutex::new(HashMap::new()),
            cancelled_early: Mutex::new(HashMap::new()),
        }
    }

    pub fn stats(&self) -> QueryStats {
        QueryStats {
            active: self.active.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
        }
    }

    pub fn cancel(&self, query_id: &str, expires_at: u64, now: u64) -> CancelOutcome {
        if let Ok(cancels) = self.cancels.lock()
            && let Some(tx) = cancels.get(query_id)
        {
            let _ = tx.send(true);
            return CancelOutcome::Cancelled;
        }
        if let Ok(mut early) = self.cancelled_early.lock() {
            early.retain(|_, exp| *exp > now);
            early.insert(query_id.to_string(), expires_at);
        }
        CancelOutcome::NotRunning
    }

    fn start(self: &Arc<Self>, query_id: &str) -> Result<RunGuard> {
        let early = self
            .cancelled_early
            .lock()
            .map(|e| e.contains_key(query_id))
            .unwrap_or(false);
        if early {
            return Err(FlightError::Cancelled(
                "the query was cancelled before it ran".into(),
            ));
        }
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            FlightError::Limit(format!(
                "{} queries are already running on this provider; retry shortly",
                self.max
            ))
        })?;
        let (tx, rx) = watch::channel(false);
        if let Ok(mut cancels) = self.cancels.lock() {
            cancels.insert(query_id.to_string(), tx);
        }
        self.active.fetch_add(1, Ordering::Relaxed);
        Ok(RunGuard {
            _slot: slot,
            running: self.clone(),
            query_id: query_id.to_string(),
            cancel: rx,
            outcome: Outcome::Abandoned,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Completed,
    Failed,
    Abandoned,
}

/// Held by a running stream; dropping it (the client went away, or the stream ended)
/// unregisters the query. Dropping the DataFusion stream it travels with cancels the
/// execution's tasks.
struct RunGuard {
    _slot: tokio::sync::OwnedSemaphorePermit,
    running: Arc<Running>,
    query_id: String,
    cancel: watch::Receiver<bool>,
    outcome: Outcome,
}

impl RunGuard {
    fn finish(&mut self, outcome: Outcome) {
        self.outcome = outcome;
    }

    async fn cancelled(&mut self) {
        if self.cancel.wait_for(|c| *c).await.is_err() {
            futures::future::pending::<()>().await;
        }
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Ok(mut cancels) = self.running.cancels.lock() {
            cancels.remove(&self.query_id);
        }
        self.running.active.fetch_sub(1, Ordering::Relaxed);
        let counter = match self.outcome {
            Outcome::Completed => &self.running.completed,
            Outcome::Failed => &self.running.failed,
            Outcome::Abandoned => &self.running.abandoned,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Per-answer limits from the provider's constraints, enforced on the stream.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OutputLimits {
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
}

/// Bytes of a batch as Arrow buffers (its slice, not the buffers it shares).
fn batch_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size()) as u64
        })
        .sum()
}

struct Run {
    inner: datafusion::execution::SendableRecordBatchStream,
    output: OutputLimits,
    rows: u64,
    bytes: u64,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    guard: RunGuard,
    schema: SchemaRef,
    timeout: Duration,
    done: bool,
}

fn timed_out(limit: Duration) -> FlightError {
    FlightError::TimedOut(format!(
        "the query ran longer than this provider's limit of {} s",
        limit.as_secs_f64()
    ))
}

/// Plans `df` physically with every operator made cooperative, and starts it.
///
/// DataFusion marks only its scans and exchanges as cooperative, so an operator that
/// produces batches from memory (a nested-loop join, say) can run for hours inside one
/// poll: no timer fires, no cancellation lands, and on a small runtime nothing else is
/// served. Wrapping every operator makes each batch spend from tokio's task budget, so
/// every query yields regularly and dropping its stream stops it.
async fn cooperative_stream(
    df: DataFrame,
) -> datafusion::common::Result<datafusion::execution::SendableRecordBatchStream> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::physical_plan::coop::CooperativeExec;
    let task = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let plan = plan
        .transform_up(|node| {
            if node.downcast_ref::<CooperativeExec>().is_some() {
                Ok(Transformed::no(node))
            } else {
                Ok(Transformed::yes(Arc::new(CooperativeExec::new(node)) as _))
            }
        })?
        .data;
    datafusion::physical_plan::execute_stream(plan, task)
}

/// Executes `df` under the limits. The returned stream pulls from DataFusion only as the
/// client reads (backpressure), and ends with an error on timeout or cancellation.
pub(crate) async fn run(
    df: DataFrame,
    limits: &QueryLimits,
    running: &Arc<Running>,
    query_id: &str,
    output: OutputLimits,
) -> Result<(SchemaRef, BoxStream<'static, Result<RecordBatch>>)> {
    let mut guard = running.start(query_id)?;
    let schema = plain_schema(df.schema().as_arrow());
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let inner = match tokio::time::timeout_at(deadline, cooperative_stream(df)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            guard.outcome = Outcome::Failed;
            return Err(query_error(e));
        }
        Err(_) => {
            guard.outcome = Outcome::Failed;
            return Err(timed_out(limits.timeout));
        }
    };
    let state = Run {
        inner,
        output,
        rows: 0,
        bytes: 0,
        deadline: Box::pin(tokio::time::sleep_until(deadline)),
        guard,
        schema: schema.clone(),
        timeout: limits.timeout,
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let next = tokio::select! {
            biased;
            _ = st.guard.cancelled() => Err(FlightError::Cancelled("the query was cancelled".into())),
            _ = &mut st.deadline => Err(timed_out(st.timeout)),
            batch = st.inner.next() => match batch {
                None => {
                    st.guard.finish(Outcome::Completed);
                    return None;
                }
                Some(Ok(batch)) => match to_plain(batch, &st.schema) {
                    Err(e) => Err(e),
                    Ok(batch) => {
                    // Counted as the client receives it (plain types), so the limit
                    // does not depend on how the engine laid strings out.
                    st.rows += batch.num_rows() as u64;
                    st.bytes += batch_bytes(&batch);
                    match (st.output.rows, st.output.bytes) {
                        (Some(max), _) if st.rows > max => Err(FlightError::Limit(format!(
                            "rule `{}`: the answer has more than {max} rows, the most this service returns; narrow the query",
                            insitu_policy::constraints::rule::ROW_LIMIT
                        ))),
                        (_, Some(max)) if st.bytes > max => Err(FlightError::Limit(format!(
                            "rule `{}`: the answer is larger than {max} bytes, the most this service returns; narrow the query",
                            insitu_policy::constraints::rule::BYTE_LIMIT
                        ))),
                        _ => Ok(batch),
                    }
                    }
                },
                Some(Err(e)) => Err(query_error(e)),
            },
        };
        if next.is_err() {
            st.done = true;
            st.guard.outcome = Outcome::Failed;
        }
        Some((next, st))
    })
    .boxed();
    Ok((schema, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_types_become_plain_at_any_depth() {
        let inner = Arc::new(Field::new("item", DataType::Utf8View, true));
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new("b", DataType::BinaryView, false),
            Field::new("l", DataType::ListView(inner), true),
            Field::new("i", DataType::Int64, false),
        ]);
        let plain = plain_schema(&schema);
        let types: Vec<DataType> = plain
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(types[0], DataType::Utf8);
        assert_eq!(types[1], DataType::Binary);
        assert_eq!(
            types[2],
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
        );
        assert_eq!(types[3], DataType::Int64);
        assert!(!plain.field(1).is_nullable());
    }

    #[test]
    fn a_query_cancelled_before_it_runs_is_refused() {
        let running = Arc::new(Running::new(1));
        assert_eq!(running.cancel("q1", 100, 10), CancelOutcome::NotRunning);
        assert!(running.start("q1").is_err());
        let guard = running.start("q2").expect("start");
        assert_eq!(running.stats().active, 1);
        assert!(
            matches!(running.start("q3"), Err(FlightError::Limit(_))),
            "one slot only"
        );
        assert_eq!(running.cancel("q2", 100, 10), CancelOutcome::Cancelled);
        drop(guard);
        let stats = running.stats();
        assert_eq!((stats.active, stats.abandoned), (0, 1));
    }
}
