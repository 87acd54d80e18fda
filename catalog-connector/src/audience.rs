//! Private audiences: assets served to named consumers only.
//!
//! A compute result belongs to the consumer who ran the job. Its download service is
//! free (nobody should pay to read their own output), so the chain would entitle anyone
//! who orders it; the provider keeps the list of who may read it here, next to the
//! storage location, and the policy engine checks it on every grant. An asset with no
//! rows here is open to every entitled consumer.

use alloy::primitives::Address;
use insitu_ledger::Did;
use sqlx::Row;

use crate::error::{CatalogError, Result, db};
use crate::store::AssetStore;

impl AssetStore {
    /// Restricts `did` to `consumers` (replacing any earlier list). Call it before the
    /// asset is marked registered, so it is never served openly, not even briefly.
    pub async fn set_audience(&self, did: Did, consumers: &[Address]) -> Result<()> {
        if consumers.is_empty() {
            return Err(CatalogError::Invalid(
                "an audience names at least one consumer".into(),
            ));
        }
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        sqlx::query("DELETE FROM asset_audience WHERE did = $1")
            .bind(did.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db("replacing the audience"))?;
        for consumer in consumers {
            sqlx::query("INSERT INTO asset_audience (did, consumer) VALUES ($1, $2)")
                .bind(did.to_string())
                .bind(consumer.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db("storing the audience"))?;
        }
        tx.commit().await.map_err(db("committing the audience"))?;
        Ok(())
    }

    /// The consumers `did` is restricted to, or `None` if it is open.
    pub async fn audience(&self, did: Did) -> Result<Option<Vec<Address>>> {
        let rows = sqlx::query("SELECT consumer FROM asset_audience WHERE did = $1")
            .bind(did.to_string())
            .fetch_all(self.pool())
            .await
            .map_err(db("reading the audience"))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut list = Vec::with_capacity(rows.len());
        for r in rows {
            let text: String = r.get("consumer");
            let address = text.parse::<Address>().map_err(|e| CatalogError::Corrupt {
                did: did.to_string(),
                detail: format!("audience entry {text}: {e}"),
            })?;
            list.push(address);
        }
        Ok(Some(list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ddo::sample_ddo;
    use crate::{DataFormat, StorageLocation};

    #[tokio::test]
    async fn audiences_restrict_replace_and_go_with_the_asset() {
        let store = AssetStore::open("sqlite::memory:").await.expect("open");
        let ddo = sample_ddo();
        let location = StorageLocation {
            url: "file:///tmp/x.parquet".into(),
            format: DataFormat::Parquet,
            schema_ipc: vec![],
        };
        store.insert(&ddo, &location).await.expect("insert");
        assert_eq!(store.audience(ddo.did).await.expect("read"), None);
        assert!(store.set_audience(ddo.did, &[]).await.is_err());
        let a = Address::repeat_byte(0xaa);
        let b = Address::repeat_byte(0xbb);
        store.set_audience(ddo.did, &[a, b]).await.expect("set");
        let mut got = store.audience(ddo.did).await.expect("read").expect("some");
        got.sort();
        assert_eq!(got, vec![a, b]);
        store.set_audience(ddo.did, &[b]).await.expect("replace");
        assert_eq!(store.audience(ddo.did).await.expect("read"), Some(vec![b]));
        store.remove(ddo.did).await.expect("remove");
        assert_eq!(store.audience(ddo.did).await.expect("read"), None);
    }
}
