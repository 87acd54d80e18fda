//! TPC-H through Flight SQL, measured against what a user would otherwise run, in the
//! same run on the same Parquet files:
//!
//! - **insitu**: the 22 queries through ADBC (Python, `adbc-driver-flightsql`) against a
//!   gated provider on loopback: token checked, agreements checked (cached), a session
//!   built per request, results streamed as Arrow;
//! - **baseline**: the same queries in-process in DataFusion (default configuration);
//! - **DuckDB** (Python `duckdb`) on the same files, as the engine a user would pick.
//!
//! Each query runs `RUNS` times per engine; the median counts. Row counts must agree.
//! It also measures time to first row of `SELECT 1` through ADBC against the gated
//! server and against an ungated Flight SQL server (a bare DataFusion session behind
//! arrow-flight's `FlightSqlService`, in this file), on one open connection each.
//!
//! Run: `cargo bench -p insitu-integration-tests --bench tpch` (needs the Python venv of
//! `scripts/test.sh`). `INSITU_TPCH_SF` sets the scale factor (default 1); the data is
//! generated once with tpchgen into the target directory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::{StreamExt, TryStreamExt};
use insitu_integration_tests::tpch::{TABLES, data, median, queries};
use insitu_integration_tests::{CONSUMER, Provider, ProviderOptions, World, account};
use insitu_ledger::{Ledger, ServiceOffer, ServiceType};
use prost::Message;
use tonic::{Request, Response, Status};

const RUNS: usize = 3;
/// An ungated Flight SQL server: one shared DataFusion session, no token, no policy.
#[derive(Clone)]
struct Ungated {
    ctx: SessionContext,
}

#[tonic::async_trait]
impl FlightSqlService for Ungated {
    type FlightService = Ungated;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let df = self
            .ctx
            .sql(&query.query)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let schema = df.schema().as_arrow().clone();
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(
                FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())),
            )
            .with_descriptor(request.into_inner());
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let df = self
            .ctx
            .sql(&sql)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let stream = df
            .execute_stream()
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| arrow_flight::error::FlightError::ExternalError(Box::new(e)));
        let out = FlightDataEncoderBuilder::new()
            .build(stream)
            .map_err(|e| Status::internal(e.to_string()));
        Ok(Response::new(Box::pin(out)))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

async fn baseline(ctx: &SessionContext, sql: &str) -> Result<(f64, usize)> {
    let start = Instant::now();
    let batches = ctx.sql(sql).await?.collect().await?;
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    Ok((start.elapsed().as_secs_f64(), rows))
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<()> {
    let sf: f64 = std::env::var("INSITU_TPCH_SF")
        .ok()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1.0);
    let dir = data(sf)?;
    let queries = queries()?;

    // In-process DataFusion, default configuration.
    let ctx = SessionContext::new();
    for t in TABLES {
        let path = dir.join(format!("{t}.parquet"));
        ctx.register_parquet(
            t,
            path.to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        )
        .await?;
    }
    let mut base: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for (name, sql) in &queries {
        baseline(&ctx, sql).await?; // warm-up: file metadata and page cache
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..RUNS {
            let (t, r) = baseline(&ctx, sql).await?;
            times.push(t);
            rows = r;
        }
        base.insert(name.clone(), (median(times), rows));
    }

    // The gated provider, with each table a query asset and one agreement per table.
    let world = World::start().await?;
    let provider = Provider::start(
        &world,
        ProviderOptions {
            query_limits: Some(insitu_flight::QueryLimits {
                memory_bytes: 16 << 30,
                timeout: Duration::from_secs(3600),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await?;
    let offer = ServiceOffer {
        service_type: ServiceType::Query,
        token: None,
        price: alloy::primitives::U256::ZERO,
        access_duration: 86_400,
        fulfill_timeout: 600,
    };
    let consumer = world.ledger(CONSUMER).await?;
    let mut agreements = Vec::new();
    for t in TABLES {
        let did = provider
            .publish(&dir.join(format!("{t}.parquet")), t, offer.clone())
            .await?;
        agreements.push(consumer.order(did, 0).await?.agreement_id);
    }
    let token = insitu_integration_tests::token_with_scope(
        &world,
        &account(CONSUMER),
        provider.address,
        &insitu_flight::query_scope(&agreements),
    )?;

    // The ungated server over the same files.
    let ungated = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ungated_endpoint = format!("http://{}", ungated.local_addr()?);
    let service = FlightServiceServer::new(Ungated { ctx: ctx.clone() });
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(ungated).map(
                |conn| {
                    conn.inspect(|stream| {
                        let _ = stream.set_nodelay(true);
                    })
                },
            ))
            .await;
    });

    let python = insitu_integration_tests::python()?;
    let script =
        insitu_integration_tests::workspace_root().join("integration-tests/python/tpch_bench.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .args([
            provider.endpoint.as_str(),
            token.as_str(),
            ungated_endpoint.as_str(),
            &dir.to_string_lossy(),
            &RUNS.to_string(),
        ])
        .arg(insitu_integration_tests::workspace_root().join("integration-tests/benches/tpch"))
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "tpch_bench.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;

    println!("TPC-H SF{sf}, median of {RUNS} runs per query, seconds");
    println!(
        "{:<5} {:>10} {:>10} {:>7} {:>10} {:>7}",
        "query", "datafusion", "insitu", "ratio", "duckdb", "rows"
    );
    let (mut total_base, mut total_insitu, mut total_duck) = (0.0, 0.0, 0.0);
    for (name, (t_base, rows)) in &base {
        let t_insitu = report["insitu"][name]["median"]
            .as_f64()
            .context("insitu time")?;
        let t_duck = report["duckdb"][name]["median"]
            .as_f64()
            .context("duckdb time")?;
        let rows_insitu = report["insitu"][name]["rows"].as_u64().context("rows")? as usize;
        let rows_duck = report["duckdb"][name]["rows"].as_u64().context("rows")? as usize;
        if rows_insitu != *rows || rows_duck != *rows {
            bail!(
                "{name}: row counts differ: datafusion {rows}, insitu {rows_insitu}, duckdb {rows_duck}"
            );
        }
        total_base += t_base;
        total_insitu += t_insitu;
        total_duck += t_duck;
        println!(
            "{name:<5} {t_base:>10.3} {t_insitu:>10.3} {:>6.2}x {t_duck:>10.3} {rows:>7}",
            t_insitu / t_base
        );
    }
    println!(
        "total {total_base:>10.3} {total_insitu:>10.3} {:>6.2}x {total_duck:>10.3}",
        total_insitu / total_base
    );
    println!(
        "ratio insitu (ADBC, gated) / in-process DataFusion = {:.3} (target <= 1.15); DuckDB / in-process DataFusion = {:.3}",
        total_insitu / total_base,
        total_duck / total_base
    );
    let gated = report["ttfr"]["gated_ms"].as_f64().context("ttfr")?;
    let plain = report["ttfr"]["ungated_ms"].as_f64().context("ttfr")?;
    println!(
        "time to first row of SELECT 1 over ADBC (median of {} calls): gated {gated:.2} ms, ungated {plain:.2} ms, ratio {:.2}",
        report["ttfr"]["calls"],
        gated / plain
    );
    Ok(())
}
