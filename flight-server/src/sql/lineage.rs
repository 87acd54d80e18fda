//! Query runs as OpenLineage events: START when a statement is planned (the run id is
//! derived from the query id its ticket carries), COMPLETE with row and byte counts
//! when the stream ends, FAIL when it does not. Events go into the catalog database's
//! outbox, a local insert; delivery to catalogs happens elsewhere, so a catalog outage
//! never slows or blocks a query.

use alloy::primitives::Address;
use arrow::array::RecordBatch;
use futures::stream::{BoxStream, StreamExt};
use insitu_catalog::lineage::{
    Dataset, DatasetFacets, InsituAgreementRunFacet, Outbox, RunEvent, RunLifecycle,
    SymlinksDatasetFacet, gated_name_of, physical_name, sequence,
};

use super::session::GrantedAsset;
use crate::error::Result;

/// Events waiting for the writer, at most. A catalog database stalled for long enough
/// to fill it loses lineage (logged and counted), never blocks a query.
const QUEUE: usize = 100_000;
/// Events written in one transaction, at most.
const BATCH: usize = 512;
/// How long the writer gathers events before writing them in one transaction. Events
/// sit in memory this much longer at most; lineage is delivered later anyway.
const GATHER: std::time::Duration = std::time::Duration::from_millis(50);

enum Queued {
    Event(Box<RunEvent>, u64),
    /// Answered once everything queued before it is in the outbox.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Where query runs are recorded, and for which receivers.
///
/// Recording never makes a query wait: events go through a bounded queue to one writer
/// task that puts them into the outbox in batches (one transaction each), in the order
/// they were recorded.
#[derive(Debug, Clone)]
pub struct LineageSink {
    queue: tokio::sync::mpsc::Sender<Queued>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Queued")
    }
}

impl LineageSink {
    /// Starts the writer for `outbox` and `receivers`. Call it inside a Tokio runtime.
    pub fn new(outbox: Outbox, receivers: Vec<String>) -> Result<Self> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            crate::error::FlightError::Internal("the lineage writer needs a Tokio runtime".into())
        })?;
        let (queue, rx) = tokio::sync::mpsc::channel(QUEUE);
        handle.spawn(write(outbox, receivers, rx));
        Ok(LineageSink {
            queue,
            dropped: Default::default(),
        })
    }

    /// Queues an event; never waits. A full queue drops it with an error log: lineage
    /// is "later", and at worst "lost", but never "no" to the consumer.
    pub(crate) fn record(&self, event: RunEvent) {
        let queued = Queued::Event(Box::new(event), sequence());
        if self.queue.try_send(queued).is_err() {
            let n = self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            tracing::error!(
                dropped = n,
                "the lineage queue is full; a run event was dropped"
            );
        }
    }

    /// Waits until every event recorded so far is in the outbox (for tests, and for a
    /// graceful shutdown).
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.queue.send(Queued::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The writer: drains the queue in batches; a failed write is retried (the queue holds
/// what arrives meanwhile) so nothing queued is lost while the process lives.
async fn write(
    outbox: Outbox,
    receivers: Vec<String>,
    mut rx: tokio::sync::mpsc::Receiver<Queued>,
) {
    let mut batch: Vec<(Box<RunEvent>, u64)> = Vec::with_capacity(BATCH);
    let mut waiting: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        // Gather for a moment before writing: each write is a commit, and each commit
        // an fsync. Queries one after another would otherwise pay one each, on the
        // cores the queries run on. A flush writes at once.
        let deadline = tokio::time::Instant::now() + GATHER;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Queued::Event(e, at) => batch.push((e, at)),
                Queued::Flush(done) => waiting.push(done),
            }
            if batch.len() < BATCH && waiting.is_empty() {
                next = tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .ok()
                    .flatten();
            }
        }
        let mut delay = std::time::Duration::from_millis(100);
        while !batch.is_empty() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            match outbox.enqueue_batch(&batch, &receivers, now).await {
                Ok(()) => batch.clear(),
                Err(e) => {
                    tracing::error!(error = %e, events = batch.len(), "could not write lineage events; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(10));
                }
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

/// The run of query `query_id` over `assets` for `consumer`.
pub(crate) fn run_of(
    provider: Address,
    chain_id: u64,
    contract: Address,
    query_id: &str,
    sql: &str,
    assets: &[GrantedAsset],
    consumer: Address,
) -> RunLifecycle {
    let inputs = assets
        .iter()
        .map(|a| {
            let (namespace, name) = physical_name(&a.location.url);
            Dataset {
                namespace,
                name,
                facets: DatasetFacets {
                    symlinks: Some(SymlinksDatasetFacet::new(vec![gated_name_of(
                        chain_id, a.did,
                    )])),
                    ..DatasetFacets::default()
                },
            }
        })
        .collect();
    let agreement = assets.first().map(|a| {
        InsituAgreementRunFacet::new(
            chain_id,
            format!("{contract:#x}"),
            a.agreement.to_string(),
            None,
            format!("{consumer:#x}"),
        )
    });
    RunLifecycle::query(
        format!("insitu://provider/{provider:#x}"),
        query_id,
        sql,
        inputs,
        agreement,
    )
}

/// Wraps a result stream so its end records COMPLETE (rows and bytes sent) or FAIL,
/// and a stream the client abandons (dropped before its end) records ABORT.
pub(crate) fn observed(
    batches: BoxStream<'static, Result<RecordBatch>>,
    run: RunLifecycle,
    sink: LineageSink,
) -> BoxStream<'static, Result<RecordBatch>> {
    struct State {
        inner: BoxStream<'static, Result<RecordBatch>>,
        end: RunEnd,
    }
    let state = State {
        inner: batches,
        end: RunEnd {
            run,
            sink,
            rows: 0,
            bytes: 0,
            recorded: false,
        },
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.end.recorded {
            return None;
        }
        match st.inner.next().await {
            Some(Ok(batch)) => {
                st.end.rows += batch.num_rows() as u64;
                st.end.bytes += batch.get_array_memory_size() as u64;
                Some((Ok(batch), st))
            }
            Some(Err(e)) => {
                let event = st.end.run.fail(&e.to_string());
                st.end.record(event);
                Some((Err(e), st))
            }
            None => {
                let event = st.end.run.complete(st.end.rows, st.end.bytes);
                st.end.record(event);
                None
            }
        }
    })
    .boxed()
}

/// The end of one run: recorded once, by the stream's end or, failing that, by drop.
struct RunEnd {
    run: RunLifecycle,
    sink: LineageSink,
    rows: u64,
    bytes: u64,
    recorded: bool,
}

impl RunEnd {
    fn record(&mut self, event: RunEvent) {
        self.recorded = true;
        self.sink.record(event);
    }
}

impl Drop for RunEnd {
    fn drop(&mut self) {
        if self.recorded {
            return;
        }
        // The client went away mid-stream.
        self.sink.record(self.run.abort(self.rows, self.bytes));
    }
}
