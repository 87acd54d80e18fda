//! Catalog and lineage figures, each against a baseline measured in the same run:
//!
//! 1. **Search latency** over a SQLite catalog of synthetic assets (100,000 by default):
//!    p50 and p99 of a mix of text, filter and paging searches through the
//!    `CatalogStore` API, against the same text searches as a `LIKE` scan of the stored
//!    DDOs (what a catalog without a text index would do).
//! 2. **Delivery**: events per second from the outbox to a local HTTP receiver, against
//!    posting the same events straight to it with the same transport (no outbox).
//! 3. **Overhead on queries**: the median time of one Flight SQL query, end to end,
//!    with lineage on and off, on two providers of one chain, alternating.
//!
//! Run: `cargo bench -p insitu-integration-tests --bench catalog`.
//! `INSITU_CATALOG_ASSETS` sets the catalog size; `INSITU_BENCH_PART` (`search`,
//! `delivery` or `overhead`) runs one part; `INSITU_CATALOG_DB` keeps the search
//! catalog in that SQLite file and reuses it on the next run (building 100,000 assets
//! takes minutes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::TryStreamExt;
use insitu_catalog::lineage::{
    Dispatcher, HttpTransport, LineageTransport, Outbox, Profile, RunLifecycle,
};
use insitu_catalog::{AssetStore, CatalogStore, SearchQuery};
use insitu_integration_tests::catalog::{add, synthetic};
use insitu_integration_tests::data::{people_batch, write_parquet};
use insitu_integration_tests::tpch::median;
use insitu_integration_tests::{CONSUMER, Provider, ProviderOptions, World, account};
use insitu_ledger::{Ledger, ServiceType};
use sqlx::Row;

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<()> {
    let part = std::env::var("INSITU_BENCH_PART").unwrap_or_default();
    if part.is_empty() || part == "search" {
        search().await?;
    }
    if part.is_empty() || part == "delivery" {
        delivery().await?;
    }
    if part.is_empty() || part == "overhead" {
        overhead().await?;
    }
    Ok(())
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The searches of one round; `r` varies the rare word so no answer is cached.
fn searches(r: u64, n: u64) -> Vec<(&'static str, SearchQuery)> {
    let rare = format!("zx{:x}", (r * 7919) % n);
    vec![
        ("one common word", SearchQuery::new().with_text("sales")),
        ("two words", SearchQuery::new().with_text("daily europe")),
        ("rare word", SearchQuery::new().with_text(rare)),
        ("prefix", SearchQuery::new().with_text("ship")),
        ("column name", SearchQuery::new().with_text("customer_id")),
        (
            "text + service + price",
            SearchQuery::new()
                .with_text("payments")
                .with_service(ServiceType::Query)
                .with_price_range(None, Some(alloy::primitives::U256::from(50_000))),
        ),
        ("tag only", SearchQuery::new().with_tag("health")),
        (
            "owner only",
            SearchQuery::new().with_owner(alloy::primitives::Address::with_last_byte(7)),
        ),
        (
            "tags + service, offset 1000",
            SearchQuery::new()
                .with_tag("finance")
                .with_service(ServiceType::Download)
                .with_page(1_000, 20),
        ),
    ]
}

/// The baseline: the text words matched with LIKE over the stored DDO JSON.
async fn like_scan(store: &AssetStore, words: &[&str]) -> Result<usize> {
    let mut sql = String::from("SELECT did FROM assets WHERE registered = 1");
    for i in 0..words.len() {
        sql.push_str(&format!(" AND lower(ddo) LIKE ${}", i + 1));
    }
    sql.push_str(" ORDER BY updated_at DESC LIMIT 20");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for w in words {
        q = q.bind(format!("%{w}%"));
    }
    let rows = q.fetch_all(store.pool()).await?;
    Ok(rows.len())
}

async fn search() -> Result<()> {
    let n: u64 = std::env::var("INSITU_CATALOG_ASSETS")
        .ok()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    // Building 100,000 assets one transaction each is bound by fsync on a disk; in
    // memory-backed /dev/shm it takes minutes less. Searches only read, from the page
    // cache either way. `INSITU_CATALOG_DB` keeps the database at a path and reuses it
    // when it already holds the catalog, for iterating on search code.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)?
    } else {
        tempfile::tempdir()?
    };
    let path = match std::env::var("INSITU_CATALOG_DB") {
        Ok(p) if !p.is_empty() => std::path::PathBuf::from(p),
        _ => dir.path().join("catalog.db"),
    };
    let url = format!("sqlite://{}", path.display());
    let store = AssetStore::open(&url).await?;
    println!(
        "== search over {n} synthetic assets (SQLite FTS5, database {})",
        path.display()
    );
    let have: i64 = sqlx::query("SELECT count(*) AS n FROM asset_search")
        .fetch_one(store.pool())
        .await?
        .get("n");
    if have == 0 {
        let started = Instant::now();
        let bar = n / 10;
        for i in 0..n {
            add(&store, &synthetic(i)).await?;
            if bar > 0 && (i + 1) % bar == 0 {
                eprintln!(
                    "  {} assets in {:.0} s",
                    i + 1,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        let built = started.elapsed();
        println!(
            "catalog built in {:.1} s ({:.0} assets/s: insert, register, index, DatasetEvent)",
            built.as_secs_f64(),
            n as f64 / built.as_secs_f64()
        );
    } else {
        println!("reusing the {have} assets already in the database");
    }
    let size: i64 = sqlx::query("SELECT count(*) AS n FROM asset_search")
        .fetch_one(store.pool())
        .await?
        .get("n");
    assert_eq!(size as u64, n);

    let catalog: &dyn CatalogStore = &store;
    for (_, q) in searches(0, n) {
        catalog.search(&q).await?;
    }
    const ROUNDS: u64 = 60;
    let mut all = Vec::new();
    let mut per: Vec<(&str, Vec<f64>, u64)> = Vec::new();
    for r in 0..ROUNDS {
        for (i, (name, q)) in searches(r + 1, n).into_iter().enumerate() {
            let t = Instant::now();
            let page = catalog.search(&q).await?;
            let took = ms(t.elapsed());
            all.push(took);
            if per.len() <= i {
                per.push((name, Vec::new(), page.total));
            }
            per[i].1.push(took);
        }
    }
    all.sort_by(f64::total_cmp);
    println!("| search | matches | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    for (name, mut v, total) in per {
        v.sort_by(f64::total_cmp);
        println!(
            "| {name} | {total} | {:.2} | {:.2} |",
            quantile(&v, 0.5),
            quantile(&v, 0.99)
        );
    }
    let (p50, p99) = (quantile(&all, 0.5), quantile(&all, 0.99));
    println!(
        "all {} searches: p50 {p50:.2} ms, p99 {p99:.2} ms (target p99 < 20 ms: {})",
        all.len(),
        if p99 < 20.0 { "met" } else { "MISSED" }
    );

    // Baseline: the text searches as LIKE scans, fewer rounds (each reads every DDO).
    let text_cases: &[&[&str]] = &[
        &["sales"],
        &["daily", "europe"],
        &["ship"],
        &["customer_id"],
    ];
    let mut fts = Vec::new();
    let mut like = Vec::new();
    for _ in 0..5 {
        for words in text_cases {
            let t = Instant::now();
            catalog
                .search(&SearchQuery::new().with_text(words.join(" ")))
                .await?;
            fts.push(ms(t.elapsed()));
            let t = Instant::now();
            like_scan(&store, words).await?;
            like.push(ms(t.elapsed()));
        }
    }
    let (f, l) = (median(fts), median(like));
    println!(
        "text searches, median: FTS5 {f:.2} ms, LIKE scan {l:.2} ms; LIKE / FTS5 = {:.1}x",
        l / f
    );
    Ok(())
}

/// A local OpenLineage receiver: counts POSTs to the Marquez path, answers 201.
async fn receiver() -> Result<(String, Arc<AtomicU64>)> {
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    let app = axum::Router::new().route(
        "/api/v1/lineage",
        axum::routing::post(move |_body: String| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::CREATED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, count))
}

fn run_event(i: u64) -> RunLifecycle {
    RunLifecycle::query(
        "insitu://provider/0x0101010101010101010101010101010101010101",
        &format!("query-{i}"),
        "SELECT region, count(*) FROM people GROUP BY region",
        Vec::new(),
        None,
    )
}

async fn delivery() -> Result<()> {
    const EVENTS: u64 = 5_000;
    println!("== outbox delivery of {EVENTS} run events to a local HTTP receiver");
    let (url, count) = receiver().await?;
    let transport = Arc::new(HttpTransport::new("bench", &url, Profile::Marquez, None));

    // Baseline: the same events posted straight to the receiver, one after another.
    let bodies: Vec<String> = (0..EVENTS)
        .map(|i| serde_json::to_string(&run_event(i).start()))
        .collect::<Result<_, _>>()?;
    let t = Instant::now();
    for b in &bodies {
        transport.send(b).await.map_err(anyhow::Error::msg)?;
    }
    let direct = EVENTS as f64 / t.elapsed().as_secs_f64();

    let dir = tempfile::tempdir()?;
    let store = AssetStore::open(&format!(
        "sqlite://{}",
        dir.path().join("outbox.db").display()
    ))
    .await?;
    let outbox: Outbox = store.lineage_outbox();
    let receivers = vec!["bench".to_string()];
    let t = Instant::now();
    for i in 0..EVENTS {
        outbox.enqueue(&run_event(i).start(), &receivers, 0).await?;
    }
    let enqueue = EVENTS as f64 / t.elapsed().as_secs_f64();
    let before = count.load(Ordering::Relaxed);
    let dispatcher = Dispatcher::new(outbox.clone(), vec![transport]);
    let t = Instant::now();
    while dispatcher.run_once(1, 500).await? > 0 {}
    let drained = EVENTS as f64 / t.elapsed().as_secs_f64();
    anyhow::ensure!(
        count.load(Ordering::Relaxed) - before == EVENTS,
        "all delivered"
    );
    anyhow::ensure!(outbox.pending().await? == 0, "outbox empty");
    println!("enqueue (one transaction per event): {enqueue:.0} events/s");
    println!(
        "outbox to receiver: {drained:.0} events/s; direct posts: {direct:.0} events/s; outbox / direct = {:.2}",
        drained / direct
    );
    Ok(())
}

async fn overhead() -> Result<()> {
    const RUNS: usize = 300;
    println!("== one Flight SQL query, lineage on against off ({RUNS} each, alternating)");
    let world = World::start().await?;
    let file = tempfile::tempdir()?;
    let path = file.path().join("people.parquet");
    write_parquet(&path, &[people_batch()?])?;
    let mut clients = Vec::new();
    let mut providers = Vec::new();
    for lineage in [false, true] {
        let provider = Provider::start(
            &world,
            ProviderOptions {
                lineage,
                ..ProviderOptions::default()
            },
        )
        .await?;
        let offer = insitu_ledger::ServiceOffer {
            service_type: ServiceType::Query,
            token: None,
            price: alloy::primitives::U256::ZERO,
            access_duration: 86_400,
            fulfill_timeout: 3_600,
        };
        let did = provider.publish(&path, "people", offer).await?;
        let agreement = world
            .ledger(CONSUMER)
            .await?
            .order(did, 0)
            .await?
            .agreement_id;
        let token = insitu_integration_tests::token_with_scope(
            &world,
            &account(CONSUMER),
            provider.address,
            &insitu_flight::query_scope(&[agreement]),
        )?;
        let client =
            insitu_flight::query_client::QueryClient::connect(&provider.endpoint, &token, None)
                .await?;
        clients.push(client);
        providers.push(provider);
    }
    let sql = "SELECT region, count(*) AS n, avg(income) FROM people GROUP BY region";
    let mut times = [Vec::new(), Vec::new()];
    for round in 0..RUNS + 20 {
        for (side, client) in clients.iter_mut().enumerate() {
            let t = Instant::now();
            let batches: Vec<_> = client.query(sql).await?.try_collect().await?;
            let took = t.elapsed();
            anyhow::ensure!(batches.iter().map(|b| b.num_rows()).sum::<usize>() == 4);
            if round >= 20 {
                times[side].push(took.as_secs_f64() * 1e6);
            }
        }
    }
    let [off, on] = times;
    let (off, on) = (median(off), median(on));
    println!(
        "median per query: lineage off {off:.0} µs, on {on:.0} µs; added {:.0} µs; on / off = {:.3}",
        on - off,
        on / off
    );
    if let Some(sink) = &providers[1].lineage_sink {
        sink.flush().await;
    }
    let pending = providers[1].catalog.lineage_outbox().pending().await?;
    println!(
        "events recorded with lineage on: {pending} (START and COMPLETE per query, and the publish)"
    );
    Ok(())
}
