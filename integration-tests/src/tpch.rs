//! TPC-H data (generated once with tpchgen into the target directory) and the 22
//! queries, shared by the benchmarks.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;

pub const TABLES: [&str; 8] = [
    "nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem",
];

fn write<I: Iterator<Item = RecordBatch>>(path: &Path, batches: I) -> Result<()> {
    let mut batches = batches.peekable();
    let schema = batches.peek().map(|b| b.schema()).context("no rows")?;
    let tmp = path.with_extension("partial");
    let mut w = ArrowWriter::try_new(std::fs::File::create(&tmp)?, schema, None)?;
    for b in batches {
        w.write(&b)?;
    }
    w.close()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub fn data(sf: f64) -> Result<PathBuf> {
    use tpchgen::generators::*;
    use tpchgen_arrow::*;
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
        .join(format!("insitu-bench/tpch-sf{sf}"));
    std::fs::create_dir_all(&dir)?;
    let p = |t: &str| dir.join(format!("{t}.parquet"));
    if TABLES.iter().all(|t| p(t).exists()) {
        return Ok(dir);
    }
    eprintln!("generating TPC-H SF{sf} Parquet in {} …", dir.display());
    write(
        &p("nation"),
        NationArrow::new(NationGenerator::new(sf, 1, 1)),
    )?;
    write(
        &p("region"),
        RegionArrow::new(RegionGenerator::new(sf, 1, 1)),
    )?;
    write(&p("part"), PartArrow::new(PartGenerator::new(sf, 1, 1)))?;
    write(
        &p("supplier"),
        SupplierArrow::new(SupplierGenerator::new(sf, 1, 1)),
    )?;
    write(
        &p("partsupp"),
        PartSuppArrow::new(PartSuppGenerator::new(sf, 1, 1)),
    )?;
    write(
        &p("customer"),
        CustomerArrow::new(CustomerGenerator::new(sf, 1, 1)),
    )?;
    write(&p("orders"), OrderArrow::new(OrderGenerator::new(sf, 1, 1)))?;
    write(
        &p("lineitem"),
        LineItemArrow::new(LineItemGenerator::new(sf, 1, 1)),
    )?;
    Ok(dir)
}

pub fn queries() -> Result<Vec<(String, String)>> {
    let dir = crate::workspace_root().join("integration-tests/benches/tpch");
    (1..=22)
        .map(|q| {
            let name = format!("q{q:02}");
            let sql = std::fs::read_to_string(dir.join(format!("{name}.sql")))?;
            Ok((name, sql))
        })
        .collect()
}

/// The median of `v` (the upper one for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
