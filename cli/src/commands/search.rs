//! `insitu search`: find assets before ordering one. Without `--endpoint` it reads the
//! local catalog (a provider looking at its own assets); with it, it asks a provider
//! over Flight (`insitu.search`), with a token signed for the `search` scope.

use anyhow::{Context, Result};
use insitu_catalog::{AssetStore, CatalogStore, SearchPage, SearchQuery};
use insitu_ledger::ServiceType;

use crate::args::SearchArgs;
use crate::output::outln;

fn query_of(a: &SearchArgs) -> Result<SearchQuery> {
    let mut q = SearchQuery::new().with_page(a.offset, a.limit);
    if let Some(t) = &a.text {
        q = q.with_text(t.clone());
    }
    for tag in &a.tags {
        q = q.with_tag(tag.clone());
    }
    if let Some(s) = &a.service {
        q = q.with_service(s.parse::<ServiceType>()?);
    }
    let min = a
        .min_price
        .as_deref()
        .map(super::parse_amount)
        .transpose()?;
    let max = a
        .max_price
        .as_deref()
        .map(super::parse_amount)
        .transpose()?;
    q = q.with_price_range(min, max);
    if let Some(owner) = a.owner {
        q = q.with_owner(owner);
    }
    // Refuse a bad search here, with the same words the server would use.
    q.validate()?;
    Ok(q)
}

pub async fn run(a: SearchArgs) -> Result<()> {
    if a.format != "table" && a.format != "json" {
        anyhow::bail!("--format must be table or json, not '{}'", a.format);
    }
    let query = query_of(&a)?;
    let page = match (&a.endpoint, a.provider) {
        (Some(endpoint), Some(provider)) => {
            let signer = super::load_key(&a.key)?;
            let ledger = super::connect(&a.chain, None).await?;
            let token = super::sign_token(
                &signer,
                ledger.as_ref(),
                provider,
                insitu_flight::SEARCH_SCOPE.to_string(),
            )?;
            let ca = a
                .ca_cert
                .as_deref()
                .map(std::fs::read)
                .transpose()
                .context("reading --ca-cert")?;
            let mut client =
                insitu_flight::search_client::SearchClient::connect(endpoint, &token, ca).await?;
            client.search(&query).await?
        }
        _ => {
            let url = a.catalog.clone().unwrap_or_else(|| {
                format!("sqlite://{}", a.chain.data_dir.join("catalog.db").display())
            });
            if let Some(path) = url.strip_prefix("sqlite://")
                && !std::path::Path::new(path).exists()
            {
                anyhow::bail!(
                    "no catalog at {path}: publish something first, or search a provider with --endpoint and --provider"
                );
            }
            let catalog = AssetStore::open(&url)
                .await
                .context("opening the catalog")?;
            catalog.search(&query).await?
        }
    };
    if a.format == "json" {
        outln!("{}", serde_json::to_string_pretty(&page)?);
    } else {
        print_table(&page);
    }
    Ok(())
}

fn print_table(page: &SearchPage) {
    if page.hits.is_empty() {
        eprintln!("no assets match ({} in all)", page.total);
        return;
    }
    for hit in &page.hits {
        let d = &hit.ddo;
        outln!("{}  v{}  {}", d.did, hit.version, d.name);
        let services: Vec<String> = d
            .services
            .iter()
            .map(|s| {
                let price = if s.offer.price.is_zero() {
                    "free".to_string()
                } else {
                    match s.offer.token {
                        Some(t) => format!("{} of token {t:#x}", s.offer.price),
                        None => format!("{} wei", s.offer.price),
                    }
                };
                format!("[{}] {} {price}", s.index, s.offer.service_type)
            })
            .collect();
        outln!(
            "    {} · {} columns{} · tags: {}",
            services.join(", "),
            d.schema.len(),
            d.row_count
                .map(|r| format!(", {r} rows"))
                .unwrap_or_default(),
            if d.tags.is_empty() {
                "none".to_string()
            } else {
                d.tags.join(", ")
            }
        );
        if !d.description.is_empty() {
            let short: String = d.description.chars().take(100).collect();
            let more = if d.description.chars().count() > 100 {
                "…"
            } else {
                ""
            };
            outln!("    {short}{more}");
        }
    }
    let first = page.offset + 1;
    let last = page.offset + page.hits.len() as u64;
    match page.next_offset {
        Some(next) => eprintln!(
            "{first}–{last} of {}; next page: --offset {next}",
            page.total
        ),
        None => eprintln!("{first}–{last} of {}", page.total),
    }
}
