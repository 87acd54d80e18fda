//! Reading assets from object_store as a stream of record batches. Nothing is buffered
//! whole: Parquet is read row group by row group through ranged reads, CSV is decoded
//! chunk by chunk as bytes arrive.

use std::sync::Arc;

use arrow::csv::reader::Decoder;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::convert::try_schema_from_ipc_buffer;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use insitu_catalog::{DataFormat, StorageLocation};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
// ParquetObjectReader is deprecated in parquet 59 in favour of custom AsyncFileReaders
// (arrow-rs#10308). It still does exactly what we need (ranged reads, footer prefetch);
// replace it when DataFusion's own reader is wired in for Flight SQL.
#[allow(deprecated)]
use parquet::arrow::async_reader::ParquetObjectReader;

use crate::error::{FlightError, Result};

/// Rows per batch. About 8k rows keeps typical batches near the 2 MiB Flight message
/// size, which stays well under tonic's 4 MiB default limit after encoding.
pub const BATCH_ROWS: usize = 8192;

fn storage(did: &str, detail: impl std::fmt::Display) -> FlightError {
    FlightError::Storage {
        did: did.to_string(),
        detail: detail.to_string(),
    }
}

fn open_store(did: &str, url: &str) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let parsed =
        url::Url::parse(url).map_err(|e| storage(did, format!("bad location URL: {e}")))?;
    let (store, path) = object_store::parse_url(&parsed).map_err(|e| storage(did, e))?;
    Ok((Arc::from(store), path))
}

/// The Arrow schema of a stored asset.
pub async fn read_schema(did: &str, loc: &StorageLocation) -> Result<SchemaRef> {
    match loc.format {
        DataFormat::Parquet => {
            let (store, path) = open_store(did, &loc.url)?;
            #[allow(deprecated)]
            let reader = ParquetObjectReader::new(store, path);
            let builder = ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .map_err(|e| storage(did, e))?;
            Ok(builder.schema().clone())
        }
        DataFormat::Csv => ipc_schema(did, &loc.schema_ipc),
    }
}

fn ipc_schema(did: &str, ipc: &[u8]) -> Result<SchemaRef> {
    let schema: Schema = try_schema_from_ipc_buffer(ipc).map_err(|e| storage(did, e))?;
    Ok(Arc::new(schema))
}

/// Streams the asset's rows.
pub async fn open_batches(
    did: &str,
    loc: &StorageLocation,
) -> Result<(SchemaRef, BoxStream<'static, Result<RecordBatch>>)> {
    let (store, path) = open_store(did, &loc.url)?;
    let did_owned = did.to_string();
    match loc.format {
        DataFormat::Parquet => {
            #[allow(deprecated)]
            let reader = ParquetObjectReader::new(store, path);
            let builder = ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .map_err(|e| storage(did, e))?
                .with_batch_size(BATCH_ROWS);
            let schema = builder.schema().clone();
            let stream = builder.build().map_err(|e| storage(did, e))?;
            let stream = stream.map_err(move |e| storage(&did_owned, e)).boxed();
            Ok((schema, stream))
        }
        DataFormat::Csv => {
            let schema = ipc_schema(did, &loc.schema_ipc)?;
            let decoder = arrow::csv::ReaderBuilder::new(schema.clone())
                .with_header(true)
                .with_batch_size(BATCH_ROWS)
                .build_decoder();
            let bytes = store
                .get(&path)
                .await
                .map_err(|e| storage(did, e))?
                .into_stream()
                .map_err(move |e| storage(&did_owned, e))
                .boxed();
            Ok((schema, csv_batches(did.to_string(), decoder, bytes)))
        }
    }
}

struct CsvState {
    did: String,
    decoder: Decoder,
    bytes: BoxStream<'static, Result<Bytes>>,
    pending: Bytes,
    done: bool,
}

/// Push-decodes CSV as chunks arrive, yielding a batch whenever the decoder fills one.
fn csv_batches(
    did: String,
    decoder: Decoder,
    bytes: BoxStream<'static, Result<Bytes>>,
) -> BoxStream<'static, Result<RecordBatch>> {
    let state = CsvState {
        did,
        decoder,
        bytes,
        pending: Bytes::new(),
        done: false,
    };
    futures::stream::try_unfold(state, |mut st| async move {
        loop {
            if st.done {
                return Ok(None);
            }
            if st.pending.is_empty() {
                match st.bytes.next().await {
                    Some(chunk) => st.pending = chunk?,
                    None => {
                        st.done = true;
                        let last = st.decoder.flush().map_err(|e| storage(&st.did, e))?;
                        return Ok(last.map(|b| (b, st)));
                    }
                }
            }
            let consumed = st
                .decoder
                .decode(&st.pending)
                .map_err(|e| storage(&st.did, e))?;
            st.pending = st.pending.slice(consumed..);
            if st.decoder.capacity() == 0
                && let Some(batch) = st.decoder.flush().map_err(|e| storage(&st.did, e))?
            {
                return Ok(Some((batch, st)));
            }
        }
    })
    .boxed()
}
