//! The consumer side of `insitu.search`: find assets in a provider's catalog before
//! ordering any. Used by `insitu search --provider` and by embedders.

use futures::TryStreamExt;
use insitu_catalog::{SearchPage, SearchQuery};

use crate::client::{authenticated, status_error};
use crate::error::{FlightError, Result};

/// A connected client holding a token signed for scope [`crate::SEARCH_SCOPE`].
#[derive(Debug)]
pub struct SearchClient {
    inner: arrow_flight::FlightClient,
}

impl SearchClient {
    /// Connects to `endpoint`; `ca_pem` is trusted for `https://` endpoints.
    pub async fn connect(endpoint: &str, token: &str, ca_pem: Option<Vec<u8>>) -> Result<Self> {
        Ok(SearchClient {
            inner: authenticated(endpoint, token, ca_pem).await?,
        })
    }

    /// One page of assets matching `query`.
    pub async fn search(&mut self, query: &SearchQuery) -> Result<SearchPage> {
        let body = serde_json::to_vec(query).map_err(|e| FlightError::Internal(e.to_string()))?;
        let mut results = self
            .inner
            .do_action(arrow_flight::Action::new(crate::SEARCH, body))
            .await
            .map_err(status_error)?;
        let page = results
            .try_next()
            .await
            .map_err(status_error)?
            .ok_or_else(|| FlightError::Internal("the provider sent no search result".into()))?;
        serde_json::from_slice(&page)
            .map_err(|e| FlightError::Internal(format!("unreadable search result: {e}")))
    }
}
