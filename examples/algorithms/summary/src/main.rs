//! An example compute algorithm for insitu: per-column summary statistics.
//!
//! In the sandbox it reads `/data/manifest.json` and the Arrow IPC files it lists, and
//! writes `/out/summary.csv`: one row per input column with its count, nulls, and for
//! numeric columns min, max, mean and standard deviation. Only aggregates leave; no
//! row of the input is copied to the output.
//!
//! Built natively, the same code runs outside the sandbox with `--data DIR --out DIR`;
//! the benchmark compares the two on one input.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use serde::Deserialize;

#[derive(Deserialize)]
struct Manifest {
    inputs: Vec<Input>,
}

#[derive(Deserialize)]
struct Input {
    name: String,
    path: String,
}

/// Running statistics of one column (Welford's algorithm for the variance).
#[derive(Default, Clone)]
struct Stats {
    count: u64,
    nulls: u64,
    numeric: bool,
    n: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn add(&mut self, x: f64) {
        if self.n == 0 {
            self.min = x;
            self.max = x;
        }
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }
}

/// The integer and floating-point types; decimals and the rest are counted only.
fn is_numeric(t: &DataType) -> bool {
    use DataType::*;
    matches!(
        t,
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float32 | Float64
    )
}

/// Feeds every non-null value of a numeric column to `s`.
fn add_values(s: &mut Stats, column: &ArrayRef) {
    macro_rules! feed {
        ($t:ty) => {
            for x in column.as_primitive::<$t>().iter().flatten() {
                s.add(x as f64);
            }
        };
    }
    match column.data_type() {
        DataType::Int8 => feed!(Int8Type),
        DataType::Int16 => feed!(Int16Type),
        DataType::Int32 => feed!(Int32Type),
        DataType::Int64 => feed!(Int64Type),
        DataType::UInt8 => feed!(UInt8Type),
        DataType::UInt16 => feed!(UInt16Type),
        DataType::UInt32 => feed!(UInt32Type),
        DataType::UInt64 => feed!(UInt64Type),
        DataType::Float32 => feed!(Float32Type),
        DataType::Float64 => feed!(Float64Type),
        _ => {}
    }
}

fn args() -> (PathBuf, PathBuf) {
    let mut data = PathBuf::from("/data");
    let mut out = PathBuf::from("/out");
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--data" => data = it.next().map(PathBuf::from).unwrap_or(data),
            "--out" => out = it.next().map(PathBuf::from).unwrap_or(out),
            _ => {}
        }
    }
    (data, out)
}

/// A guest path from the manifest (`/data/input.arrow`) under the real data directory.
fn local(data: &Path, guest: &str) -> PathBuf {
    match guest.strip_prefix("/data/") {
        Some(rest) => data.join(rest),
        None => PathBuf::from(guest),
    }
}

fn run() -> Result<(), String> {
    let (data, out) = args();
    let manifest: Manifest = serde_json::from_reader(BufReader::new(
        File::open(data.join("manifest.json")).map_err(|e| format!("manifest.json: {e}"))?,
    ))
    .map_err(|e| format!("manifest.json: {e}"))?;
    let mut csv = BufWriter::new(
        File::create(out.join("summary.csv")).map_err(|e| format!("summary.csv: {e}"))?,
    );
    writeln!(
        csv,
        "input,column,data_type,count,nulls,min,max,mean,stddev"
    )
    .map_err(|e| e.to_string())?;
    for input in &manifest.inputs {
        let file =
            File::open(local(&data, &input.path)).map_err(|e| format!("{}: {e}", input.path))?;
        let reader = arrow_ipc::reader::FileReader::try_new(BufReader::new(file), None)
            .map_err(|e| format!("{}: {e}", input.path))?;
        let schema = reader.schema();
        let mut stats: Vec<Stats> = schema
            .fields()
            .iter()
            .map(|f| Stats {
                numeric: is_numeric(f.data_type()),
                ..Stats::default()
            })
            .collect();
        let mut rows = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| format!("{}: {e}", input.path))?;
            rows += batch.num_rows() as u64;
            for (i, column) in batch.columns().iter().enumerate() {
                let s = &mut stats[i];
                s.count += column.len() as u64;
                s.nulls += column.null_count() as u64;
                if s.numeric {
                    add_values(s, column);
                }
            }
        }
        for (field, s) in schema.fields().iter().zip(&stats) {
            let (min, max, mean, sd) = if s.numeric && s.n > 0 {
                let var = if s.n > 1 {
                    s.m2 / (s.n - 1) as f64
                } else {
                    0.0
                };
                (
                    s.min.to_string(),
                    s.max.to_string(),
                    s.mean.to_string(),
                    var.sqrt().to_string(),
                )
            } else {
                Default::default()
            };
            writeln!(
                csv,
                "{},{},{},{},{},{min},{max},{mean},{sd}",
                quote(&input.name),
                quote(field.name()),
                quote(&field.data_type().to_string()),
                s.count,
                s.nulls
            )
            .map_err(|e| e.to_string())?;
        }
        println!("summarised {} rows of {}", rows, input.name);
    }
    csv.flush().map_err(|e| e.to_string())
}

/// CSV quoting: always quoted, quotes doubled.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("summary: {e}");
        std::process::exit(1);
    }
}
