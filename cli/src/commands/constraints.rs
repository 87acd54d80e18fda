//! `insitu constraints`: set what a query service lets out of an asset. Constraints are
//! the provider's private business, kept in its catalog next to the asset's location,
//! so changing them needs no chain transaction; sessions opened afterwards use them.

use std::path::Path;

use anyhow::{Context, Result};
use insitu_catalog::AssetStore;
use insitu_ledger::Did;
use insitu_policy::QueryConstraints;

use crate::args::ConstraintsArgs;

/// Reads a constraints file (TOML).
pub fn read(path: &Path) -> Result<QueryConstraints> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the constraints {}", path.display()))?;
    QueryConstraints::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub async fn run(a: ConstraintsArgs) -> Result<()> {
    let did: Did = a.did.parse()?;
    let constraints = read(&a.file)?;
    let url = a
        .catalog
        .unwrap_or_else(|| format!("sqlite://{}", a.data_dir.join("catalog.db").display()));
    let catalog = AssetStore::open(&url)
        .await
        .context("opening the catalog")?;
    insitu_flight::publish::set_constraints(&catalog, did, a.service_index, &constraints).await?;
    eprintln!(
        "service {} of {did} now runs under: {}",
        a.service_index,
        if constraints.is_unconstrained() {
            "no constraints".to_string()
        } else {
            constraints.rules().join(", ")
        }
    );
    Ok(())
}
