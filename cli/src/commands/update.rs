//! `insitu update`: change an asset's public metadata. The registry keeps the hash of
//! the current metadata, so an update is a chain transaction by the owner, and the
//! catalog keeps every version (`GET /api/v1/assets/{did}/versions` shows them).

use anyhow::{Context, Result};
use insitu_catalog::AssetStore;
use insitu_flight::publish::{MetadataUpdate, update_asset};
use insitu_ledger::Did;

use crate::args::UpdateArgs;

pub async fn run(a: UpdateArgs) -> Result<()> {
    let did: Did = a.did.parse()?;
    let tags = if a.clear_tags {
        Some(Vec::new())
    } else if a.tags.is_empty() {
        None
    } else {
        Some(a.tags)
    };
    let update = MetadataUpdate {
        name: a.name,
        description: a.description,
        tags,
    };
    if update.name.is_none() && update.description.is_none() && update.tags.is_none() {
        anyhow::bail!("nothing to update: give --name, --description, --tag or --clear-tags");
    }
    let signer = super::load_key(&a.key)?;
    let ledger = super::connect(&a.chain, Some(signer)).await?;
    let url = a
        .catalog
        .unwrap_or_else(|| format!("sqlite://{}", a.chain.data_dir.join("catalog.db").display()));
    let catalog = AssetStore::open(&url)
        .await
        .context("opening the catalog")?;
    let updated = update_asset(ledger.as_ref(), &catalog, did, update).await?;
    crate::output::outln!("{}", updated.version);
    eprintln!(
        "{did} is now version {} ({}), metadata hash on chain in tx {} (gas {})",
        updated.version, updated.ddo.name, updated.tx.hash, updated.tx.gas_used
    );
    Ok(())
}
