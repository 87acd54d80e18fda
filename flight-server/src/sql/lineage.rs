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
    SymlinksDatasetFacet, gated_name_of, physical_name,
};

use super::session::GrantedAsset;
use crate::error::Result;

/// Where query runs are recorded, and for which receivers.
#[derive(Debug, Clone)]
pub struct LineageSink {
    pub(crate) outbox: Outbox,
    pub(crate) receivers: Vec<String>,
}

impl LineageSink {
    pub fn new(outbox: Outbox, receivers: Vec<String>) -> Self {
        LineageSink { outbox, receivers }
    }

    /// Queues an event; a failure is logged, never returned: lineage is "later", not "no".
    pub(crate) async fn record(&self, event: RunEvent) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        if let Err(e) = self.outbox.enqueue(&event, &self.receivers, now).await {
            tracing::error!(error = %e, "could not queue a lineage event");
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
                st.end.record(event).await;
                Some((Err(e), st))
            }
            None => {
                let event = st.end.run.complete(st.end.rows, st.end.bytes);
                st.end.record(event).await;
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
    async fn record(&mut self, event: RunEvent) {
        self.recorded = true;
        self.sink.record(event).await;
    }
}

impl Drop for RunEnd {
    fn drop(&mut self) {
        if self.recorded {
            return;
        }
        // The client went away mid-stream. Drop cannot wait, so the insert runs as a
        // task; without a runtime (process exiting) the run stays open in the catalog.
        let event = self.run.abort(self.rows, self.bytes);
        let sink = self.sink.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { sink.record(event).await });
        }
    }
}
