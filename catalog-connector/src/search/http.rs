//! The catalog's JSON HTTP API, for web front ends: search, one asset, its versions.
//!
//! It serves public metadata only (what the DDO hash on chain already makes public),
//! so it needs no token; it is still off unless the provider mounts it, and every
//! request is bounded by the same page and offset limits as the other interfaces.
//!
//! - `GET /api/v1/search?q=…&tag=…&tag=…&service=query&min_price=…&max_price=…&owner=0x…&limit=20&offset=0`
//! - `GET /api/v1/assets/{did}`
//! - `GET /api/v1/assets/{did}/versions`

use std::sync::Arc;

use alloy::primitives::{Address, U256};
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use insitu_ledger::{Did, ServiceType};
use serde::Serialize;

use super::{CatalogStore, SearchQuery};
use crate::error::CatalogError;

/// Builder for the HTTP API.
#[derive(Debug, Clone)]
pub struct SearchApi {
    catalog: Arc<dyn CatalogStore>,
    allow_origin: Option<HeaderValue>,
}

impl SearchApi {
    pub fn new(catalog: Arc<dyn CatalogStore>) -> Self {
        SearchApi {
            catalog,
            allow_origin: None,
        }
    }

    /// Lets browser pages from `origin` (or `*`) read the answers (CORS). Without it,
    /// only same-origin pages and non-browser clients can.
    pub fn with_allowed_origin(mut self, origin: &str) -> Result<Self, CatalogError> {
        self.allow_origin = Some(HeaderValue::from_str(origin).map_err(|_| {
            CatalogError::Invalid(format!("'{origin}' is not a valid CORS origin"))
        })?);
        Ok(self)
    }

    /// The routes, ready to serve or to nest in the embedder's own router.
    pub fn router(self) -> Router {
        Router::new()
            .route("/api/v1/search", get(search))
            .route("/api/v1/assets/{did}", get(asset))
            .route("/api/v1/assets/{did}/versions", get(versions))
            .with_state(Arc::new(self))
    }
}

type Api = State<Arc<SearchApi>>;

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

fn json(api: &SearchApi, status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = match serde_json::to_vec(body) {
        Ok(b) => b,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    if let Some(origin) = &api.allow_origin {
        resp.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    resp
}

fn error(api: &SearchApi, status: StatusCode, message: &str) -> Response {
    json(api, status, &ErrorBody { error: message })
}

/// A catalog failure as a response: the caller's mistakes as 400 with the reason,
/// anything else as 503 without internals (they are logged).
fn failure(api: &SearchApi, e: CatalogError) -> Response {
    match e {
        CatalogError::Invalid(m) => error(api, StatusCode::BAD_REQUEST, &m),
        other => {
            tracing::error!(error = %other, "catalog API request failed");
            error(
                api,
                StatusCode::SERVICE_UNAVAILABLE,
                "the catalog cannot answer right now",
            )
        }
    }
}

/// Reads the query string; repeated `tag` keys add tags.
fn parse_query(raw: Option<&str>) -> Result<SearchQuery, String> {
    let mut q = SearchQuery::new();
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "q" => q.text = Some(value),
            "tag" => q.tags.push(value),
            "service" => {
                q.service = Some(
                    value
                        .parse::<ServiceType>()
                        .map_err(|e| format!("service: {e}"))?,
                )
            }
            "min_price" => q.min_price = Some(price(&value, "min_price")?),
            "max_price" => q.max_price = Some(price(&value, "max_price")?),
            "owner" => {
                q.owner = Some(
                    value
                        .parse::<Address>()
                        .map_err(|_| format!("owner '{value}' is not an address"))?,
                )
            }
            "limit" => {
                q.limit = Some(
                    value
                        .parse()
                        .map_err(|_| format!("limit '{value}' is not a number"))?,
                )
            }
            "offset" => {
                q.offset = value
                    .parse()
                    .map_err(|_| format!("offset '{value}' is not a number"))?
            }
            other => return Err(format!("unknown parameter '{other}'")),
        }
    }
    Ok(q)
}

fn price(value: &str, key: &str) -> Result<U256, String> {
    U256::from_str_radix(value, 10)
        .map_err(|_| format!("{key} '{value}' is not a whole number of base units"))
}

async fn search(State(api): Api, RawQuery(raw): RawQuery) -> Response {
    let query = match parse_query(raw.as_deref()) {
        Ok(q) => q,
        Err(m) => return error(&api, StatusCode::BAD_REQUEST, &m),
    };
    match api.catalog.search(&query).await {
        Ok(page) => json(&api, StatusCode::OK, &page),
        Err(e) => failure(&api, e),
    }
}

fn parse_did(raw: &str) -> Result<Did, String> {
    raw.parse::<Did>()
        .map_err(|_| format!("'{raw}' is not a DID"))
}

#[derive(Serialize)]
struct AssetBody {
    ddo: crate::Ddo,
    version: i64,
}

async fn asset(State(api): Api, Path(raw): Path<String>) -> Response {
    let did = match parse_did(&raw) {
        Ok(d) => d,
        Err(m) => return error(&api, StatusCode::BAD_REQUEST, &m),
    };
    match api.catalog.asset(did).await {
        Ok(Some(a)) => json(
            &api,
            StatusCode::OK,
            &AssetBody {
                ddo: a.ddo,
                version: a.version,
            },
        ),
        Ok(None) => error(&api, StatusCode::NOT_FOUND, &format!("no asset {did} here")),
        Err(e) => failure(&api, e),
    }
}

async fn versions(State(api): Api, Path(raw): Path<String>) -> Response {
    let did = match parse_did(&raw) {
        Ok(d) => d,
        Err(m) => return error(&api, StatusCode::BAD_REQUEST, &m),
    };
    match api.catalog.versions(did).await {
        Ok(v) if v.is_empty() => {
            error(&api, StatusCode::NOT_FOUND, &format!("no asset {did} here"))
        }
        Ok(v) => json(&api, StatusCode::OK, &v),
        Err(e) => failure(&api, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_tags_and_every_filter_are_read_from_the_query_string() {
        let q = parse_query(Some(
            "q=taxi+trips&tag=nyc&tag=Mobility&service=download&min_price=10&max_price=5000\
             &owner=0x00000000000000000000000000000000000000a1&limit=5&offset=10",
        ))
        .expect("parse");
        assert_eq!(q.text.as_deref(), Some("taxi trips"));
        assert_eq!(q.tags, ["nyc", "Mobility"]);
        assert_eq!(q.service, Some(ServiceType::Download));
        assert_eq!(q.min_price, Some(U256::from(10)));
        assert_eq!(q.max_price, Some(U256::from(5000)));
        assert_eq!(q.owner, Some(Address::with_last_byte(0xa1)));
        assert_eq!((q.offset, q.limit), (10, Some(5)));
    }

    #[test]
    fn bad_parameters_say_which_and_why() {
        for (raw, want) in [
            ("service=sell", "service"),
            ("min_price=-1", "min_price"),
            ("max_price=1e9", "max_price"),
            ("owner=bob", "owner"),
            ("limit=many", "limit"),
            ("colour=red", "unknown parameter 'colour'"),
        ] {
            let e = parse_query(Some(raw)).expect_err(raw);
            assert!(e.contains(want), "{raw}: {e}");
        }
    }
}
