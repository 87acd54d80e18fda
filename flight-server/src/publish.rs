//! Publishing a file as an asset: inspect it, describe it, record it in the catalog,
//! register it on chain. The order is chosen so nothing is lost or half-done silently:
//! the file is checked before anything is written, the catalog row exists before the
//! chain transaction (so a registered DID always has a location), and a failed
//! registration removes the row again.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use alloy::primitives::{Address, B256};
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::{IpcMessage, SchemaAsIpc};
use insitu_catalog::{AssetStore, Column, DataFormat, Ddo, DdoService, StorageLocation};
use insitu_ledger::{Did, Ledger, RegisterAsset, ServiceOffer, TxOutcome};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use futures::StreamExt;
use object_store::ObjectStoreExt;

use crate::error::{FlightError, Result};
use crate::source::{StorageOptions, open_store};

/// What inspecting a data file found.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub path: PathBuf,
    pub format: DataFormat,
    pub schema: SchemaRef,
    pub rows: u64,
    pub bytes: u64,
}

fn invalid(msg: impl Into<String>) -> FlightError {
    FlightError::InvalidRequest(msg.into())
}

/// Reads a file's schema and row count without loading its data (Parquet: the footer;
/// CSV: a sample for the schema and a streaming line count).
pub fn inspect_file(path: &Path) -> Result<FileInfo> {
    let meta = std::fs::metadata(path).map_err(|e| {
        invalid(format!(
            "cannot read {}: {e}; check the path (nothing was published)",
            path.display()
        ))
    })?;
    if !meta.is_file() {
        return Err(invalid(format!("{} is not a file", path.display())));
    }
    let name = path.to_string_lossy();
    let format = DataFormat::from_path(&name).ok_or_else(|| {
        invalid(format!(
            "{} has an unsupported extension; publish .parquet or .csv files",
            path.display()
        ))
    })?;
    let open =
        || File::open(path).map_err(|e| invalid(format!("cannot open {}: {e}", path.display())));
    let (schema, rows) = match format {
        DataFormat::Parquet => {
            let builder = ParquetRecordBatchReaderBuilder::try_new(open()?).map_err(|e| {
                invalid(format!(
                    "{} is not a readable Parquet file: {e}",
                    path.display()
                ))
            })?;
            let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
            (builder.schema().clone(), rows)
        }
        DataFormat::Csv => {
            let mut file = open()?;
            let (schema, _) = arrow::csv::reader::Format::default()
                .with_header(true)
                .infer_schema(&mut file, Some(10_000))
                .map_err(|e| {
                    invalid(format!(
                        "{} is not a readable CSV file: {e}",
                        path.display()
                    ))
                })?;
            if schema.fields().is_empty() {
                return Err(invalid(format!("{} has no columns", path.display())));
            }
            file.rewind()
                .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
            let mut lines = 0u64;
            for line in BufReader::new(file).lines() {
                let line =
                    line.map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
                if !line.trim().is_empty() {
                    lines += 1;
                }
            }
            (Arc::new(schema), lines.saturating_sub(1))
        }
    };
    Ok(FileInfo {
        path: path.to_path_buf(),
        format,
        schema,
        rows,
        bytes: meta.len(),
    })
}

/// IPC-encodes a schema, as stored with CSV locations and sent in FlightInfo.
pub fn schema_to_ipc(schema: &Schema) -> Result<Vec<u8>> {
    let options = arrow::ipc::writer::IpcWriteOptions::default();
    let msg: IpcMessage = SchemaAsIpc::new(schema, &options)
        .try_into()
        .map_err(|e: arrow::error::ArrowError| FlightError::Internal(e.to_string()))?;
    Ok(msg.0.to_vec())
}

/// What to publish.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub file: PathBuf,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub services: Vec<ServiceOffer>,
    /// Providers allowed to serve and fulfil; defaults to the publisher.
    pub providers: Vec<Address>,
    /// Where consumers read the public metadata (the provider's endpoint).
    pub metadata_url: String,
    /// Constraints for the query services among `services` (provider-private).
    pub constraints: Option<insitu_policy::QueryConstraints>,
}

/// A published asset.
#[derive(Debug, Clone)]
pub struct Published {
    pub did: Did,
    pub ddo: Ddo,
    pub tx: TxOutcome,
}

/// Replaces the constraints of query service `service_index` of an asset this provider
/// serves, after checking them against the asset's schema. Constraints are private to
/// the provider, so no chain transaction is needed; new sessions use them at once.
pub async fn set_constraints(
    catalog: &AssetStore,
    did: Did,
    service_index: u64,
    constraints: &insitu_policy::QueryConstraints,
) -> Result<()> {
    let asset = catalog
        .get(did)
        .await
        .map_err(|e| FlightError::Internal(e.to_string()))?
        .ok_or_else(|| FlightError::UnknownAsset(did.to_string()))?;
    let service = asset
        .ddo
        .services
        .iter()
        .find(|s| s.index == service_index)
        .ok_or_else(|| invalid(format!("asset {did} has no service {service_index}")))?;
    if service.offer.service_type != insitu_ledger::ServiceType::Query {
        return Err(invalid(format!(
            "service {service_index} of {did} is a {} service; constraints govern query services",
            service.offer.service_type
        )));
    }
    let location = catalog
        .location(did)
        .await
        .map_err(|e| FlightError::Internal(e.to_string()))?
        .ok_or_else(|| FlightError::UnknownAsset(did.to_string()))?;
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(&location.schema_ipc)
        .map_err(|e| FlightError::Internal(format!("stored schema: {e}")))?;
    crate::sql::validate_constraints(constraints, &schema)?;
    let json = constraints
        .to_json()
        .map_err(|e| invalid(format!("constraints: {e}")))?;
    catalog
        .set_constraints(did, service_index, &json)
        .await
        .map_err(|e| FlightError::Internal(e.to_string()))
}

/// A change to the public metadata of an asset; fields left `None` keep their value.
#[derive(Debug, Clone, Default)]
pub struct MetadataUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
}

/// An updated asset.
#[derive(Debug, Clone)]
pub struct Updated {
    pub ddo: Ddo,
    pub version: i64,
    pub tx: TxOutcome,
}

/// Updates the public metadata of an asset owned by the ledger's account: the new
/// hash goes on chain first (the registry accepts it only from the owner), then the
/// catalog records the new version, reindexes it and queues its DatasetEvent (ALTER).
/// If the catalog write fails after the chain accepted the hash, running the same
/// update again puts the same hash on chain and completes it.
pub async fn update_asset(
    ledger: &dyn Ledger,
    catalog: &AssetStore,
    did: Did,
    update: MetadataUpdate,
) -> Result<Updated> {
    let stored = catalog
        .get(did)
        .await
        .map_err(|e| FlightError::Internal(e.to_string()))?
        .filter(|a| a.registered)
        .ok_or_else(|| FlightError::UnknownAsset(did.to_string()))?;
    if stored.ddo.owner != ledger.account() {
        return Err(invalid(format!(
            "asset {did} is owned by {:#x}; only its owner can change its metadata (this key is {:#x})",
            stored.ddo.owner,
            ledger.account()
        )));
    }
    let mut ddo = stored.ddo.clone();
    if let Some(name) = update.name {
        ddo.name = name;
    }
    if let Some(description) = update.description {
        ddo.description = description;
    }
    if let Some(tags) = update.tags {
        ddo.tags = tags;
    }
    if ddo == stored.ddo {
        return Err(invalid(format!(
            "the update changes nothing in the metadata of {did}"
        )));
    }
    ddo.validate().map_err(|e| invalid(e.to_string()))?;
    let hash = ddo.metadata_hash().map_err(|e| invalid(e.to_string()))?;
    let record = ledger
        .asset(did)
        .await
        .map_err(|e| FlightError::Unavailable(format!("reading asset {did} on chain: {e}")))?
        .ok_or_else(|| invalid(format!("asset {did} is not registered on this chain")))?;
    let tx = ledger
        .set_metadata(did, hash, record.metadata_url)
        .await
        .map_err(|e| {
            invalid(format!(
                "updating the metadata hash of {did} on chain failed, nothing changed: {e}"
            ))
        })?;
    let version = catalog.update(&ddo).await.map_err(|e| {
        FlightError::Internal(format!(
            "the chain holds the new metadata hash of {did} but the catalog could not record it \
             ({e}); run the same update again to complete it"
        ))
    })?;
    Ok(Updated { ddo, version, tx })
}

/// Inspects a local file off the async runtime and returns its `file://` URL.
async fn inspect_local(file: PathBuf) -> Result<(url::Url, FileInfo)> {
    let info = tokio::task::spawn_blocking(move || inspect_file(&file))
        .await
        .map_err(|e| FlightError::Internal(e.to_string()))??;
    let absolute = std::fs::canonicalize(&info.path)
        .map_err(|e| invalid(format!("cannot resolve {}: {e}", info.path.display())))?;
    let url = url::Url::from_file_path(&absolute)
        .map_err(|_| invalid(format!("cannot make a file URL of {}", absolute.display())))?;
    Ok((url, info))
}

/// Publishes `req.file` (a local file) as a new asset owned by the ledger's account.
pub async fn publish_asset(
    ledger: &dyn Ledger,
    catalog: &AssetStore,
    req: PublishRequest,
) -> Result<Published> {
    publish_local(ledger, catalog, req, None).await
}

/// Publishes `req.file` as a new asset owned by `owner` and served to `owner` only: how
/// a compute job's output becomes the consumer's asset. The provider registers it on
/// chain with `registerFor` (the owner signs nothing and pays no gas), stays its only
/// provider, and records the private audience before the asset is marked registered,
/// so there is no moment at which another consumer could be served it.
pub async fn publish_result(
    ledger: &dyn Ledger,
    catalog: &AssetStore,
    req: PublishRequest,
    owner: Address,
) -> Result<Published> {
    publish_local(ledger, catalog, req, Some(owner)).await
}

/// Inspects the local file `req.file` and registers it, for the ledger's account or on
/// behalf of `owner`.
async fn publish_local(
    ledger: &dyn Ledger,
    catalog: &AssetStore,
    req: PublishRequest,
    owner: Option<Address>,
) -> Result<Published> {
    let (url, info) = inspect_local(req.file.clone()).await?;
    register(
        ledger,
        catalog,
        req,
        url.to_string(),
        info.format,
        info.schema,
        Some(info.rows),
        info.bytes,
        owner,
    )
    .await
}

/// Publishes an object that already lives in an object store (`s3://bucket/key.parquet`,
/// `gs://…`, `az://…`, or `file:///…`), read with `options`. `req.file` is ignored. The
/// object is inspected through object_store: the Parquet footer, or for CSV the first
/// MiB for the schema and a streaming line count.
pub async fn publish_object(
    ledger: &dyn Ledger,
    catalog: &AssetStore,
    url: &str,
    options: &StorageOptions,
    req: PublishRequest,
) -> Result<Published> {
    let parsed = url::Url::parse(url)
        .map_err(|_| invalid("the object URL is not a valid URL; nothing was published"))?;
    let format = DataFormat::from_path(parsed.path()).ok_or_else(|| {
        invalid(format!(
            "{} has an unsupported extension; publish .parquet or .csv objects",
            redact_location(url)
        ))
    })?;
    let (store, path) = open_store("(new asset)", url, options)
        .map_err(|_| invalid(format!("cannot open {} (check the URL, the storage options and the `cloud` feature); nothing was published", redact_location(url))))?;
    let meta = store.head(&path).await.map_err(|e| {
        invalid(format!(
            "cannot read {}: {e}; nothing was published",
            redact_location(url)
        ))
    })?;
    let unreadable = |e: &dyn std::fmt::Display| {
        invalid(format!(
            "{} is not a readable {} object: {e}",
            redact_location(url),
            format.as_str()
        ))
    };
    let (schema, rows) = match format {
        DataFormat::Parquet => {
            #[allow(deprecated)]
            let reader = parquet::arrow::async_reader::ParquetObjectReader::new(store, path)
                .with_file_size(meta.size);
            let builder = parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .map_err(|e| unreadable(&e))?;
            let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
            (builder.schema().clone(), rows)
        }
        DataFormat::Csv => {
            let head = store
                .get_range(&path, 0..meta.size.min(1 << 20))
                .await
                .map_err(|e| unreadable(&e))?;
            // Infer from whole lines only.
            let cut = head
                .iter()
                .rposition(|b| *b == b'\n')
                .map(|i| i + 1)
                .unwrap_or(head.len());
            let (schema, _) = arrow::csv::reader::Format::default()
                .with_header(true)
                .infer_schema(std::io::Cursor::new(&head[..cut]), Some(10_000))
                .map_err(|e| unreadable(&e))?;
            if schema.fields().is_empty() {
                return Err(invalid(format!("{} has no columns", redact_location(url))));
            }
            let mut lines = 0u64;
            let mut last = b'\n';
            let mut stream = store
                .get(&path)
                .await
                .map_err(|e| unreadable(&e))?
                .into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| unreadable(&e))?;
                lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
                if let Some(b) = chunk.last() {
                    last = *b;
                }
            }
            if last != b'\n' {
                lines += 1;
            }
            (Arc::new(schema), lines.saturating_sub(1))
        }
    };
    register(
        ledger,
        catalog,
        req,
        url.to_string(),
        format,
        schema,
        Some(rows),
        meta.size,
        None,
    )
    .await
}

/// Object URLs may carry credentials in their query; errors show scheme, host and path only.
fn redact_location(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.path()
        ),
        Err(_) => "<invalid URL>".into(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn register(
    ledger: &dyn Ledger,
    catalog: &AssetStore,
    req: PublishRequest,
    location_url: String,
    format: DataFormat,
    schema: SchemaRef,
    rows: Option<u64>,
    bytes: u64,
    on_behalf_of: Option<Address>,
) -> Result<Published> {
    let owner = on_behalf_of.unwrap_or_else(|| ledger.account());
    let seed = B256::from(rand::random::<[u8; 32]>());
    let did = Did::derive(owner, seed);
    let providers = if on_behalf_of.is_some() || req.providers.is_empty() {
        vec![ledger.account()]
    } else {
        req.providers.clone()
    };
    let ddo = Ddo {
        did,
        chain_id: ledger.chain_id(),
        owner,
        provider: providers[0],
        name: req.name,
        description: req.description,
        tags: req.tags,
        format,
        schema: schema
            .fields()
            .iter()
            .map(|f| Column {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
            })
            .collect(),
        row_count: rows,
        byte_size: Some(bytes),
        services: req
            .services
            .iter()
            .enumerate()
            .map(|(i, offer)| DdoService {
                index: i as u64,
                offer: offer.clone(),
            })
            .collect(),
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    ddo.validate().map_err(|e| invalid(e.to_string()))?;
    let metadata_hash = ddo.metadata_hash().map_err(|e| invalid(e.to_string()))?;
    let constraints = match &req.constraints {
        Some(c) => {
            crate::sql::validate_constraints(c, &schema)?;
            Some(
                c.to_json()
                    .map_err(|e| invalid(format!("constraints: {e}")))?,
            )
        }
        None => None,
    };
    let location = StorageLocation {
        url: location_url,
        format,
        schema_ipc: schema_to_ipc(&schema)?,
    };
    catalog
        .insert(&ddo, &location)
        .await
        .map_err(|e| FlightError::Internal(e.to_string()))?;
    if let Some(json) = &constraints {
        for (i, offer) in req.services.iter().enumerate() {
            if offer.service_type != insitu_ledger::ServiceType::Query {
                continue;
            }
            if let Err(e) = catalog.set_constraints(did, i as u64, json).await {
                if let Err(cleanup) = catalog.remove(did).await {
                    tracing::error!(%did, error = %cleanup, "could not remove the unpublished asset");
                }
                return Err(FlightError::Internal(format!("storing constraints: {e}")));
            }
        }
    }
    if let Some(owner) = on_behalf_of
        && let Err(e) = catalog.set_audience(did, &[owner]).await
    {
        if let Err(cleanup) = catalog.remove(did).await {
            tracing::error!(%did, error = %cleanup, "could not remove the unpublished asset");
        }
        return Err(FlightError::Internal(format!("storing the audience: {e}")));
    }
    let asset = RegisterAsset {
        seed,
        metadata_hash,
        metadata_url: req.metadata_url,
        providers,
        services: req.services,
    };
    let registered = match on_behalf_of {
        Some(owner) => ledger.register_asset_for(owner, asset).await,
        None => ledger.register_asset(asset).await,
    };
    let (chain_did, tx) = match registered {
        Ok(ok) => ok,
        Err(e) => {
            if let Err(cleanup) = catalog.remove(did).await {
                tracing::error!(%did, error = %cleanup, "could not remove the unregistered asset from the catalog");
            }
            return Err(FlightError::InvalidRequest(format!(
                "registering the asset on chain failed, nothing was published: {e}"
            )));
        }
    };
    if chain_did != did {
        return Err(FlightError::Internal(format!(
            "the chain assigned {chain_did}, expected {did}"
        )));
    }
    catalog
        .mark_registered(did)
        .await
        .map_err(|e| FlightError::Internal(e.to_string()))?;
    Ok(Published { did, ddo, tx })
}
