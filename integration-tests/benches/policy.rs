//! What enforcing query constraints adds to planning, measured against planning without
//! them in the same run.
//!
//! `lineitem` gets an aggregate-only policy (entity `l_orderkey`, at least 5 orders per
//! group, its keys and dates as dimensions, `l_comment` blocked); the other TPC-H tables
//! are unconstrained. Each of the 22 queries is planned (`create_logical_plan`: parse,
//! resolve) with and without the policy's check and rewrite. The queries the policy
//! refuses are listed with the rule that fired; for the legal ones the benchmark prints
//! the median planning time of each path, the added time, and the ratio.
//!
//! Run: `cargo bench -p insitu-integration-tests --bench policy`. `INSITU_TPCH_SF` sets
//! the scale factor of the data files (default 0.1; planning reads only their footers).

use std::time::Instant;

use anyhow::Result;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use insitu_flight::ConstrainedPlanner;
use insitu_integration_tests::tpch::{TABLES, data, median, queries};
use insitu_ledger::{AgreementId, Did};
use insitu_policy::QueryConstraints;

const RUNS: usize = 200;

const LINEITEM: &str = r#"
    blocked_columns = ["l_comment"]
    [aggregate]
    functions = ["count", "sum", "avg", "min", "max"]
    dimensions = ["l_orderkey", "l_partkey", "l_suppkey", "l_returnflag", "l_linestatus",
                  "l_shipdate", "l_commitdate", "l_receiptdate", "l_shipmode", "l_shipinstruct",
                  "l_quantity"]
    entity = "l_orderkey"
    min_entities = 5
"#;

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
        .unwrap_or(0.1);
    let dir = data(sf)?;
    let ctx = SessionContext::new();
    let mut planner = ConstrainedPlanner::builder();
    for (i, t) in TABLES.iter().enumerate() {
        let path = dir.join(format!("{t}.parquet"));
        ctx.register_parquet(
            *t,
            path.to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        )
        .await?;
        let schema = ctx.table_provider(*t).await?.schema();
        let constraints = if *t == "lineitem" {
            QueryConstraints::parse(LINEITEM).map_err(anyhow::Error::msg)?
        } else {
            QueryConstraints::default()
        };
        planner = planner.table(
            *t,
            Did(alloy::primitives::B256::with_last_byte(i as u8)),
            AgreementId(alloy::primitives::B256::with_last_byte(i as u8)),
            schema,
            constraints,
        );
    }
    let planner = planner.build();
    let state = ctx.state();

    let mut legal = Vec::new();
    println!("query  plan (µs)  plan+policy (µs)  added (µs)  ratio");
    for (name, sql) in queries()? {
        let plan = state.create_logical_plan(&sql).await?;
        if let Err(e) = planner.check(&sql, &plan) {
            println!("{name}   refused: {e}");
            continue;
        }
        let mut plain = Vec::with_capacity(RUNS);
        let mut policed = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let t = Instant::now();
            let p = state.create_logical_plan(&sql).await?;
            plain.push(t.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box(p);
            let t = Instant::now();
            let p = state.create_logical_plan(&sql).await?;
            planner.check(&sql, &p)?;
            let p = planner.rewrite(p, &state)?;
            policed.push(t.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box(p);
        }
        let (a, b) = (median(plain), median(policed));
        println!(
            "{name}   {a:>9.1}  {b:>16.1}  {:>10.1}  {:.3}",
            b - a,
            b / a
        );
        legal.push((a, b));
    }
    let added = median(legal.iter().map(|(a, b)| b - a).collect());
    let ratio = median(legal.iter().map(|(a, b)| b / a).collect());
    println!(
        "{} of 22 queries legal under the aggregate-only policy; median added planning time {added:.1} µs (target ≤ 1000 µs), median ratio {ratio:.3}",
        legal.len()
    );
    Ok(())
}
