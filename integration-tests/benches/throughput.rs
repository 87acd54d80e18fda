//! Throughput of a gated `DoGet` against an ungated arrow-flight server streaming the
//! same Parquet file with the same reader and encoder, in the same run, over loopback.
//!
//! The file (≥ 1 GB, uncompressed random numbers) is generated once into the target
//! directory. Each side is measured `RUNS` times after a warm-up, alternating, and the
//! medians are compared. Target: gated ≥ 0.95 × ungated.
//!
//! Run: `cargo bench -p insitu-integration-tests --bench throughput`
//! (`INSITU_BENCH_BYTES` overrides the file size, e.g. for a quick look.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use anyhow::Result;
use arrow::array::{Float64Array, Int64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{FlightClient, FlightData, Ticket};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use insitu_catalog::{DataFormat, StorageLocation};
use insitu_integration_tests::{CONSUMER, Provider, ProviderOptions, World, account, token_for};
use insitu_ledger::{Ledger, ServiceOffer, ServiceType};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use tonic::{Request, Response, Status, Streaming};

const RUNS: usize = 7;
const ROWS_PER_BATCH: usize = 1 << 20;

fn bench_file(bytes: u64) -> Result<PathBuf> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| insitu_integration_tests::workspace_root().join("target"))
        .join("insitu-bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("random-{bytes}.parquet"));
    if path.exists() {
        return Ok(path);
    }
    eprintln!(
        "generating {} MB of Parquet at {} …",
        bytes / 1_000_000,
        path.display()
    );
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("a", DataType::Float64, false),
        Field::new("b", DataType::Int64, false),
        Field::new("c", DataType::Float64, false),
    ]));
    let tmp = path.with_extension("partial");
    let props = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .build();
    let mut w = ArrowWriter::try_new(std::fs::File::create(&tmp)?, schema.clone(), Some(props))?;
    let mut written = 0u64;
    let mut id = 0i64;
    while written < bytes {
        let n = ROWS_PER_BATCH;
        let ids: Vec<i64> = (id..id + n as i64).collect();
        let a: Vec<f64> = (0..n).map(|_| rand::random::<f64>()).collect();
        let b: Vec<i64> = (0..n).map(|_| rand::random::<i64>()).collect();
        let c: Vec<f64> = (0..n).map(|_| rand::random::<f64>()).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(Float64Array::from(a)),
                Arc::new(Int64Array::from(b)),
                Arc::new(Float64Array::from(c)),
            ],
        )?;
        w.write(&batch)?;
        id += n as i64;
        written += (n * 32) as u64;
    }
    w.close()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The baseline: a plain arrow-flight server, no authentication, no policy, no tickets.
#[derive(Clone)]
struct Ungated {
    location: StorageLocation,
}

type S<T> = BoxStream<'static, std::result::Result<T, Status>>;

#[tonic::async_trait]
impl FlightService for Ungated {
    type HandshakeStream = S<arrow_flight::HandshakeResponse>;
    type ListFlightsStream = S<arrow_flight::FlightInfo>;
    type DoGetStream = S<FlightData>;
    type DoPutStream = S<arrow_flight::PutResult>;
    type DoActionStream = S<arrow_flight::Result>;
    type ListActionsStream = S<arrow_flight::ActionType>;
    type DoExchangeStream = S<FlightData>;

    async fn handshake(
        &self,
        _: Request<Streaming<arrow_flight::HandshakeRequest>>,
    ) -> std::result::Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn list_flights(
        &self,
        _: Request<arrow_flight::Criteria>,
    ) -> std::result::Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn get_flight_info(
        &self,
        _: Request<arrow_flight::FlightDescriptor>,
    ) -> std::result::Result<Response<arrow_flight::FlightInfo>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn poll_flight_info(
        &self,
        _: Request<arrow_flight::FlightDescriptor>,
    ) -> std::result::Result<Response<arrow_flight::PollInfo>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn get_schema(
        &self,
        _: Request<arrow_flight::FlightDescriptor>,
    ) -> std::result::Result<Response<arrow_flight::SchemaResult>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn do_get(
        &self,
        _: Request<Ticket>,
    ) -> std::result::Result<Response<Self::DoGetStream>, Status> {
        let (schema, batches) =
            insitu_flight::open_batches("baseline", &self.location, &Default::default())
                .await
                .map_err(Status::from)?;
        let batches =
            batches.map_err(|e| arrow_flight::error::FlightError::from_external_error(Box::new(e)));
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(2 * 1024 * 1024)
            .build(batches)
            .map_err(|e| Status::internal(e.to_string()))
            .boxed();
        Ok(Response::new(stream))
    }
    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn do_action(
        &self,
        _: Request<arrow_flight::Action>,
    ) -> std::result::Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn list_actions(
        &self,
        _: Request<arrow_flight::Empty>,
    ) -> std::result::Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
}

async fn client(endpoint: &str, token: Option<&str>) -> Result<FlightClient> {
    let channel = tonic::transport::Channel::from_shared(endpoint.to_string())?
        .connect()
        .await?;
    let inner = arrow_flight::flight_service_client::FlightServiceClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024);
    let mut c = FlightClient::new_from_inner(inner);
    if let Some(t) = token {
        c.add_header("authorization", &format!("Bearer {t}"))?;
    }
    Ok(c)
}

/// Streams everything once, returning (rows, payload bytes, elapsed).
async fn drain(c: &mut FlightClient, ticket: Ticket) -> Result<(usize, usize, Duration)> {
    let start = Instant::now();
    let mut stream = c.do_get(ticket).await?;
    let (mut rows, mut bytes) = (0usize, 0usize);
    while let Some(batch) = stream.try_next().await? {
        rows += batch.num_rows();
        // Buffer bytes of the batch's own slices (decoded batches share message buffers,
        // so get_array_memory_size would count them several times).
        bytes += batch
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
            .sum::<usize>();
    }
    Ok((rows, bytes, start.elapsed()))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<()> {
    let bytes: u64 = std::env::var("INSITU_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_100_000_000);
    let path = bench_file(bytes)?;
    let file_size = std::fs::metadata(&path)?.len();

    // Gated: a real provider on anvil, with a fulfilled agreement.
    let world = World::start().await?;
    let provider = Provider::start(&world, ProviderOptions::default()).await?;
    let did = provider
        .publish(
            &path,
            "bench",
            ServiceOffer {
                service_type: ServiceType::Download,
                token: None,
                price: U256::ZERO,
                access_duration: 86_400,
                fulfill_timeout: 3600,
            },
        )
        .await?;
    let agreement = world
        .ledger(CONSUMER)
        .await?
        .order(did, 0)
        .await?
        .agreement_id;
    let token = token_for(&world, &account(CONSUMER), provider.address)?;
    let mut gated = client(&provider.endpoint, Some(&token)).await?;

    // Ungated baseline on its own port, same file, same reader and encoder.
    let location = StorageLocation {
        url: url_of(&path)?,
        format: DataFormat::Parquet,
        schema_ipc: Vec::new(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base_endpoint = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(FlightServiceServer::new(Ungated { location }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    let mut ungated = client(&base_endpoint, None).await?;

    // Warm-up: page cache, connection, and the first-use fulfil.
    let t = provider_info(&mut gated, did, agreement).await?;
    let (rows, payload, _) = drain(&mut gated, t).await?;
    drain(&mut ungated, Ticket::new("x")).await?;

    let (mut g, mut u) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        // Each gated run includes GetFlightInfo (the grant check and ticket issue) and DoGet.
        let start = Instant::now();
        let t = provider_info(&mut gated, did, agreement).await?;
        let (r, _, _) = drain(&mut gated, t).await?;
        g.push(start.elapsed());
        assert_eq!(r, rows);
        let (r, _, d) = drain(&mut ungated, Ticket::new("x")).await?;
        u.push(d);
        assert_eq!(r, rows);
    }
    let (gm, um) = (median(g), median(u));
    let mbps = |d: Duration| payload as f64 / 1e6 / d.as_secs_f64();
    println!(
        "gated DoGet vs ungated arrow-flight, same file and encoder, loopback, {RUNS} runs, medians"
    );
    println!(
        "file: {:.2} GB on disk, {rows} rows, {:.2} GB in Arrow",
        file_size as f64 / 1e9,
        payload as f64 / 1e9
    );
    println!(
        "ungated: {:>8.3} s  {:>8.1} MB/s",
        um.as_secs_f64(),
        mbps(um)
    );
    println!(
        "gated:   {:>8.3} s  {:>8.1} MB/s",
        gm.as_secs_f64(),
        mbps(gm)
    );
    let ratio = um.as_secs_f64() / gm.as_secs_f64();
    println!(
        "ratio gated/ungated throughput: {ratio:.3} (target >= 0.95: {})",
        if ratio >= 0.95 { "met" } else { "MISSED" }
    );
    Ok(())
}

fn url_of(path: &Path) -> Result<String> {
    let abs = std::fs::canonicalize(path)?;
    Ok(format!("file://{}", abs.display()))
}

async fn provider_info(
    c: &mut FlightClient,
    did: insitu_ledger::Did,
    agreement: insitu_ledger::AgreementId,
) -> Result<Ticket> {
    let info = c
        .get_flight_info(insitu_flight::AssetRequest { did, agreement }.to_descriptor())
        .await?;
    info.endpoint
        .first()
        .and_then(|e| e.ticket.clone())
        .ok_or_else(|| anyhow::anyhow!("no ticket"))
}
