//! How the coordinator turns a round's updates into the next global model.
//!
//! FedAvg, FedAvgM and FedAdam (Reddi et al., 2021) need only the weighted mean of the
//! updates, which is exactly what secure aggregation reveals. The robust aggregators
//! (coordinate-wise median, trimmed mean) need every update on its own: they work only
//! with secure aggregation off, and they say so rather than quietly weakening privacy.

use serde::{Deserialize, Serialize};

use crate::error::{FederatedError, Result};

/// A server strategy and its settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Strategy {
    /// `x ← x + mean Δ`.
    FedAvg,
    /// Server momentum: `v ← βv + mean Δ`, `x ← x + η v`.
    FedAvgM { server_lr: f32, momentum: f32 },
    /// Server Adam on the mean update as a pseudo-gradient.
    FedAdam {
        server_lr: f32,
        beta1: f32,
        beta2: f32,
        /// Adaptivity (Reddi et al.'s τ): larger is closer to FedAvgM.
        tau: f32,
    },
    /// Coordinate-wise median of the updates. Needs individual updates.
    Median,
    /// Coordinate-wise mean after dropping the `trim` fraction at each end. Needs
    /// individual updates.
    TrimmedMean { trim: f32 },
}

impl Strategy {
    /// Parses `fedavg`, `fedavgm`, `fedadam`, `median` or `trimmed-mean`, with the
    /// usual defaults.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "fedavg" => Strategy::FedAvg,
            "fedavgm" => Strategy::FedAvgM {
                server_lr: 1.0,
                momentum: 0.9,
            },
            "fedadam" => Strategy::FedAdam {
                server_lr: 0.01,
                beta1: 0.9,
                beta2: 0.99,
                tau: 1e-3,
            },
            "median" => Strategy::Median,
            "trimmed-mean" => Strategy::TrimmedMean { trim: 0.2 },
            other => {
                return Err(FederatedError::Invalid(format!(
                    "unknown strategy '{other}' (fedavg, fedavgm, fedadam, median, trimmed-mean)"
                )));
            }
        })
    }

    /// Whether the strategy must see each participant's update.
    pub fn needs_individual_updates(&self) -> bool {
        matches!(self, Strategy::Median | Strategy::TrimmedMean { .. })
    }

    /// Refuses a robust strategy under secure aggregation, which exists to hide the
    /// individual updates it would need.
    pub fn check(&self, secure_aggregation: bool) -> Result<()> {
        if let Strategy::TrimmedMean { trim } = self
            && !(0.0..0.5).contains(trim)
        {
            return Err(FederatedError::Invalid(format!(
                "trimmed mean: trim must be in [0, 0.5), not {trim}"
            )));
        }
        if secure_aggregation && self.needs_individual_updates() {
            return Err(FederatedError::Invalid(format!(
                "{self:?} needs every participant's update on its own, which secure \
                 aggregation hides; turn secure aggregation off (and use providers that \
                 allow plain updates) to use it"
            )));
        }
        Ok(())
    }
}

/// The server optimiser's state across rounds.
#[derive(Debug, Clone)]
pub struct ServerOptimizer {
    strategy: Strategy,
    first: Vec<f32>,
    second: Vec<f32>,
}

impl ServerOptimizer {
    pub fn new(strategy: Strategy) -> Self {
        ServerOptimizer {
            strategy,
            first: Vec::new(),
            second: Vec::new(),
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The next global model from the current one and the round's aggregated update.
    pub fn step(&mut self, global: &[f32], update: &[f32]) -> Result<Vec<f32>> {
        if global.len() != update.len() {
            return Err(FederatedError::Invalid(format!(
                "an update of {} values for a model of {}",
                update.len(),
                global.len()
            )));
        }
        if self.first.len() != global.len() {
            self.first = vec![0.0; global.len()];
            self.second = vec![0.0; global.len()];
        }
        Ok(match self.strategy {
            Strategy::FedAvg | Strategy::Median | Strategy::TrimmedMean { .. } => {
                global.iter().zip(update).map(|(x, d)| x + d).collect()
            }
            Strategy::FedAvgM {
                server_lr,
                momentum,
            } => global
                .iter()
                .zip(update)
                .zip(self.first.iter_mut())
                .map(|((x, d), v)| {
                    *v = momentum * *v + d;
                    x + server_lr * *v
                })
                .collect(),
            Strategy::FedAdam {
                server_lr,
                beta1,
                beta2,
                tau,
            } => global
                .iter()
                .zip(update)
                .zip(self.first.iter_mut().zip(self.second.iter_mut()))
                .map(|((x, d), (m, v))| {
                    *m = beta1 * *m + (1.0 - beta1) * d;
                    *v = beta2 * *v + (1.0 - beta2) * d * d;
                    x + server_lr * *m / (v.sqrt() + tau)
                })
                .collect(),
        })
    }
}

/// Combines individual updates (plain mode) with a robust or averaging strategy.
/// `updates` are (sample count, update) pairs of equal length.
pub fn combine_plain(strategy: Strategy, updates: &[(u32, Vec<f32>)]) -> Result<Vec<f32>> {
    let len = updates
        .first()
        .map(|(_, u)| u.len())
        .ok_or_else(|| FederatedError::Aborted("no updates to combine".into()))?;
    if updates.iter().any(|(_, u)| u.len() != len) {
        return Err(FederatedError::Invalid(
            "updates of different lengths".into(),
        ));
    }
    let mut column = vec![0f32; updates.len()];
    let mut out = vec![0f32; len];
    match strategy {
        Strategy::Median | Strategy::TrimmedMean { .. } => {
            let trim = match strategy {
                Strategy::TrimmedMean { trim } => (updates.len() as f32 * trim).floor() as usize,
                _ => 0,
            };
            for (j, o) in out.iter_mut().enumerate() {
                for (c, (_, u)) in column.iter_mut().zip(updates) {
                    *c = u[j];
                }
                column.sort_by(f32::total_cmp);
                *o = if matches!(strategy, Strategy::Median) {
                    let n = column.len();
                    if n % 2 == 1 {
                        column[n / 2]
                    } else {
                        (column[n / 2 - 1] + column[n / 2]) / 2.0
                    }
                } else {
                    let kept = &column[trim..column.len() - trim];
                    kept.iter().sum::<f32>() / kept.len() as f32
                };
            }
        }
        _ => {
            let total: f64 = updates.iter().map(|(w, _)| f64::from(*w)).sum();
            if total <= 0.0 {
                return Err(FederatedError::Invalid("updates carry no weight".into()));
            }
            for (w, u) in updates {
                let share = (f64::from(*w) / total) as f32;
                for (o, v) in out.iter_mut().zip(u) {
                    *o += share * v;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fedavg_adds_the_mean_update_and_momentum_accumulates() {
        let mut avg = ServerOptimizer::new(Strategy::FedAvg);
        assert_eq!(
            avg.step(&[1.0, 2.0], &[0.5, -1.0]).expect("test value"),
            vec![1.5, 1.0]
        );
        let mut m = ServerOptimizer::new(Strategy::parse("fedavgm").expect("test value"));
        let x1 = m.step(&[0.0], &[1.0]).expect("test value");
        let x2 = m.step(&x1, &[1.0]).expect("test value");
        assert_eq!(x1, vec![1.0]);
        assert!((x2[0] - (1.0 + 1.9)).abs() < 1e-6);
    }

    #[test]
    fn fedadam_moves_by_about_the_server_rate_per_coordinate() {
        let mut a = ServerOptimizer::new(Strategy::parse("fedadam").expect("test value"));
        let x = a.step(&[0.0, 0.0], &[10.0, -0.001]).expect("test value");
        // Adam normalises: the first step is lr·(1-β1)d/(sqrt((1-β2)d²)+τ).
        assert!(x[0] > 0.0 && x[0] < 0.02);
        assert!(x[1] < 0.0);
    }

    #[test]
    fn robust_strategies_ignore_an_outlier_and_refuse_secure_aggregation() {
        let updates = vec![
            (10, vec![1.0]),
            (10, vec![1.1]),
            (10, vec![0.9]),
            (10, vec![1000.0]),
            (10, vec![1.0]),
        ];
        assert_eq!(
            combine_plain(Strategy::Median, &updates).expect("test value"),
            vec![1.0]
        );
        let t = combine_plain(Strategy::TrimmedMean { trim: 0.2 }, &updates).expect("test value");
        assert!((t[0] - 1.0333).abs() < 1e-3);
        let avg = combine_plain(Strategy::FedAvg, &updates).expect("test value");
        assert!(avg[0] > 100.0);
        assert!(Strategy::Median.check(true).is_err());
        assert!(Strategy::Median.check(false).is_ok());
        assert!(
            Strategy::FedAdam {
                server_lr: 0.1,
                beta1: 0.9,
                beta2: 0.99,
                tau: 1e-3
            }
            .check(true)
            .is_ok()
        );
    }
}
