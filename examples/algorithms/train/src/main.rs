//! An example insitu training module: multinomial logistic (softmax) regression.
//!
//! It follows the contract of insitu's federated training (docs/federated.md):
//!
//! - `--mode init`: write `/out/model.arrow`, the initial model, from the staged schema
//!   alone (it runs on the consumer's machine with zero rows);
//! - `--mode train`: read the global model `/data/model.arrow`, train on the staged
//!   shard `/data/input.arrow`, write the trained model to `/out/model.arrow` and
//!   `{"samples": n, "loss": l}` to `/out/metrics.json`;
//! - `--mode evaluate`: write `{"samples", "loss", "accuracy"}` of the global model on
//!   the staged data to `/out/metrics.json`.
//!
//! Models are Arrow: one row, one `FixedSizeList<Float32>` column per tensor, the shape
//! in the field metadata `insitu.shape`. Features are every numeric column but the
//! label, log-scaled (`sign(x)·ln(1+|x|)`) and then standardised. The standardisation
//! is part of the model (tensors `mean` and `scale`): a model whose `scale` is all zero
//! has none yet, and training computes it from the shard it sees; federated averaging
//! then makes it the weighted mean of the providers' statistics, which later rounds keep.
//!
//! Options: `--label NAME` (default `label`), `--classes K` (required), `--epochs E` (1),
//! `--lr R` (0.1), `--batch B` (32), `--l2 λ` (1e-4), `--seed S` (0), `--round N` (0).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use serde::Deserialize;

type Res<T> = Result<T, String>;

#[derive(Deserialize)]
struct Manifest {
    inputs: Vec<Input>,
}

#[derive(Deserialize)]
struct Input {
    path: String,
    columns: Vec<Column>,
}

#[derive(Deserialize)]
struct Column {
    name: String,
    data_type: String,
}

struct Options {
    mode: String,
    label: String,
    classes: usize,
    epochs: usize,
    lr: f32,
    batch: usize,
    l2: f32,
    seed: u64,
    round: u64,
    data: PathBuf,
    out: PathBuf,
}

fn options() -> Res<Options> {
    let mut o = Options {
        mode: "train".into(),
        label: "label".into(),
        classes: 0,
        epochs: 1,
        lr: 0.1,
        batch: 32,
        l2: 1e-4,
        seed: 0,
        round: 0,
        data: PathBuf::from("/data"),
        out: PathBuf::from("/out"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| {
            v.parse::<f64>()
                .map_err(|_| format!("{flag}: '{v}' is not a number"))
        };
        match flag.as_str() {
            "--mode" => o.mode = value()?,
            "--label" => o.label = value()?,
            "--classes" => o.classes = num(value()?)? as usize,
            "--epochs" => o.epochs = num(value()?)? as usize,
            "--lr" => o.lr = num(value()?)? as f32,
            "--batch" => o.batch = (num(value()?)? as usize).max(1),
            "--l2" => o.l2 = num(value()?)? as f32,
            "--seed" => o.seed = num(value()?)? as u64,
            "--round" => o.round = num(value()?)? as u64,
            "--data" => o.data = PathBuf::from(value()?),
            "--out" => o.out = PathBuf::from(value()?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if o.classes < 2 {
        return Err("--classes must be at least 2".into());
    }
    Ok(o)
}

fn is_numeric(t: &str) -> bool {
    matches!(
        t,
        "Int8"
            | "Int16"
            | "Int32"
            | "Int64"
            | "UInt8"
            | "UInt16"
            | "UInt32"
            | "UInt64"
            | "Float32"
            | "Float64"
    )
}

/// A guest path from the manifest under the real data directory.
fn local(data: &Path, guest: &str) -> PathBuf {
    match guest.strip_prefix("/data/") {
        Some(rest) => data.join(rest),
        None => PathBuf::from(guest),
    }
}

fn values(a: &ArrayRef) -> Res<Vec<f64>> {
    macro_rules! conv {
        ($t:ty) => {
            a.as_primitive::<$t>()
                .iter()
                .map(|v| v.map(|x| x as f64).unwrap_or(0.0))
                .collect()
        };
    }
    Ok(match a.data_type() {
        DataType::Int8 => conv!(Int8Type),
        DataType::Int16 => conv!(Int16Type),
        DataType::Int32 => conv!(Int32Type),
        DataType::Int64 => conv!(Int64Type),
        DataType::UInt8 => conv!(UInt8Type),
        DataType::UInt16 => conv!(UInt16Type),
        DataType::UInt32 => conv!(UInt32Type),
        DataType::UInt64 => conv!(UInt64Type),
        DataType::Float32 => conv!(Float32Type),
        DataType::Float64 => conv!(Float64Type),
        other => return Err(format!("a column of type {other} is not numeric")),
    })
}

/// Features (log-scaled) and labels of the staged input.
struct Data {
    x: Vec<f32>,
    y: Vec<usize>,
    features: usize,
}

fn feature_names(input: &Input, label: &str) -> Res<Vec<String>> {
    if !input.columns.iter().any(|c| c.name == label) {
        return Err(format!("no label column '{label}' in the input"));
    }
    Ok(input
        .columns
        .iter()
        .filter(|c| c.name != label && is_numeric(&c.data_type))
        .map(|c| c.name.clone())
        .collect())
}

fn load(o: &Options, input: &Input) -> Res<Data> {
    let names = feature_names(input, &o.label)?;
    let file =
        File::open(local(&o.data, &input.path)).map_err(|e| format!("{}: {e}", input.path))?;
    let reader = arrow_ipc::reader::FileReader::try_new(BufReader::new(file), None)
        .map_err(|e| format!("{}: {e}", input.path))?;
    let mut d = Data {
        x: Vec::new(),
        y: Vec::new(),
        features: names.len(),
    };
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let label = batch
            .column_by_name(&o.label)
            .ok_or_else(|| format!("no label column '{}'", o.label))?;
        let labels = values(label)?;
        let cols = names
            .iter()
            .map(|n| {
                batch
                    .column_by_name(n)
                    .ok_or_else(|| format!("no column {n}"))
                    .and_then(values)
            })
            .collect::<Res<Vec<_>>>()?;
        for (r, l) in labels.iter().enumerate() {
            let class = *l as usize;
            if *l < 0.0 || class >= o.classes {
                return Err(format!("label {l} is outside 0..{}", o.classes));
            }
            d.y.push(class);
            for c in &cols {
                let v = c[r];
                d.x.push((v.signum() * v.abs().ln_1p()) as f32);
            }
        }
    }
    Ok(d)
}

struct Model {
    classes: usize,
    features: usize,
    /// [classes × features], row-major.
    w: Vec<f32>,
    b: Vec<f32>,
    /// Per-feature standardisation; `scale` all zero means not yet computed.
    mean: Vec<f32>,
    scale: Vec<f32>,
}

fn tensor(name: &str, shape: &[usize], v: &[f32]) -> Res<(Field, ArrayRef)> {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let shape_text = shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let field = Field::new(
        name,
        DataType::FixedSizeList(item.clone(), v.len() as i32),
        false,
    )
    .with_metadata(HashMap::from([("insitu.shape".to_string(), shape_text)]));
    let list = FixedSizeListArray::try_new(
        item,
        v.len() as i32,
        Arc::new(Float32Array::from(v.to_vec())),
        None,
    )
    .map_err(|e| e.to_string())?;
    Ok((field, Arc::new(list)))
}

impl Model {
    fn write(&self, path: &Path) -> Res<()> {
        let (fw, w) = tensor("weights", &[self.classes, self.features], &self.w)?;
        let (fb, b) = tensor("bias", &[self.classes], &self.b)?;
        let (fm, m) = tensor("mean", &[self.features], &self.mean)?;
        let (fs, sc) = tensor("scale", &[self.features], &self.scale)?;
        let schema = Arc::new(Schema::new(vec![fw, fb, fm, fs]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![w, b, m, sc]).map_err(|e| e.to_string())?;
        let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut out = arrow_ipc::writer::StreamWriter::try_new(BufWriter::new(file), &schema)
            .map_err(|e| e.to_string())?;
        out.write(&batch).map_err(|e| e.to_string())?;
        out.finish().map_err(|e| e.to_string())
    }

    fn read(path: &Path, classes: usize, features: usize) -> Res<Model> {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut reader = arrow_ipc::reader::StreamReader::try_new(BufReader::new(file), None)
            .map_err(|e| e.to_string())?;
        let batch = reader
            .next()
            .ok_or("the model holds no batch")?
            .map_err(|e| e.to_string())?;
        let get = |name: &str, len: usize| -> Res<Vec<f32>> {
            let list = batch
                .column_by_name(name)
                .ok_or_else(|| format!("the model has no tensor {name}"))?
                .as_fixed_size_list();
            let v = list.value(0);
            let v = v.as_primitive::<Float32Type>().values().to_vec();
            if v.len() != len {
                return Err(format!("tensor {name} has {} values, not {len}", v.len()));
            }
            Ok(v)
        };
        Ok(Model {
            classes,
            features,
            w: get("weights", classes * features)?,
            b: get("bias", classes)?,
            mean: get("mean", features)?,
            scale: get("scale", features)?,
        })
    }

    fn zeros(classes: usize, features: usize) -> Model {
        Model {
            classes,
            features,
            w: vec![0.0; classes * features],
            b: vec![0.0; classes],
            mean: vec![0.0; features],
            scale: vec![0.0; features],
        }
    }

    /// Computes the standardisation from `d` if the model has none yet.
    fn fit_scaling(&mut self, d: &Data) {
        if self.scale.iter().any(|s| *s != 0.0) {
            return;
        }
        let n = d.y.len().max(1) as f64;
        for j in 0..d.features {
            let col = (0..d.y.len()).map(|i| f64::from(d.x[i * d.features + j]));
            let mean = col.clone().sum::<f64>() / n;
            let var = col.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            self.mean[j] = mean as f32;
            let sd = var.sqrt() as f32;
            // A constant feature keeps a unit scale, so no scale is ever zero again.
            self.scale[j] = if sd > 1e-6 { sd } else { 1.0 };
        }
    }

    /// Standardises `d`'s features in place with this model's scaling.
    fn standardise(&self, d: &mut Data) {
        for row in d.x.chunks_mut(d.features) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.scale) {
                *v = if *s > 0.0 { (*v - m) / s } else { *v - m };
            }
        }
    }

    /// Softmax probabilities of one row, into `p`.
    fn probabilities(&self, x: &[f32], p: &mut [f32]) {
        let mut max = f32::NEG_INFINITY;
        for (k, pk) in p.iter_mut().enumerate() {
            let row = &self.w[k * self.features..(k + 1) * self.features];
            *pk = self.b[k] + row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>();
            max = max.max(*pk);
        }
        let mut total = 0.0;
        for pk in p.iter_mut() {
            *pk = (*pk - max).exp();
            total += *pk;
        }
        for pk in p.iter_mut() {
            *pk /= total;
        }
    }

    /// Mean cross-entropy and accuracy on `d`.
    fn evaluate(&self, d: &Data) -> (f64, f64) {
        let mut p = vec![0f32; self.classes];
        let (mut loss, mut right) = (0f64, 0usize);
        let n = d.y.len();
        for i in 0..n {
            self.probabilities(&d.x[i * d.features..(i + 1) * d.features], &mut p);
            loss -= f64::from(p[d.y[i]].max(1e-12)).ln();
            let best = (0..self.classes)
                .max_by(|a, b| p[*a].total_cmp(&p[*b]))
                .unwrap_or(0);
            right += usize::from(best == d.y[i]);
        }
        let n = n.max(1) as f64;
        (loss / n, right as f64 / n)
    }

    /// Mini-batch SGD over `d` for the given epochs, rows shuffled by `seed`.
    fn train(&mut self, d: &Data, o: &Options) {
        let n = d.y.len();
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = o.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ o.round.wrapping_add(1);
        let mut p = vec![0f32; self.classes];
        let mut gw = vec![0f32; self.w.len()];
        let mut gb = vec![0f32; self.b.len()];
        for _ in 0..o.epochs {
            for i in (1..n).rev() {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                order.swap(i, (rng % (i as u64 + 1)) as usize);
            }
            for chunk in order.chunks(o.batch) {
                gw.fill(0.0);
                gb.fill(0.0);
                for &r in chunk {
                    let x = &d.x[r * d.features..(r + 1) * d.features];
                    self.probabilities(x, &mut p);
                    for k in 0..self.classes {
                        let g = p[k] - f32::from(u8::from(k == d.y[r]));
                        gb[k] += g;
                        for (gwj, xj) in gw[k * self.features..(k + 1) * self.features]
                            .iter_mut()
                            .zip(x)
                        {
                            *gwj += g * xj;
                        }
                    }
                }
                let scale = o.lr / chunk.len() as f32;
                for (w, g) in self.w.iter_mut().zip(&gw) {
                    *w -= scale * g + o.lr * o.l2 * *w;
                }
                for (b, g) in self.b.iter_mut().zip(&gb) {
                    *b -= scale * g;
                }
            }
        }
    }
}

fn run() -> Res<()> {
    let o = options()?;
    let manifest: Manifest = serde_json::from_reader(BufReader::new(
        File::open(o.data.join("manifest.json")).map_err(|e| format!("manifest.json: {e}"))?,
    ))
    .map_err(|e| format!("manifest.json: {e}"))?;
    let input = manifest
        .inputs
        .first()
        .ok_or("the manifest lists no input")?;
    let features = feature_names(input, &o.label)?.len();
    if features == 0 {
        return Err("the input has no numeric feature column".into());
    }
    let metrics = |fields: &[(&str, f64)]| -> Res<()> {
        let body = fields
            .iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut f = File::create(o.out.join("metrics.json")).map_err(|e| e.to_string())?;
        writeln!(f, "{{{body}}}").map_err(|e| e.to_string())
    };
    match o.mode.as_str() {
        "init" => Model::zeros(o.classes, features).write(&o.out.join("model.arrow")),
        "train" => {
            let mut d = load(&o, input)?;
            let mut m = Model::read(&o.data.join("model.arrow"), o.classes, features)?;
            m.fit_scaling(&d);
            m.standardise(&mut d);
            m.train(&d, &o);
            let (loss, _) = m.evaluate(&d);
            m.write(&o.out.join("model.arrow"))?;
            metrics(&[("samples", d.y.len() as f64), ("loss", loss)])
        }
        "evaluate" => {
            let mut d = load(&o, input)?;
            let m = Model::read(&o.data.join("model.arrow"), o.classes, features)?;
            m.standardise(&mut d);
            let (loss, accuracy) = m.evaluate(&d);
            metrics(&[
                ("samples", d.y.len() as f64),
                ("loss", loss),
                ("accuracy", accuracy),
            ])
        }
        other => Err(format!("unknown mode {other} (init, train, evaluate)")),
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("train: {e}");
        std::process::exit(1);
    }
}
