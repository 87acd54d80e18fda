use anyhow::{Context, Result};
use insitu_catalog::AssetStore;
use insitu_flight::StorageOptions;
use insitu_flight::publish::{PublishRequest, publish_asset, publish_object};
use insitu_ledger::{ServiceOffer, ServiceType};

use crate::args::PublishArgs;

pub async fn run(a: PublishArgs) -> Result<()> {
    // Check everything local before touching the chain.
    let service_type: ServiceType = a.service.parse()?;
    let price = super::parse_amount(&a.price)?;
    let access = super::parse_duration(&a.access)?;
    let timeout = super::parse_duration(&a.fulfill_timeout)?;
    let source = a.file.to_string_lossy().to_string();
    let remote = source.contains("://");
    if !remote {
        insitu_flight::publish::inspect_file(&a.file)?;
    }
    let constraints = a
        .constraints
        .as_deref()
        .map(super::constraints::read)
        .transpose()?;
    if constraints.is_some() && service_type != ServiceType::Query {
        anyhow::bail!("--constraints govern query services; add --service query");
    }
    let signer = super::load_key(&a.key)?;
    let owner = signer.address();
    let ledger = super::connect(&a.chain, Some(signer)).await?;
    let catalog_url = a
        .catalog
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", a.chain.data_dir.join("catalog.db").display()));
    ensure_catalog_dir(&catalog_url)?;
    let catalog = AssetStore::open(&catalog_url)
        .await
        .context("opening the catalog")?;
    let mut providers = vec![owner];
    providers.extend(a.providers.iter().copied().filter(|p| *p != owner));
    let request = PublishRequest {
        file: a.file.clone(),
        name: a.name,
        description: a.description,
        tags: a.tags,
        services: vec![ServiceOffer {
            service_type,
            token: a.token,
            price,
            access_duration: access.as_secs(),
            fulfill_timeout: timeout.as_secs(),
        }],
        providers,
        metadata_url: a.endpoint,
        constraints,
    };
    let published = if remote {
        let options =
            StorageOptions::new(parse_storage_options(&a.storage_options)?).with_environment();
        publish_object(ledger.as_ref(), &catalog, &source, &options, request).await
    } else {
        publish_asset(ledger.as_ref(), &catalog, request).await
    }?;
    crate::output::outln!("{}", published.did);
    eprintln!(
        "published {} ({} rows, {} columns) as {} in tx {} (gas {})",
        published.ddo.name,
        published.ddo.row_count.unwrap_or(0),
        published.ddo.schema.len(),
        published.did,
        published.tx.hash,
        published.tx.gas_used
    );
    Ok(())
}

/// Creates the directory of a `sqlite://path` catalog so a first run just works.
pub fn ensure_catalog_dir(url: &str) -> Result<()> {
    if let Some(path) = url.strip_prefix("sqlite://")
        && let Some(dir) = std::path::Path::new(path.split('?').next().unwrap_or(path)).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// Parses repeated `--storage-option key=value`.
pub fn parse_storage_options(items: &[String]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--storage-option must be key=value, not '{kv}'"))
        })
        .collect()
}
