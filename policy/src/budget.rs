//! The differential-privacy budget of each agreement, spent exactly and persisted.
//!
//! ε is counted in integer nano-units ([`crate::constraints::nano_epsilon`]), so ten
//! queries of 0.1 spend exactly 1.0 and the eleventh is refused; floating-point sums
//! would let one extra query through or refuse the last one. A spend is one conditional
//! `UPDATE` (spent + cost ≤ budget), so concurrent queries on one agreement cannot
//! overspend, and it is committed before the query runs: a restart never refills a
//! budget, and a query that fails after its spend has still spent (its answer may have
//! been partly seen).

use insitu_ledger::AgreementId;
use sqlx::{AnyPool, Row};

use crate::error::{PolicyError, Result};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS privacy_budget (
    agreement TEXT PRIMARY KEY,
    spent_nano BIGINT NOT NULL
)";

/// The state of one agreement's budget, in nano-ε.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetState {
    pub budget: u64,
    pub spent: u64,
}

impl BudgetState {
    pub fn remaining(&self) -> u64 {
        self.budget.saturating_sub(self.spent)
    }
}

/// Persistent privacy budgets, in the provider's database.
#[derive(Debug, Clone)]
pub struct PrivacyBudgets {
    pool: AnyPool,
    ready: std::sync::Arc<tokio::sync::OnceCell<()>>,
}

fn db(what: &'static str) -> impl Fn(sqlx::Error) -> PolicyError {
    move |e| PolicyError::Budget(format!("{what}: {e}"))
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PrivacyBudgets {
    /// Uses `pool` (SQLite or Postgres through sqlx's `Any` driver); the table is
    /// created on first use.
    pub fn new(pool: AnyPool) -> Self {
        PrivacyBudgets {
            pool,
            ready: std::sync::Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    async fn ensure(&self) -> Result<()> {
        self.ready
            .get_or_try_init(|| async {
                sqlx::query(SCHEMA)
                    .execute(&self.pool)
                    .await
                    .map(|_| ())
                    .map_err(db("creating the privacy budget table"))
            })
            .await
            .map(|_| ())
    }

    /// Spends `cost` of `budget` for `agreement`, or refuses without spending anything.
    pub async fn spend(
        &self,
        agreement: AgreementId,
        cost: u64,
        budget: u64,
    ) -> Result<std::result::Result<BudgetState, BudgetState>> {
        self.ensure().await?;
        let id = agreement.to_string();
        sqlx::query(
            "INSERT INTO privacy_budget (agreement, spent_nano) VALUES ($1, 0)
             ON CONFLICT (agreement) DO NOTHING",
        )
        .bind(&id)
        .execute(&self.pool)
        .await
        .map_err(db("opening the budget"))?;
        let done = sqlx::query(
            "UPDATE privacy_budget SET spent_nano = spent_nano + $2
             WHERE agreement = $1 AND spent_nano + $2 <= $3",
        )
        .bind(&id)
        .bind(to_i64(cost))
        .bind(to_i64(budget))
        .execute(&self.pool)
        .await
        .map_err(db("spending the budget"))?;
        let state = self.state(agreement, budget).await?;
        Ok(if done.rows_affected() == 1 {
            Ok(state)
        } else {
            Err(state)
        })
    }

    /// What `agreement` has spent of `budget`.
    pub async fn state(&self, agreement: AgreementId, budget: u64) -> Result<BudgetState> {
        self.ensure().await?;
        let row = sqlx::query("SELECT spent_nano FROM privacy_budget WHERE agreement = $1")
            .bind(agreement.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading the budget"))?;
        let spent: i64 = row.map(|r| r.get("spent_nano")).unwrap_or(0);
        Ok(BudgetState {
            budget,
            spent: u64::try_from(spent).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constraints::nano_epsilon;
    use alloy::primitives::B256;

    #[tokio::test]
    async fn spent_exactly_and_kept_across_reopen() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().expect("dir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("budget.db").display()
        );
        let agreement = AgreementId(B256::repeat_byte(3));
        let (cost, budget) = (nano_epsilon(0.1), nano_epsilon(1.0));
        {
            let pool = AnyPool::connect(&url).await.expect("pool");
            let budgets = PrivacyBudgets::new(pool);
            for _ in 0..7 {
                assert!(
                    budgets
                        .spend(agreement, cost, budget)
                        .await
                        .expect("db")
                        .is_ok()
                );
            }
        }
        let pool = AnyPool::connect(&url).await.expect("pool");
        let budgets = PrivacyBudgets::new(pool);
        assert_eq!(
            budgets
                .state(agreement, budget)
                .await
                .expect("state")
                .remaining(),
            nano_epsilon(0.3)
        );
        for _ in 0..3 {
            assert!(
                budgets
                    .spend(agreement, cost, budget)
                    .await
                    .expect("db")
                    .is_ok()
            );
        }
        let refused = budgets.spend(agreement, cost, budget).await.expect("db");
        assert_eq!(refused.map_err(|s| s.remaining()), Err(0));
    }
}
