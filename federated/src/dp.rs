//! DP-FedAvg with distributed discrete Gaussian noise (McMahan et al., 2018; Kairouz et
//! al., 2021). Each provider clips its update to L2 norm `C`, quantises it, and adds
//! discrete Gaussian noise to every coordinate before masking. Secure aggregation sums
//! the noise of all `n` providers, so the revealed sum carries noise of standard deviation
//! `z·C`, while no provider's own noise is large; and the noise is an integer, so the
//! masked sum stays exact. Under DP every provider weighs 1 (the mean is over providers),
//! which is what bounds one provider's influence to `C`.
//!
//! If fewer than the planned `n` providers survive a round, the sum carries less noise
//! than planned; [`Accountant`] charges each round for the noise its survivors added.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{FederatedError, Result};
use crate::ring::RingCodec;

/// The largest noise multiplier accepted: far beyond any useful one.
pub const MAX_NOISE_MULTIPLIER: f64 = 100.0;

/// DP settings of a job.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DpSettings {
    /// Each update is clipped to this L2 norm.
    pub clip_norm: f32,
    /// `z`: the summed noise has standard deviation `z · clip_norm`.
    pub noise_multiplier: f64,
    /// The providers the noise is split over.
    pub participants: u32,
}

impl DpSettings {
    pub fn check(&self) -> Result<()> {
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return Err(FederatedError::Invalid(format!(
                "DP clip norm must be positive, not {}",
                self.clip_norm
            )));
        }
        // Above the cap the noise would drown any update (and its variance overflow).
        if !(self.noise_multiplier.is_finite()
            && (0.0..=MAX_NOISE_MULTIPLIER).contains(&self.noise_multiplier))
        {
            return Err(FederatedError::Invalid(format!(
                "DP noise multiplier must be between 0 and {MAX_NOISE_MULTIPLIER}, not {}",
                self.noise_multiplier
            )));
        }
        if self.participants == 0 {
            return Err(FederatedError::Invalid(
                "DP needs at least one participant".into(),
            ));
        }
        Ok(())
    }

    /// One provider's noise standard deviation, in the codec's fixed-point units.
    pub fn client_sigma(&self, codec: &RingCodec) -> f64 {
        self.noise_multiplier * f64::from(self.clip_norm) * codec.scale
            / f64::from(self.participants).sqrt()
    }
}

/// δ of the (ε, δ) a job reports when the caller does not choose one.
pub const DEFAULT_DELTA: f64 = 1e-5;

/// The privacy spent by a DP-FedAvg job so far, as ρ-zero-concentrated DP, with one
/// provider's whole data as the unit protected (adding or removing a provider).
///
/// Each round's revealed sum carries the discrete Gaussian noise of the `s` providers
/// that survived it, so a round spends `ρ = ½ (Δ² / (s σ²) + ½ τ d)` (Kairouz, Liu and
/// Steinke, 2021, Theorem 1, for sums of discrete Gaussians), where `σ` is one
/// provider's noise, `Δ` bounds the L2 change one provider makes to the sum (its
/// clipped update, plus half a unit of rounding per coordinate), `d` is the number of
/// noised coordinates, and `τ` is the (tiny) gap between a sum of discrete Gaussians
/// and one discrete Gaussian. Rounds compose by adding their ρ; a round with fewer
/// survivors than planned costs more. ε at a chosen δ follows from ρ (Bun and Steinke,
/// 2016, Proposition 1.3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accountant {
    sigma: f64,
    sensitivity: f64,
    dims: f64,
    rho: f64,
}

impl Accountant {
    /// The accountant of a job under `settings`, encoding with `codec` a model of `dims`
    /// parameters.
    pub fn new(settings: &DpSettings, codec: &RingCodec, dims: usize) -> Self {
        let d = dims as f64;
        Accountant {
            sigma: settings.client_sigma(codec),
            sensitivity: f64::from(settings.clip_norm) * codec.scale + d.sqrt() / 2.0,
            dims: d,
            rho: 0.0,
        }
    }

    /// Records a round whose sum held the noise of `survivors` providers. A round with
    /// no survivors revealed nothing.
    pub fn round(&mut self, survivors: usize) {
        if survivors == 0 {
            return;
        }
        if self.sigma <= 0.0 {
            self.rho = f64::INFINITY;
            return;
        }
        let s = survivors as f64;
        let var = self.sigma * self.sigma;
        let tau: f64 = 10.0
            * (1..survivors)
                .map(|k| {
                    let k = k as f64;
                    (-2.0 * std::f64::consts::PI.powi(2) * var * k / (k + 1.0)).exp()
                })
                .sum::<f64>();
        let eps2 = self.sensitivity.powi(2) / (s * var) + 0.5 * tau * self.dims;
        self.rho += 0.5 * eps2;
    }

    /// ρ spent so far.
    pub fn rho(&self) -> f64 {
        self.rho
    }

    /// ε of the (ε, δ)-DP spent so far.
    pub fn epsilon(&self, delta: f64) -> f64 {
        if self.rho == 0.0 {
            return 0.0;
        }
        self.rho + 2.0 * (self.rho * (1.0 / delta).ln()).sqrt()
    }
}

/// Scales `update` down so its L2 norm is at most `c`.
pub fn clip_l2(update: &mut [f32], c: f32) {
    let norm = update
        .iter()
        .map(|v| f64::from(*v).powi(2))
        .sum::<f64>()
        .sqrt();
    if norm > f64::from(c) {
        let f = (f64::from(c) / norm) as f32;
        update.iter_mut().for_each(|v| *v *= f);
    }
}

/// Bernoulli(exp(-gamma)), gamma >= 0.
fn bernoulli_exp(gamma: f64, rng: &mut impl Rng) -> bool {
    rng.random::<f64>() < (-gamma).exp()
}

/// A discrete Laplace sample with scale `t`, P(y) ∝ exp(-|y|/t): the difference of two
/// geometric variables on {0, 1, …} with ratio exp(-1/t).
fn discrete_laplace(t: f64, rng: &mut impl Rng) -> i64 {
    let mut geometric = || {
        // 1 - U is in (0, 1], so the logarithm is finite.
        let u = 1.0 - rng.random::<f64>();
        (-t * u.ln()).floor() as i64
    };
    let a = geometric();
    let b = geometric();
    a - b
}

/// A discrete Gaussian sample with parameter `sigma` (Canonne, Kamath and Steinke,
/// 2020, Algorithm 3: discrete Laplace proposals, accepted with the Gaussian ratio).
pub fn discrete_gaussian(sigma: f64, rng: &mut impl Rng) -> i64 {
    if sigma <= 0.0 {
        return 0;
    }
    let t = sigma.floor() + 1.0;
    loop {
        let y = discrete_laplace(t, rng);
        let gamma = ((y.abs() as f64) - sigma * sigma / t).powi(2) / (2.0 * sigma * sigma);
        if bernoulli_exp(gamma, rng) {
            return y;
        }
    }
}

/// Adds one provider's noise to an encoded vector (every word but the weight).
pub fn add_noise(encoded: &mut [u32], sigma: f64, rng: &mut impl Rng) {
    for w in encoded.iter_mut().skip(1) {
        *w = w.wrapping_add(discrete_gaussian(sigma, rng) as i32 as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn settings(z: f64, n: u32) -> DpSettings {
        DpSettings {
            clip_norm: 1.0,
            noise_multiplier: z,
            participants: n,
        }
    }

    #[test]
    fn the_accountant_matches_the_gaussian_mechanism_and_composes() {
        let codec = RingCodec::new(1.0, 10).expect("codec");
        let n = 5;
        // With a fine scale, one round with every provider is the Gaussian mechanism of
        // sensitivity C and noise z·C: rho = 1 / (2 z^2).
        let mut a = Accountant::new(&settings(2.0, n), &codec, 1000);
        a.round(n as usize);
        let expected = 1.0 / (2.0 * 4.0);
        assert!(
            (a.rho() - expected).abs() < 1e-3 * expected,
            "rho {} against {expected}",
            a.rho()
        );
        // Ten rounds cost ten times as much.
        for _ in 1..10 {
            a.round(n as usize);
        }
        assert!((a.rho() - 10.0 * expected).abs() < 1e-2 * expected);
        // Bun and Steinke's conversion, by hand: rho + 2 sqrt(rho ln(1/delta)).
        let rho = a.rho();
        let eps = a.epsilon(1e-5);
        assert!((eps - (rho + 2.0 * (rho * 1e5f64.ln()).sqrt())).abs() < 1e-12);
        assert!(
            eps > 0.0 && a.epsilon(1e-3) < eps,
            "a larger delta gives a smaller eps"
        );
    }

    #[test]
    fn dropouts_cost_privacy_and_no_noise_costs_everything() {
        let codec = RingCodec::new(1.0, 10).expect("codec");
        let mut full = Accountant::new(&settings(1.0, 10), &codec, 100);
        let mut fewer = full;
        full.round(10);
        fewer.round(6);
        assert!(
            fewer.rho() > full.rho() * 1.6,
            "6 of 10 providers' noise: {} against {}",
            fewer.rho(),
            full.rho()
        );
        let mut none = full;
        none.round(0);
        assert_eq!(
            none.rho(),
            full.rho(),
            "a round nobody survived reveals nothing"
        );
        let mut exposed = Accountant::new(&settings(0.0, 10), &codec, 100);
        exposed.round(10);
        assert!(exposed.epsilon(DEFAULT_DELTA).is_infinite());
        assert_eq!(
            Accountant::new(&settings(1.0, 3), &codec, 10).epsilon(DEFAULT_DELTA),
            0.0
        );
    }

    #[test]
    fn the_discrete_gaussian_has_mean_zero_and_the_asked_variance() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for sigma in [0.5f64, 3.0, 40.0] {
            let n = 40_000;
            let xs: Vec<f64> = (0..n)
                .map(|_| discrete_gaussian(sigma, &mut rng) as f64)
                .collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            assert!(
                mean.abs() < 4.0 * sigma / (n as f64).sqrt() + 0.01,
                "sigma {sigma}: mean {mean}"
            );
            // For sigma >= 1 the variance is sigma^2 to within a fraction of a percent.
            if sigma >= 1.0 {
                assert!(
                    (var / (sigma * sigma) - 1.0).abs() < 0.05,
                    "sigma {sigma}: var {var}"
                );
            }
        }
    }

    #[test]
    fn clipping_bounds_the_norm_and_keeps_small_updates() {
        let mut big = vec![3.0f32, 4.0];
        clip_l2(&mut big, 1.0);
        assert!((big[0] - 0.6).abs() < 1e-6 && (big[1] - 0.8).abs() < 1e-6);
        let mut small = vec![0.1f32, 0.1];
        clip_l2(&mut small, 1.0);
        assert_eq!(small, vec![0.1, 0.1]);
    }

    #[test]
    fn summed_client_noise_has_the_planned_deviation() {
        let codec = RingCodec::new(1.0, 1000).expect("codec");
        let dp = DpSettings {
            clip_norm: 1.0,
            noise_multiplier: 1.0,
            participants: 10,
        };
        let sigma = dp.client_sigma(&codec);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let len = 5000;
        let mut sum = vec![0u32; len + 1];
        for _ in 0..10 {
            let mut v = codec.encode(&vec![0.0; len], 1).expect("encode");
            add_noise(&mut v, sigma, &mut rng);
            RingCodec::add_into(&mut sum, &v);
        }
        let (total, mean) = codec.decode_mean(&sum).expect("decode");
        assert_eq!(total, 10);
        // The mean over 10 providers of noise summing to sd z·C = 1 has sd 0.1.
        let sd = (mean.iter().map(|m| f64::from(*m).powi(2)).sum::<f64>() / len as f64).sqrt();
        assert!((sd - 0.1).abs() < 0.01, "sd {sd}");
    }
}
