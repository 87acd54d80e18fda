//! Assets served to named consumers only.
//!
//! An agreement on chain says a consumer paid; it cannot say "only this consumer may
//! order". A compute result is registered with a free download service (its owner, the
//! consumer, should not pay to read their own output), so anyone could order it. The
//! provider therefore keeps a private audience per such asset, and the engine refuses
//! every principal outside it, after the chain and before the Cedar rules.

use alloy::primitives::Address;
use insitu_ledger::Did;

/// Where the engine reads asset audiences. Implemented over the provider's catalog.
#[async_trait::async_trait]
pub trait AssetAudience: Send + Sync + std::fmt::Debug {
    /// `Ok(None)` means the asset is open to anyone the chain entitles; `Ok(Some(list))`
    /// means only the listed consumers. An error denies (fail closed).
    async fn audience(&self, did: Did) -> Result<Option<Vec<Address>>, String>;
}
