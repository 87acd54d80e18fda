//! The storage a query session can see: exactly one read-only object per granted asset,
//! under a synthetic URL.
//!
//! DataFusion's default registry serves any `file://` path, and its plans and errors
//! print the paths they read. Here the session's registry knows only the granted assets
//! (deny by default), and each asset's store exposes a single object named
//! `data.<ext>` that maps to the real location. No plan, metric or error inside the
//! session can name the real bucket, directory or file.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreRegistry;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use url::Url;

/// The URL scheme of granted assets inside a session.
pub(crate) const SCHEME: &str = "insitu";

/// One asset's object, read-only, under its alias.
pub(crate) struct AssetObject {
    inner: Arc<dyn ObjectStore>,
    real: Path,
    alias: Path,
}

impl fmt::Debug for AssetObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AssetObject({})", self.alias)
    }
}

impl fmt::Display for AssetObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "insitu asset {}", self.alias)
    }
}

impl AssetObject {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, real: Path, alias: &str) -> Self {
        AssetObject {
            inner,
            real,
            alias: Path::from(alias),
        }
    }

    fn check(&self, location: &Path) -> object_store::Result<()> {
        if *location == self.alias {
            Ok(())
        } else {
            Err(object_store::Error::NotFound {
                path: location.to_string(),
                source: "not a granted asset".into(),
            })
        }
    }

    /// Replaces the inner store's error, which names the real path, with one that does
    /// not. The kind is kept so callers can still tell "missing" from "failed".
    fn hide(&self, e: object_store::Error) -> object_store::Error {
        match e {
            object_store::Error::NotFound { .. } => object_store::Error::NotFound {
                path: self.alias.to_string(),
                source: "the asset's data is missing".into(),
            },
            other => {
                tracing::warn!(asset = %self.alias, kind = ?error_kind(&other), "asset read failed");
                object_store::Error::Generic {
                    store: "insitu",
                    source: "reading the asset's data failed".into(),
                }
            }
        }
    }

    fn renamed(&self, mut meta: ObjectMeta) -> ObjectMeta {
        meta.location = self.alias.clone();
        meta
    }

    fn read_only() -> object_store::Error {
        object_store::Error::NotSupported {
            source: "granted assets are read-only".into(),
        }
    }
}

fn error_kind(e: &object_store::Error) -> &'static str {
    match e {
        object_store::Error::Generic { .. } => "generic",
        object_store::Error::NotFound { .. } => "not found",
        object_store::Error::PermissionDenied { .. } => "permission denied",
        object_store::Error::Unauthenticated { .. } => "unauthenticated",
        _ => "other",
    }
}

#[async_trait]
impl ObjectStore for AssetObject {
    async fn put_opts(
        &self,
        _location: &Path,
        _payload: PutPayload,
        _opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        Err(Self::read_only())
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(Self::read_only())
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check(location)?;
        let mut result = self
            .inner
            .get_opts(&self.real, options)
            .await
            .map_err(|e| self.hide(e))?;
        result.meta = self.renamed(result.meta);
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.check(location)?;
        self.inner
            .get_ranges(&self.real, ranges)
            .await
            .map_err(|e| self.hide(e))
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        locations.map(|_| Err(Self::read_only())).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let visible = prefix.is_none_or(|p| self.alias.prefix_matches(p) || p.as_ref().is_empty());
        if !visible {
            return futures::stream::empty().boxed();
        }
        let inner = self.inner.clone();
        let real = self.real.clone();
        let alias = self.alias.clone();
        futures::stream::once(async move {
            match inner.head(&real).await {
                Ok(mut meta) => {
                    meta.location = alias;
                    Ok(meta)
                }
                Err(_) => Err(object_store::Error::NotFound {
                    path: alias.to_string(),
                    source: "the asset's data is missing".into(),
                }),
            }
        })
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let objects: Vec<ObjectMeta> = self
            .list(prefix)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<object_store::Result<_>>()?;
        Ok(ListResult {
            common_prefixes: Vec::new(),
            objects,
        })
    }

    async fn copy_opts(
        &self,
        _from: &Path,
        _to: &Path,
        _options: CopyOptions,
    ) -> object_store::Result<()> {
        Err(Self::read_only())
    }
}

/// The object-store registry of one session: the granted assets and nothing else.
#[derive(Debug, Default)]
pub(crate) struct GrantedStores {
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

fn key(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default())
}

impl ObjectStoreRegistry for GrantedStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        match self.stores.write() {
            Ok(mut stores) => stores.insert(key(url), store),
            Err(_) => None,
        }
    }

    fn get_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        let found = if url.scheme() == SCHEME {
            self.stores
                .read()
                .ok()
                .and_then(|s| s.get(&key(url)).cloned())
        } else {
            None
        };
        found.ok_or_else(|| {
            DataFusionError::Plan(
                "only the tables of your agreements can be read in this session".into(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn only_the_alias_is_visible_and_nothing_is_writable() {
        let inner = Arc::new(InMemory::new());
        inner
            .put(
                &Path::from("secret/dir/file.parquet"),
                Bytes::from_static(b"rows").into(),
            )
            .await
            .expect("put");
        inner
            .put(
                &Path::from("secret/dir/other.parquet"),
                Bytes::from_static(b"no").into(),
            )
            .await
            .expect("put");
        let store = AssetObject::new(inner, Path::from("secret/dir/file.parquet"), "data.parquet");
        let got = store.get(&Path::from("data.parquet")).await.expect("get");
        assert_eq!(got.meta.location, Path::from("data.parquet"));
        assert_eq!(
            got.bytes().await.expect("bytes"),
            Bytes::from_static(b"rows")
        );
        let err = store
            .get(&Path::from("secret/dir/other.parquet"))
            .await
            .expect_err("other objects are invisible");
        assert!(!err.to_string().contains("secret/dir/file"));
        let listed: Vec<_> = store.list(None).collect().await;
        assert_eq!(listed.len(), 1);
        assert!(
            store
                .put(&Path::from("data.parquet"), Bytes::from_static(b"x").into())
                .await
                .is_err()
        );
    }

    #[test]
    fn the_registry_refuses_everything_it_was_not_given() {
        let reg = GrantedStores::default();
        let url = Url::parse("insitu://t0/").expect("url");
        reg.register_store(&url, Arc::new(InMemory::new()));
        assert!(reg.get_store(&url).is_ok());
        for other in ["file:///", "insitu://t1/", "s3://bucket/"] {
            assert!(
                reg.get_store(&Url::parse(other).expect("url")).is_err(),
                "{other}"
            );
        }
    }
}
