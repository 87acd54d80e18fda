//! The policy engine's view of private audiences, read from the provider's catalog.

use alloy::primitives::Address;
use insitu_catalog::AssetStore;
use insitu_ledger::Did;

/// Reads asset audiences (compute results served to their owner only) from the catalog.
/// Pass it to `PolicyEngineBuilder::with_audience`; without it every asset is open to
/// every consumer the chain entitles.
#[derive(Debug, Clone)]
pub struct CatalogAudience(pub AssetStore);

#[async_trait::async_trait]
impl insitu_policy::AssetAudience for CatalogAudience {
    async fn audience(&self, did: Did) -> std::result::Result<Option<Vec<Address>>, String> {
        self.0.audience(did).await.map_err(|e| e.to_string())
    }
}
