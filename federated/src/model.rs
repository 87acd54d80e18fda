//! Models as Arrow: one column per tensor, one row, each cell a fixed-size list of
//! float32 holding the tensor in row-major order, with the tensor's shape in the field
//! metadata (`insitu.shape`, comma-separated). The same encoding is used on the wire
//! (inside `DoExchange`), by the WASI training module, and for the published model file,
//! so every party reads it with any Arrow library.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};

use crate::error::{FederatedError, Result};

/// The field-metadata key holding a tensor's shape.
pub const SHAPE_KEY: &str = "insitu.shape";
/// Models larger than this many parameters are refused (4 GiB of float32).
pub const MAX_PARAMETERS: usize = 1 << 30;

/// One named tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// A model: its tensors, in a fixed order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Model {
    pub tensors: Vec<Tensor>,
}

/// A model's names and shapes, without values: what every party must agree on.
pub type Layout = Vec<(String, Vec<usize>)>;

fn bad(what: impl std::fmt::Display) -> FederatedError {
    FederatedError::Invalid(format!("model: {what}"))
}

impl Tensor {
    /// A tensor, checked: its values fill its shape exactly.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) -> Result<Self> {
        let name = name.into();
        let size = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("tensor {name}'s shape overflows")))?;
        if size != values.len() {
            return Err(bad(format!(
                "tensor {name} has shape {shape:?} ({size} values) but {} values",
                values.len()
            )));
        }
        Ok(Tensor {
            name,
            shape,
            values,
        })
    }
}

impl Model {
    /// A model from tensors with distinct, non-empty names.
    pub fn new(tensors: Vec<Tensor>) -> Result<Self> {
        let mut names = BTreeSet::new();
        for t in &tensors {
            if t.name.is_empty() || !names.insert(t.name.as_str()) {
                return Err(bad(format!(
                    "tensor name '{}' is empty or repeated",
                    t.name
                )));
            }
        }
        let model = Model { tensors };
        if model.parameters() > MAX_PARAMETERS {
            return Err(bad(format!(
                "{} parameters; at most {MAX_PARAMETERS}",
                model.parameters()
            )));
        }
        Ok(model)
    }

    /// A model of zeros with `layout`.
    pub fn zeros(layout: &Layout) -> Result<Self> {
        let tensors = layout
            .iter()
            .map(|(n, s)| Tensor::new(n.clone(), s.clone(), vec![0.0; s.iter().product()]))
            .collect::<Result<Vec<_>>>()?;
        Model::new(tensors)
    }

    pub fn parameters(&self) -> usize {
        self.tensors.iter().map(|t| t.values.len()).sum()
    }

    pub fn layout(&self) -> Layout {
        self.tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect()
    }

    /// A hash of the tensors' names, shapes and values, independent of how the IPC
    /// bytes encoded them (stream or file, metadata spelling): the same model always
    /// hashes the same. `-0.0` counts as `0.0`.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"insitu/model");
        for t in &self.tensors {
            h.update((t.name.len() as u64).to_be_bytes());
            h.update(t.name.as_bytes());
            h.update((t.shape.len() as u64).to_be_bytes());
            for d in &t.shape {
                h.update((*d as u64).to_be_bytes());
            }
            for v in &t.values {
                let v = if *v == 0.0 { 0.0f32 } else { *v };
                h.update(v.to_bits().to_be_bytes());
            }
        }
        h.finalize().into()
    }

    /// Every value, tensor after tensor.
    pub fn flatten(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.parameters());
        for t in &self.tensors {
            out.extend_from_slice(&t.values);
        }
        out
    }

    /// A model of this layout holding `flat` (as [`flatten`](Self::flatten) lays it out).
    pub fn with_values(&self, flat: &[f32]) -> Result<Self> {
        if flat.len() != self.parameters() {
            return Err(bad(format!(
                "{} values for a model of {} parameters",
                flat.len(),
                self.parameters()
            )));
        }
        let mut at = 0;
        let tensors = self
            .tensors
            .iter()
            .map(|t| {
                let n = t.values.len();
                let values = flat[at..at + n].to_vec();
                at += n;
                Tensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    values,
                }
            })
            .collect();
        Ok(Model { tensors })
    }

    /// Whether every value is finite (a diverged run produces NaN or infinity).
    pub fn is_finite(&self) -> bool {
        self.tensors
            .iter()
            .all(|t| t.values.iter().all(|v| v.is_finite()))
    }

    /// The one-row record batch.
    pub fn to_batch(&self) -> Result<RecordBatch> {
        let mut fields = Vec::with_capacity(self.tensors.len());
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let len = i32::try_from(t.values.len())
                .map_err(|_| bad(format!("tensor {} is too large for one list", t.name)))?;
            let item = Arc::new(Field::new("item", DataType::Float32, false));
            let shape = t
                .shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",");
            fields.push(
                Field::new(&t.name, DataType::FixedSizeList(item.clone(), len), false)
                    .with_metadata(HashMap::from([(SHAPE_KEY.to_string(), shape)])),
            );
            let values = Arc::new(Float32Array::from(t.values.clone()));
            columns.push(Arc::new(
                FixedSizeListArray::try_new(item, len, values, None)
                    .map_err(|e| bad(e.to_string()))?,
            ));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| bad(e.to_string()))
    }

    /// Reads a model from its record batch, checking every shape.
    pub fn from_batch(batch: &RecordBatch) -> Result<Self> {
        if batch.num_rows() != 1 {
            return Err(bad(format!(
                "a model is one row; this batch has {}",
                batch.num_rows()
            )));
        }
        let schema = batch.schema();
        let mut tensors = Vec::with_capacity(batch.num_columns());
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            let shape_text = field
                .metadata()
                .get(SHAPE_KEY)
                .ok_or_else(|| bad(format!("column {} has no {SHAPE_KEY}", field.name())))?;
            let shape = if shape_text.is_empty() {
                Vec::new()
            } else {
                shape_text
                    .split(',')
                    .map(|d| d.trim().parse::<usize>())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|_| bad(format!("column {}'s shape '{shape_text}'", field.name())))?
            };
            let list = column
                .as_any()
                .downcast_ref::<FixedSizeListArray>()
                .ok_or_else(|| bad(format!("column {} is not a fixed-size list", field.name())))?;
            if list.is_null(0) {
                return Err(bad(format!("column {} is null", field.name())));
            }
            let cell = list.value(0);
            let floats = cell
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| bad(format!("column {} does not hold float32", field.name())))?;
            if floats.null_count() > 0 {
                return Err(bad(format!("column {} holds nulls", field.name())));
            }
            tensors.push(Tensor::new(
                field.name().clone(),
                shape,
                floats.values().to_vec(),
            )?);
        }
        Model::new(tensors)
    }

    /// The model as an Arrow IPC stream (schema and the one batch).
    pub fn to_ipc(&self) -> Result<Vec<u8>> {
        let batch = self.to_batch()?;
        let mut out = Vec::new();
        {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema())
                .map_err(|e| bad(e.to_string()))?;
            w.write(&batch).map_err(|e| bad(e.to_string()))?;
            w.finish().map_err(|e| bad(e.to_string()))?;
        }
        Ok(out)
    }

    /// Reads a model from an Arrow IPC stream or file.
    pub fn from_ipc(bytes: &[u8]) -> Result<Self> {
        crate::ipc_guard::refuse_compressed(bytes)?;
        let batch = if bytes.starts_with(b"ARROW1") {
            let reader = arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None)
                .map_err(|e| bad(e.to_string()))?;
            one_batch(reader)?
        } else {
            let reader = arrow::ipc::reader::StreamReader::try_new(bytes, None)
                .map_err(|e| bad(e.to_string()))?;
            one_batch(reader)?
        };
        Model::from_batch(&batch)
    }
}

fn one_batch(
    mut reader: impl Iterator<Item = std::result::Result<RecordBatch, arrow::error::ArrowError>>,
) -> Result<RecordBatch> {
    let batch = reader
        .next()
        .ok_or_else(|| bad("the stream holds no batch"))?
        .map_err(|e| bad(e.to_string()))?;
    if reader.next().is_some() {
        return Err(bad("the stream holds more than one batch"));
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Model {
        Model::new(vec![
            Tensor::new("weights", vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
                .expect("test value"),
            Tensor::new("bias", vec![2], vec![-0.5, 0.5]).expect("test value"),
        ])
        .expect("test value")
    }

    #[test]
    fn a_model_round_trips_through_arrow_ipc_with_its_shapes() {
        let m = sample();
        let back = Model::from_ipc(&m.to_ipc().expect("test value")).expect("test value");
        assert_eq!(back, m);
        let batch = m.to_batch().expect("test value");
        assert_eq!(batch.num_columns(), 2);
        assert_eq!(
            batch
                .schema()
                .field(0)
                .metadata()
                .get(SHAPE_KEY)
                .expect("test value"),
            "2,3"
        );
        assert_eq!(m.flatten(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -0.5, 0.5]);
        assert_eq!(m.with_values(&m.flatten()).expect("test value"), m);
    }

    #[test]
    fn malformed_models_are_refused() {
        assert!(Tensor::new("w", vec![2, 2], vec![1.0; 3]).is_err());
        let t = Tensor::new("w", vec![1], vec![1.0]).expect("test value");
        assert!(Model::new(vec![t.clone(), t]).is_err());
        assert!(sample().with_values(&[1.0]).is_err());
        assert!(Model::from_ipc(b"not arrow").is_err());
    }
}
