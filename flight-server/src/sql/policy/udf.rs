//! The two functions the rewriter inserts: a keyed mask and differential-privacy noise.
//!
//! Neither is registered in a consumer's session (the function registry is the
//! template's), so a consumer cannot call them; the rewriter puts them into the plan as
//! resolved function objects.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, Int32Array, Int64Array, StringArray,
};
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use datafusion::common::{Result as DfResult, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use hmac::{Hmac, Mac};
use insitu_policy::Mechanism;
use rand::{Rng, TryRngCore};
use sha2::Sha256;

/// Whether `dt` can be hash-masked with its type kept (so plans and schemas planned
/// before the rewrite stay valid).
pub(crate) fn hashable(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Int32
            | DataType::Int64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
    )
}

/// HMAC-SHA-256 of each value under a key bound to the asset and the agreement, with
/// the column's type kept: strings become 32 hex characters, integers the first bytes
/// of the MAC (non-negative). Equal values map to equal masks within one agreement, so
/// counting distinct values and grouping still work; across agreements they differ,
/// so two consumers cannot join their masks.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct MaskHash {
    key: [u8; 32],
    signature: Signature,
}

impl MaskHash {
    pub fn expr(key: [u8; 32], column: Expr) -> Expr {
        let udf = ScalarUDF::new_from_impl(MaskHash {
            key,
            signature: Signature::any(1, Volatility::Immutable),
        });
        Arc::new(udf).call(vec![column])
    }

    fn mac(&self, bytes: &[u8]) -> [u8; 32] {
        // A 32-byte key is always a valid HMAC key.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => return [0; 32],
        };
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }

    fn mask(&self, array: &ArrayRef) -> DfResult<ArrayRef> {
        let out: ArrayRef = match array.data_type() {
            DataType::Int64 => {
                let a = array.as_primitive::<Int64Type>();
                Arc::new(
                    a.iter()
                        .map(|v| {
                            v.map(|v| {
                                let m = self.mac(&v.to_le_bytes());
                                i64::from_le_bytes([
                                    m[0],
                                    m[1],
                                    m[2],
                                    m[3],
                                    m[4],
                                    m[5],
                                    m[6],
                                    m[7] & 0x7f,
                                ])
                            })
                        })
                        .collect::<Int64Array>(),
                )
            }
            DataType::Int32 => {
                let a = array.as_primitive::<Int32Type>();
                Arc::new(
                    a.iter()
                        .map(|v| {
                            v.map(|v| {
                                let m = self.mac(&v.to_le_bytes());
                                i32::from_le_bytes([m[0], m[1], m[2], m[3] & 0x7f])
                            })
                        })
                        .collect::<Int32Array>(),
                )
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let strings = arrow::compute::cast(array, &DataType::Utf8)?;
                let a = strings.as_string::<i32>();
                let hashed: StringArray = a
                    .iter()
                    .map(|v| v.map(|s| hex::encode(&self.mac(s.as_bytes())[..16])))
                    .collect();
                arrow::compute::cast(&hashed, array.data_type())?
            }
            other => return exec_err!("cannot hash-mask a {other} column"),
        };
        Ok(out)
    }
}

impl ScalarUDFImpl for MaskHash {
    fn name(&self) -> &str {
        "insitu_mask"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(arg_types.first().cloned().unwrap_or(DataType::Null))
    }

    /// The masked column keeps its name's type and nullability: a mask of a value is
    /// never null, so schemas planned before the rewrite stay exact.
    fn return_field_from_args(
        &self,
        args: datafusion::logical_expr::ReturnFieldArgs,
    ) -> DfResult<arrow::datatypes::FieldRef> {
        let Some(input) = args.arg_fields.first() else {
            return exec_err!("insitu_mask takes one argument");
        };
        Ok(Arc::new(arrow::datatypes::Field::new(
            self.name(),
            input.data_type().clone(),
            input.is_nullable(),
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let Some(arg) = args.args.into_iter().next() else {
            return exec_err!("insitu_mask takes one argument");
        };
        let array = arg.into_array(rows)?;
        Ok(ColumnarValue::Array(self.mask(&array)?))
    }
}

/// Adds noise of scale `scale` (Laplace `b`, or Gaussian σ) to each non-null value,
/// drawn from the operating system's CSPRNG.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct Noise {
    mechanism: Mechanism,
    /// Round the noised value (counts stay whole numbers).
    round: bool,
    signature: Signature,
}

impl Noise {
    pub fn expr(mechanism: Mechanism, value: Expr, scale: f64, round: bool) -> Expr {
        let udf = ScalarUDF::new_from_impl(Noise {
            mechanism,
            round,
            signature: Signature::exact(
                vec![DataType::Float64, DataType::Float64],
                Volatility::Volatile,
            ),
        });
        Arc::new(udf).call(vec![
            Expr::Cast(datafusion::logical_expr::Cast::new(
                Box::new(value),
                DataType::Float64,
            )),
            Expr::Literal(ScalarValue::Float64(Some(scale)), None),
        ])
    }
}

/// A uniform draw in (0, 1], never 0, so logarithms are finite.
fn open_unit(rng: &mut impl Rng) -> f64 {
    1.0 - rng.random::<f64>()
}

/// One Laplace(0, b) draw: the difference of two exponentials.
pub(crate) fn laplace(rng: &mut impl Rng, b: f64) -> f64 {
    b * (open_unit(rng).ln() - open_unit(rng).ln())
}

/// One N(0, σ²) draw (Box–Muller).
pub(crate) fn gaussian(rng: &mut impl Rng, sigma: f64) -> f64 {
    let r = (-2.0 * open_unit(rng).ln()).sqrt();
    let theta = 2.0 * std::f64::consts::PI * rng.random::<f64>();
    sigma * r * theta.cos()
}

impl ScalarUDFImpl for Noise {
    fn name(&self) -> &str {
        "insitu_noise"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Float64)
    }

    /// Noise on a value that is never null is never null.
    fn return_field_from_args(
        &self,
        args: datafusion::logical_expr::ReturnFieldArgs,
    ) -> DfResult<arrow::datatypes::FieldRef> {
        let nullable = args.arg_fields.first().is_none_or(|f| f.is_nullable());
        Ok(Arc::new(arrow::datatypes::Field::new(
            self.name(),
            DataType::Float64,
            nullable,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let mut it = args.args.into_iter();
        let (Some(value), Some(scale)) = (it.next(), it.next()) else {
            return exec_err!("insitu_noise takes two arguments");
        };
        let ColumnarValue::Scalar(ScalarValue::Float64(Some(scale))) = scale else {
            return exec_err!("insitu_noise needs a constant scale");
        };
        let values = value.into_array(rows)?;
        let values = values
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Execution("noise on a non-float".into())
            })?;
        let mut rng = rand::rngs::OsRng.unwrap_err();
        let mut out = Float64Builder::with_capacity(values.len());
        for v in values.iter() {
            out.append_option(v.map(|v| {
                let noised = v + match self.mechanism {
                    Mechanism::Laplace => laplace(&mut rng, scale),
                    Mechanism::Gaussian => gaussian(&mut rng, scale),
                };
                if self.round { noised.round() } else { noised }
            }));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laplace_and_gaussian_have_the_declared_spread() {
        let mut rng = rand::rngs::OsRng.unwrap_err();
        let n = 200_000;
        let b = 2.0;
        let l: Vec<f64> = (0..n).map(|_| laplace(&mut rng, b)).collect();
        let mean_abs = l.iter().map(|x| x.abs()).sum::<f64>() / n as f64;
        // E|X| = b for Laplace(0, b).
        assert!((mean_abs - b).abs() < 0.05, "mean |x| = {mean_abs}");
        let g: Vec<f64> = (0..n).map(|_| gaussian(&mut rng, 3.0)).collect();
        let var = g.iter().map(|x| x * x).sum::<f64>() / n as f64;
        assert!((var.sqrt() - 3.0).abs() < 0.05, "sd = {}", var.sqrt());
    }

    #[test]
    fn masks_keep_types_equality_and_nulls() {
        let m = MaskHash {
            key: [7; 32],
            signature: Signature::any(1, Volatility::Immutable),
        };
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(1), Some(2), None]));
        let out = m.mask(&ints).expect("mask");
        let out = out.as_primitive::<Int64Type>();
        assert_eq!(out.value(0), out.value(1));
        assert_ne!(out.value(0), out.value(2));
        assert_ne!(out.value(0), 1);
        assert!(out.value(0) >= 0);
        assert!(out.is_null(3));
        let s: ArrayRef = Arc::new(arrow::array::StringViewArray::from(vec!["a", "b"]));
        let out = m.mask(&s).expect("mask");
        assert_eq!(out.data_type(), &DataType::Utf8View);
        let other = MaskHash {
            key: [8; 32],
            signature: Signature::any(1, Volatility::Immutable),
        };
        assert_ne!(
            other
                .mask(&ints)
                .expect("mask")
                .as_primitive::<Int64Type>()
                .value(0),
            out_first(&m, &ints)
        );
    }

    fn out_first(m: &MaskHash, a: &ArrayRef) -> i64 {
        m.mask(a)
            .expect("mask")
            .as_primitive::<Int64Type>()
            .value(0)
    }
}
