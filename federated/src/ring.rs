//! Updates as elements of the ring Z/2^32, so that masked sums are exact.
//!
//! Floating-point sums depend on their order; a sum of masked floats would not even
//! cancel the masks. So each client clips its update to `[-clip, clip]`, scales it to
//! fixed point, multiplies it by its sample count, and sends the result as `u32` words
//! with wrapping arithmetic. The first word is the sample count itself: the masked sum
//! then reveals only the total weight and the weighted sum, which is all FedAvg needs.
//!
//! The scale is chosen from the largest total weight the job allows, so the true sum
//! never leaves `(-2^31, 2^31)` and decodes without wrapping. Four bytes per parameter
//! keeps the upload at the size of the raw float32 model.

use crate::error::{FederatedError, Result};

/// How updates map into the ring. The coordinator fixes it per job; every participant
/// and the aggregator use the same one.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RawCodec")]
pub struct RingCodec {
    /// Each value is clipped to `[-clip, clip]` before scaling.
    pub clip: f32,
    /// The most samples all participants may weigh together.
    pub max_total_weight: u32,
    /// Fixed-point scale: `round(value * scale)`.
    pub scale: f64,
}

/// A codec as received: checked by [`RingCodec::new`], its scale recomputed, never
/// taken from the sender.
#[derive(serde::Deserialize)]
struct RawCodec {
    clip: f32,
    max_total_weight: u32,
}

impl TryFrom<RawCodec> for RingCodec {
    type Error = FederatedError;
    fn try_from(r: RawCodec) -> Result<Self> {
        RingCodec::new(r.clip, r.max_total_weight)
    }
}

impl RingCodec {
    /// The finest scale for which `max_total_weight` samples of values in
    /// `[-clip, clip]` cannot overflow the signed range.
    pub fn new(clip: f32, max_total_weight: u32) -> Result<Self> {
        if !(clip.is_finite() && clip > 0.0) {
            return Err(FederatedError::Invalid(format!(
                "clip must be a positive number, not {clip}"
            )));
        }
        if max_total_weight == 0 {
            return Err(FederatedError::Invalid(
                "max_total_weight must be at least 1".into(),
            ));
        }
        let scale = ((i32::MAX as f64) / (f64::from(clip) * f64::from(max_total_weight))).floor();
        if scale < 1.0 {
            return Err(FederatedError::Invalid(format!(
                "clip {clip} with {max_total_weight} samples leaves no precision in 32 bits"
            )));
        }
        Ok(RingCodec {
            clip,
            max_total_weight,
            scale,
        })
    }

    /// The smallest difference the codec keeps.
    pub fn resolution(&self) -> f64 {
        1.0 / self.scale
    }

    /// The largest magnitude a quantised value may have: `max_total_weight` of them
    /// still sum inside the signed 32-bit range.
    fn limit(&self) -> i64 {
        i64::from(i32::MAX) / i64::from(self.max_total_weight)
    }

    /// One value as a fixed-point integer. Rounding could carry `clip · scale` past the
    /// limit, so the result is clamped to it as well.
    pub fn quantise(&self, v: f32) -> i64 {
        let clipped = if v.is_nan() {
            0.0
        } else {
            v.clamp(-self.clip, self.clip)
        };
        let limit = self.limit();
        ((f64::from(clipped) * self.scale).round() as i64).clamp(-limit, limit)
    }

    /// A client's update weighted by its sample count: `[weight, weight·q(v0), …]`.
    pub fn encode(&self, update: &[f32], weight: u32) -> Result<Vec<u32>> {
        if weight == 0 || weight > self.max_total_weight {
            return Err(FederatedError::Invalid(format!(
                "a weight of {weight} samples is outside 1..={}",
                self.max_total_weight
            )));
        }
        let w = i64::from(weight);
        let mut out = Vec::with_capacity(update.len() + 1);
        out.push(weight);
        out.extend(update.iter().map(|&v| (self.quantise(v) * w) as i32 as u32));
        Ok(out)
    }

    /// The plain sum of encoded vectors, as the masked sum must equal it.
    pub fn add_into(sum: &mut [u32], v: &[u32]) {
        for (s, x) in sum.iter_mut().zip(v) {
            *s = s.wrapping_add(*x);
        }
    }

    /// Decodes a sum into (total weight, weighted mean): FedAvg's result.
    pub fn decode_mean(&self, sum: &[u32]) -> Result<(u32, Vec<f32>)> {
        let (&total, rest) = sum
            .split_first()
            .ok_or_else(|| FederatedError::Invalid("an empty sum".into()))?;
        if total == 0 || total > self.max_total_weight {
            return Err(FederatedError::Invalid(format!(
                "the sum's total weight {total} is outside 1..={}",
                self.max_total_weight
            )));
        }
        let denom = f64::from(total) * self.scale;
        Ok((
            total,
            rest.iter()
                .map(|&x| (f64::from(x as i32) / denom) as f32)
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weighted_sum_decodes_to_the_weighted_mean_within_the_resolution() {
        let codec = RingCodec::new(1.0, 1000).expect("codec");
        let a = [0.5f32, -0.25, 0.0, 2.0];
        let b = [0.1f32, 0.3, -0.9, -2.0];
        let mut sum = vec![0u32; 5];
        RingCodec::add_into(&mut sum, &codec.encode(&a, 300).expect("a"));
        RingCodec::add_into(&mut sum, &codec.encode(&b, 700).expect("b"));
        let (total, mean) = codec.decode_mean(&sum).expect("decode");
        assert_eq!(total, 1000);
        // 2.0 and -2.0 are clipped to ±1.
        let want = [0.22f32, 0.135, -0.63, -0.4];
        for (m, w) in mean.iter().zip(want) {
            assert!((m - w).abs() < 1e-4, "{mean:?} vs {want:?}");
        }
    }

    #[test]
    fn the_largest_allowed_sum_does_not_wrap() {
        let codec = RingCodec::new(1.0, 10).expect("codec");
        let mut sum = vec![0u32; 2];
        for _ in 0..10 {
            RingCodec::add_into(&mut sum, &codec.encode(&[1.0], 1).expect("enc"));
        }
        let (_, mean) = codec.decode_mean(&sum).expect("decode");
        assert!((mean[0] - 1.0).abs() < 1e-6);
        let mut neg = vec![0u32; 2];
        for _ in 0..10 {
            RingCodec::add_into(&mut neg, &codec.encode(&[-1.0], 1).expect("enc"));
        }
        assert!((codec.decode_mean(&neg).expect("decode").1[0] + 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_clip_that_does_not_scale_to_a_whole_number_cannot_flip_the_sign() {
        for (clip, weight) in [(0.5f32, 2u32), (0.1, 1000), (0.3, 7), (1.7, 13)] {
            let codec = RingCodec::new(clip, weight).expect("codec");
            let mut sum = vec![0u32; 2];
            RingCodec::add_into(&mut sum, &codec.encode(&[clip], weight).expect("enc"));
            let (_, mean) = codec.decode_mean(&sum).expect("decode");
            assert!(mean[0] > 0.0, "clip {clip}, weight {weight}: {mean:?}");
            assert!((mean[0] - clip).abs() < 1e-3, "clip {clip}: {mean:?}");
        }
    }

    #[test]
    fn a_received_codec_is_checked_and_its_scale_recomputed() {
        let good: RingCodec =
            serde_json::from_str(r#"{"clip":1.0,"max_total_weight":10,"scale":1e30}"#)
                .expect("codec");
        assert_eq!(good, RingCodec::new(1.0, 10).expect("codec"));
        for bad in [
            r#"{"clip":-1.0,"max_total_weight":10}"#,
            r#"{"clip":1.0,"max_total_weight":0}"#,
        ] {
            assert!(serde_json::from_str::<RingCodec>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_settings_and_weights_are_refused() {
        assert!(RingCodec::new(0.0, 10).is_err());
        assert!(RingCodec::new(f32::NAN, 10).is_err());
        assert!(RingCodec::new(1.0, 0).is_err());
        let codec = RingCodec::new(1.0, 10).expect("codec");
        assert!(codec.encode(&[0.0], 0).is_err());
        assert!(codec.encode(&[0.0], 11).is_err());
    }
}
