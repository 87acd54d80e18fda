//! Finding assets: full-text search over name, description, tags and column names,
//! with filters (service type, price range, owner, tags) and paging. SQLite FTS5 when
//! embedded, Postgres full-text when several replicas share a catalog; callers see one
//! [`CatalogStore`] trait either way, so the CLI, the Flight `DoAction` and the HTTP
//! endpoint run the same search.
//!
//! Search reads public metadata only: the index is built from DDOs, never from
//! storage locations or query constraints.

mod http;
pub(crate) mod index;
mod query;
pub(crate) mod text;

use alloy::primitives::{Address, U256};
use async_trait::async_trait;
use insitu_ledger::{Did, ServiceType};
use serde::{Deserialize, Serialize};

use crate::ddo::Ddo;
use crate::error::{CatalogError, Result};
use crate::store::{AssetVersion, StoredAsset};

pub use http::SearchApi;

/// Results per page when the caller does not say.
pub const DEFAULT_PAGE: u32 = 20;
/// Most results in one page: a page is one response message, and a UI shows fewer.
pub const MAX_PAGE: u32 = 100;
/// Deepest offset served. Ranking deep pages costs the database the whole prefix;
/// nobody reads result 10,001, they narrow the search.
pub const MAX_OFFSET: u64 = 10_000;
/// Most tags one search may require.
const MAX_TAGS: usize = 8;

/// A search: free text and filters, all of which must hold. Build it with the `with_*`
/// methods; it is also the JSON body of the `insitu.search` Flight action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchQuery {
    /// Words to find in name, description, tags or column names; each must match, the
    /// last token of each word as a prefix when it has two characters or more.
    pub text: Option<String>,
    /// Tags the asset must all carry (case-insensitive).
    pub tags: Vec<String>,
    /// A service of this type must be offered…
    pub service: Option<ServiceType>,
    /// …at a price of at least this (base units of its token)…
    pub min_price: Option<U256>,
    /// …and at most this.
    pub max_price: Option<U256>,
    /// The asset's owner.
    pub owner: Option<Address>,
    /// Results per page, 1 to [`MAX_PAGE`]; [`DEFAULT_PAGE`] if absent.
    pub limit: Option<u32>,
    /// Results to skip, at most [`MAX_OFFSET`].
    pub offset: u64,
}

impl SearchQuery {
    pub fn new() -> Self {
        SearchQuery::default()
    }
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }
    pub fn with_service(mut self, service: ServiceType) -> Self {
        self.service = Some(service);
        self
    }
    pub fn with_price_range(mut self, min: Option<U256>, max: Option<U256>) -> Self {
        self.min_price = min;
        self.max_price = max;
        self
    }
    pub fn with_owner(mut self, owner: Address) -> Self {
        self.owner = Some(owner);
        self
    }
    pub fn with_page(mut self, offset: u64, limit: u32) -> Self {
        self.offset = offset;
        self.limit = Some(limit);
        self
    }

    /// The page size in force.
    pub fn page_size(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_PAGE)
    }

    /// Refuses searches that cannot be answered, with the reason.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(CatalogError::Invalid(m));
        let limit = self.page_size();
        if limit == 0 || limit > MAX_PAGE {
            return bad(format!("page size must be 1 to {MAX_PAGE}, not {limit}"));
        }
        if self.offset > MAX_OFFSET {
            return bad(format!(
                "offset {} is past the deepest page served ({MAX_OFFSET}); narrow the search",
                self.offset
            ));
        }
        if let (Some(min), Some(max)) = (self.min_price, self.max_price)
            && min > max
        {
            return bad(format!(
                "the minimum price {min} is above the maximum {max}"
            ));
        }
        if self.tags.len() > MAX_TAGS {
            return bad(format!("at most {MAX_TAGS} tags may be required"));
        }
        if let Some(t) = &self.text
            && !t.trim().is_empty()
            && text::words(t)?.is_empty()
        {
            return bad("the search text has no letters or digits to search for".into());
        }
        Ok(())
    }
}

/// One asset found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    pub ddo: Ddo,
    /// The catalog version of its metadata.
    pub version: i64,
    /// Relevance (higher is better) when text was searched.
    pub score: Option<f64>,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchPage {
    pub hits: Vec<SearchHit>,
    /// All assets that match, over every page.
    pub total: u64,
    pub offset: u64,
    /// The offset of the next page, if there is one.
    pub next_offset: Option<u64>,
}

/// The catalog as its readers see it: search, one asset, its history. The CLI, the
/// Flight server and the HTTP endpoint hold an `Arc<dyn CatalogStore>`, so an embedder
/// can put its own catalog behind them.
#[async_trait]
pub trait CatalogStore: Send + Sync + std::fmt::Debug {
    /// Registered assets matching `query`, best first (newest first without text).
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage>;
    /// A registered asset's current public metadata.
    async fn asset(&self, did: Did) -> Result<Option<StoredAsset>>;
    /// Every version of an asset's public metadata, oldest first.
    async fn versions(&self, did: Did) -> Result<Vec<AssetVersion>>;
}

#[async_trait]
impl CatalogStore for crate::store::AssetStore {
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage> {
        query::run(self, query).await
    }
    async fn asset(&self, did: Did) -> Result<Option<StoredAsset>> {
        Ok(self.get(did).await?.filter(|a| a.registered))
    }
    async fn versions(&self, did: Did) -> Result<Vec<AssetVersion>> {
        self.history(did).await
    }
}
