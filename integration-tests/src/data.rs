//! Deterministic sample data written to Parquet and CSV, so tests can check that a
//! consumer receives exactly the rows that were published.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use arrow::array::{Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;

/// `rows` rows of (id, name, amount), split into batches of at most 10,000.
pub fn sample_batches(rows: usize) -> Result<Vec<RecordBatch>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows {
        let end = (start + 10_000).min(rows);
        let ids: Vec<i64> = (start as i64..end as i64).collect();
        let names: Vec<String> = ids.iter().map(|i| format!("customer-{i}")).collect();
        let amounts: Vec<f64> = ids.iter().map(|i| (*i as f64) * 1.5).collect();
        out.push(RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
                Arc::new(Float64Array::from(amounts)),
            ],
        )?);
        start = end;
    }
    Ok(out)
}

pub fn write_parquet(path: &Path, batches: &[RecordBatch]) -> Result<()> {
    let file = std::fs::File::create(path)?;
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| anyhow::anyhow!("no batches"))?;
    let mut w = ArrowWriter::try_new(file, schema, None)?;
    for b in batches {
        w.write(b)?;
    }
    w.close()?;
    Ok(())
}

pub fn write_csv(path: &Path, batches: &[RecordBatch]) -> Result<()> {
    let file = std::fs::File::create(path)?;
    let mut w = arrow::csv::Writer::new(file);
    for b in batches {
        w.write(b)?;
    }
    Ok(())
}

/// Total rows and the sum of the `id` column, as a cheap content check.
pub fn fingerprint(batches: &[RecordBatch]) -> (usize, i64) {
    let mut rows = 0;
    let mut sum = 0i64;
    for b in batches {
        rows += b.num_rows();
        if let Some(ids) = b
            .column_by_name("id")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        {
            sum += ids.values().iter().sum::<i64>();
        }
    }
    (rows, sum)
}

/// Rows in [`people_batch`].
pub const PEOPLE: usize = 200;

/// The region of person `i`: north 80, south 80, east 35, west 5 (a group too small to
/// show under any sensible threshold).
pub fn region_of(i: i64) -> &'static str {
    match i {
        0..80 => "north",
        80..160 => "south",
        160..195 => "east",
        _ => "west",
    }
}

/// People with an identifier, a name, an e-mail (the join key), two dimensions and an
/// income: what a provider sells answers about, not rows of.
pub fn people_batch() -> Result<RecordBatch> {
    let ids: Vec<i64> = (0..PEOPLE as i64).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("email", DataType::Utf8, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("age", DataType::Int64, false),
        Field::new("income", DataType::Float64, false),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("person-{i}")),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("p{i}@example.org")),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| region_of(*i)),
            )),
            Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|i| 20 + i % 50),
            )),
            Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|i| 1000.0 * (*i as f64)),
            )),
        ],
    )?)
}

/// Copies one of scikit-learn's bundled CSVs of `../shared/data/sklearn/`
/// (`breast_cancer.csv`, `wine_data.csv`: a first line `n_samples,n_features,classes…`,
/// then numeric rows with the label last) to `dest` as a plain CSV with a header
/// (`f0,…,f<n-1>,label`). Returns (rows, features).
pub fn sklearn_table(file: &str, dest: &Path) -> Result<(usize, usize)> {
    let src = crate::workspace_root()
        .join("../shared/data/sklearn")
        .join(file);
    let text =
        std::fs::read_to_string(&src).map_err(|e| anyhow::anyhow!("{}: {e}", src.display()))?;
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let mut head = first.split(',');
    let rows: usize = head.next().unwrap_or_default().trim().parse()?;
    let features: usize = head.next().unwrap_or_default().trim().parse()?;
    let mut out = String::with_capacity(text.len() + 16 * features);
    let names: Vec<String> = (0..features).map(|i| format!("f{i}")).collect();
    out.push_str(&names.join(","));
    out.push_str(",label\n");
    let mut n = 0;
    for line in lines.filter(|l| !l.trim().is_empty()) {
        out.push_str(line.trim_end());
        out.push('\n');
        n += 1;
    }
    anyhow::ensure!(n == rows, "{file}: header says {rows} rows, found {n}");
    std::fs::write(dest, out)?;
    Ok((rows, features))
}

/// Reads a CSV with a header into batches, inferring the schema.
pub fn read_csv(path: &Path) -> Result<Vec<RecordBatch>> {
    use std::io::Seek as _;
    let mut file = std::fs::File::open(path)?;
    let (schema, _) = arrow::csv::reader::Format::default()
        .with_header(true)
        .infer_schema(&mut file, Some(1000))?;
    file.rewind()?;
    let reader = arrow::csv::ReaderBuilder::new(std::sync::Arc::new(schema))
        .with_header(true)
        .build(file)?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}
