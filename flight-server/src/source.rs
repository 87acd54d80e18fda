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

/// Options for the object stores assets live in (`aws_region`, `aws_access_key_id`,
/// `google_service_account`, `azure_storage_account_name`…, as object_store names them).
/// Values are often credentials, so they never print.
#[derive(Clone, Default)]
pub struct StorageOptions {
    options: Vec<(String, String)>,
}

impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.options.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("StorageOptions")
            .field("keys", &keys)
            .finish()
    }
}

impl StorageOptions {
    pub fn new(options: impl IntoIterator<Item = (String, String)>) -> Self {
        StorageOptions {
            options: options.into_iter().collect(),
        }
    }

    /// The given options plus the standard cloud variables of the environment
    /// (`AWS_*`, `GOOGLE_*`, `AZURE_*`), which object_store's own environment builders
    /// would read. Explicit options win.
    pub fn with_environment(mut self) -> Self {
        for (k, v) in std::env::vars() {
            let lower = k.to_ascii_lowercase();
            let cloud = ["aws_", "google_", "azure_"]
                .iter()
                .any(|p| lower.starts_with(p));
            if cloud && !self.options.iter().any(|(key, _)| *key == lower) {
                self.options.push((lower, v));
            }
        }
        self
    }
}

/// Opens the store behind a location URL: `file://` always; `s3://`, `gs://`, `az://`
/// and `https://` when insitu is built with the `cloud` feature.
pub(crate) fn open_store(
    did: &str,
    url: &str,
    options: &StorageOptions,
) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let parsed =
        url::Url::parse(url).map_err(|e| storage(did, format!("bad location URL: {e}")))?;
    let (store, path) = object_store::parse_url_opts(&parsed, options.options.iter().cloned())
        .map_err(|e| {
            storage(
                did,
                format!("{e} (is insitu built with the `cloud` feature?)"),
            )
        })?;
    Ok((Arc::from(store), path))
}

/// The Arrow schema of a stored asset.
pub async fn read_schema(
    did: &str,
    loc: &StorageLocation,
    options: &StorageOptions,
) -> Result<SchemaRef> {
    match loc.format {
        DataFormat::Parquet => {
            let (store, path) = open_store(did, &loc.url, options)?;
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
    options: &StorageOptions,
) -> Result<(SchemaRef, BoxStream<'static, Result<RecordBatch>>)> {
    let (store, path) = open_store(did, &loc.url, options)?;
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
