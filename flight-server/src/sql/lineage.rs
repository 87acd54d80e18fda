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

/// Wraps a result stream so its end records COMPLETE (rows and bytes sent) or FAIL.
pub(crate) fn observed(
    batches: BoxStream<'static, Result<RecordBatch>>,
    run: RunLifecycle,
    sink: LineageSink,
) -> BoxStream<'static, Result<RecordBatch>> {
    struct State {
        inner: BoxStream<'static, Result<RecordBatch>>,
        run: RunLifecycle,
        sink: LineageSink,
        rows: u64,
        bytes: u64,
        done: bool,
    }
    let state = State {
        inner: batches,
        run,
        sink,
        rows: 0,
        bytes: 0,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        match st.inner.next().await {
            Some(Ok(batch)) => {
                st.rows += batch.num_rows() as u64;
                st.bytes += batch.get_array_memory_size() as u64;
                Some((Ok(batch), st))
            }
            Some(Err(e)) => {
                st.done = true;
                st.sink.record(st.run.fail(&e.to_string())).await;
                Some((Err(e), st))
            }
            None => {
                st.sink.record(st.run.complete(st.rows, st.bytes)).await;
                None
            }
        }
    })
    .boxed()
}
