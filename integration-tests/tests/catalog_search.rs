//! The catalog search specification, run on both backends: SQLite FTS5 (embedded) and
//! a real PostgreSQL server (full-text with a GIN index). Same store API, same answers.

use alloy::primitives::{Address, U256};
use insitu_catalog::{AssetStore, CatalogError, CatalogStore, Ddo, SearchQuery};
use insitu_integration_tests::catalog::{add, ddo};
use insitu_integration_tests::postgres::Postgres;
use insitu_ledger::ServiceType::{Compute, Download, Query};

const A: Address = Address::repeat_byte(0xa1);
const B: Address = Address::repeat_byte(0xb2);

struct Fixture {
    lineitem: Ddo,
    taxi: Ddo,
    hospital: Ddo,
    orders: Ddo,
    draft: Ddo,
}

async fn fill(store: &AssetStore) -> Fixture {
    let f = Fixture {
        lineitem: ddo(
            1,
            A,
            "TPC-H lineitem",
            "Line items of orders shipped by suppliers",
            &["tpch", "retail"],
            &["l_orderkey", "l_shipdate", "l_quantity"],
            &[(Download, 0), (Query, 1_000)],
        ),
        taxi: ddo(
            2,
            A,
            "Taxi trips 2025",
            "Yellow cab trips in New York with fares",
            &["mobility", "nyc"],
            &["pickup_at", "fare_amount"],
            &[(Download, 5_000)],
        ),
        hospital: ddo(
            3,
            B,
            "Hospital admissions",
            "Admissions by ward, sold as aggregates only",
            &["health"],
            &["ward", "admitted_at", "patient_id"],
            &[(Query, 20_000)],
        ),
        orders: ddo(
            4,
            B,
            "Retail orders",
            "Orders, with references to their lineitem rows",
            &["Retail"],
            &["o_orderkey", "o_totalprice"],
            &[(Compute, 100)],
        ),
        draft: ddo(
            5,
            A,
            "Lineitem draft",
            "Not registered on chain yet",
            &["tpch"],
            &["l_orderkey"],
            &[(Download, 0)],
        ),
    };
    for d in [&f.lineitem, &f.taxi, &f.hospital, &f.orders] {
        add(store, d).await.expect("add");
    }
    for i in 0..25u64 {
        let d = ddo(
            100 + i,
            A,
            &format!("Sensor readings {i}"),
            "Temperature per device per minute",
            &["iot"],
            &["device_id", "temperature"],
            &[(Download, i + 1)],
        );
        add(store, &d).await.expect("add sensor");
    }
    // Inserted but never registered: must not be found.
    store
        .insert(
            &f.draft,
            &insitu_catalog::StorageLocation {
                url: "file:///private/draft.parquet".into(),
                format: insitu_catalog::DataFormat::Parquet,
                schema_ipc: Vec::new(),
            },
        )
        .await
        .expect("insert draft");
    f
}

async fn names(store: &dyn CatalogStore, q: SearchQuery) -> Vec<String> {
    store
        .search(&q)
        .await
        .expect("search")
        .hits
        .into_iter()
        .map(|h| h.ddo.name)
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn text(t: &str) -> SearchQuery {
    SearchQuery::new().with_text(t)
}

async fn specification(store: AssetStore) {
    let f = fill(&store).await;
    let s: &dyn CatalogStore = &store;

    // Text: name before description, never an unregistered asset.
    assert_eq!(
        names(s, text("lineitem")).await,
        ["TPC-H lineitem", "Retail orders"],
        "a name hit ranks above a description hit; the unregistered draft is not found"
    );
    // A prefix of a word in a column name or the description.
    assert_eq!(names(s, text("ship")).await, ["TPC-H lineitem"]);
    // A column name as typed is a phrase: l_orderkey is not o_orderkey.
    assert_eq!(names(s, text("l_orderkey")).await, ["TPC-H lineitem"]);
    assert_eq!(
        sorted(names(s, text("orderkey")).await),
        ["Retail orders", "TPC-H lineitem"]
    );
    // Every word must match, in any field.
    assert_eq!(names(s, text("new york")).await, ["Taxi trips 2025"]);
    assert_eq!(names(s, text("YORK taxi")).await, ["Taxi trips 2025"]);
    assert!(names(s, text("york hospital")).await.is_empty());
    // Tags are searchable text too, and filters (case-insensitive).
    assert_eq!(names(s, text("mobility")).await, ["Taxi trips 2025"]);
    assert_eq!(
        sorted(names(s, SearchQuery::new().with_tag("RETAIL")).await),
        ["Retail orders", "TPC-H lineitem"]
    );
    assert_eq!(
        names(s, SearchQuery::new().with_tag("retail").with_tag("tpch")).await,
        ["TPC-H lineitem"]
    );

    // Service and price filters hold for one and the same service.
    assert_eq!(
        sorted(names(s, SearchQuery::new().with_service(Query)).await),
        ["Hospital admissions", "TPC-H lineitem"]
    );
    assert_eq!(
        names(
            s,
            SearchQuery::new()
                .with_service(Query)
                .with_price_range(None, Some(U256::from(1_000)))
        )
        .await,
        ["TPC-H lineitem"]
    );
    assert!(
        names(
            s,
            SearchQuery::new()
                .with_service(Download)
                .with_price_range(Some(U256::from(1_000)), Some(U256::from(1_000)))
        )
        .await
        .is_empty(),
        "lineitem's 1,000 is its query price, not its download price"
    );
    assert_eq!(
        sorted(
            names(
                s,
                SearchQuery::new().with_price_range(Some(U256::from(5_000)), None)
            )
            .await
        ),
        ["Hospital admissions", "Taxi trips 2025"]
    );
    let cheap = store
        .search(
            &SearchQuery::new()
                .with_service(Download)
                .with_price_range(Some(U256::from(1)), Some(U256::from(10))),
        )
        .await
        .expect("search");
    assert_eq!(cheap.total, 10, "sensors priced 1 to 10");

    // Owner, alone and with text and service.
    assert_eq!(
        sorted(names(s, SearchQuery::new().with_owner(B)).await),
        ["Hospital admissions", "Retail orders"]
    );
    assert_eq!(
        names(s, text("orders").with_owner(B)).await,
        ["Retail orders"]
    );
    assert_eq!(
        names(s, text("lineitem").with_service(Compute)).await,
        ["Retail orders"]
    );

    // Paging: newest first without text, disjoint pages that cover every match.
    let mut seen = Vec::new();
    let mut offset = 0;
    let mut pages = 0;
    loop {
        let page = store
            .search(&SearchQuery::new().with_tag("iot").with_page(offset, 10))
            .await
            .expect("page");
        assert_eq!(page.total, 25);
        assert_eq!(page.offset, offset);
        pages += 1;
        seen.extend(page.hits.iter().map(|h| h.ddo.name.clone()));
        match page.next_offset {
            Some(next) => offset = next,
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25)
        .rev()
        .map(|i| format!("Sensor readings {i}"))
        .collect();
    assert_eq!(seen, expected, "newest first, each asset once");
    let past = store
        .search(&SearchQuery::new().with_tag("iot").with_page(30, 10))
        .await
        .expect("past the end");
    assert!(past.hits.is_empty() && past.next_offset.is_none() && past.total == 25);
    let scored = store.search(&text("sensor")).await.expect("scores");
    assert_eq!(scored.total, 25);
    assert_eq!(scored.hits.len(), 20, "default page size");
    assert!(scored.hits.iter().all(|h| h.score.is_some()));

    // A single letter is a word, not a prefix of every word starting with it.
    assert!(names(s, text("t")).await.is_empty());
    assert_eq!(names(s, text("ta")).await, ["Taxi trips 2025"]);

    // Query syntax typed by a user is searched as words, never parsed.
    for hostile in [
        r#""lineitem OR *"#,
        "lineitem' OR '1'='1",
        "NEAR(lineitem orders)",
        "l_orderkey:* | !x",
        "-- ; DROP TABLE assets",
    ] {
        store
            .search(&text(hostile))
            .await
            .unwrap_or_else(|e| panic!("{hostile:?} failed: {e}"));
    }
    assert!(!names(s, text("lineitem")).await.is_empty(), "still there");

    // Bad searches are refused with the reason.
    for (bad, why) in [
        (SearchQuery::new().with_page(0, 0), "page size"),
        (SearchQuery::new().with_page(0, 101), "page size"),
        (
            SearchQuery::new().with_page(10_001, 10),
            "narrow the search",
        ),
        (
            SearchQuery::new().with_price_range(Some(U256::from(2)), Some(U256::from(1))),
            "above the maximum",
        ),
        (text("!!! ;;"), "no letters or digits"),
    ] {
        match store.search(&bad).await {
            Err(CatalogError::Invalid(m)) => assert!(m.contains(why), "{m}"),
            other => panic!("{bad:?} gave {other:?}"),
        }
    }

    // A metadata update is a new version, and search follows it.
    let mut taxi2 = f.taxi.clone();
    taxi2.name = "Taxi trips 2026".into();
    taxi2.tags.push("transport".into());
    assert_eq!(store.update(&taxi2).await.expect("update"), 2);
    assert!(names(s, text("2025")).await.is_empty());
    assert_eq!(names(s, text("2026")).await, ["Taxi trips 2026"]);
    assert_eq!(
        names(s, SearchQuery::new().with_tag("transport")).await,
        ["Taxi trips 2026"]
    );
    let history = s.versions(f.taxi.did).await.expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].ddo, f.taxi);
    assert_eq!(history[1].ddo, taxi2);
    assert_eq!(
        history[1].metadata_hash,
        taxi2.metadata_hash().expect("hash").to_string()
    );
    assert_ne!(history[0].metadata_hash, history[1].metadata_hash);
    let hit = store.search(&text("2026")).await.expect("search");
    assert_eq!(hit.hits[0].version, 2);
    // An unregistered asset cannot be updated or read through the reader interface.
    assert!(store.update(&f.draft).await.is_err());
    assert!(s.asset(f.draft.did).await.expect("asset").is_none());

    // A removed asset is no longer found.
    store.remove(f.lineitem.did).await.expect("remove");
    assert_eq!(names(s, text("lineitem")).await, ["Retail orders"]);
    assert!(
        s.versions(f.lineitem.did)
            .await
            .expect("versions")
            .is_empty()
    );
    let _ = (&f.hospital, &f.orders);
}

/// A catalog database file in `dir`, reopened by the tests that simulate older versions.
fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("catalog.db").display())
}

#[tokio::test]
async fn search_finds_the_right_assets_on_sqlite_fts5() {
    let dir = tempfile::tempdir().expect("dir");
    let url = sqlite_url(&dir);
    specification(AssetStore::open(&url).await.expect("open")).await;
}

#[tokio::test]
async fn search_finds_the_right_assets_on_postgres_full_text() {
    let pg = Postgres::start().await.expect("postgres");
    specification(AssetStore::open(&pg.url()).await.expect("open")).await;
}

#[tokio::test]
async fn catalogs_written_before_search_existed_are_indexed_on_open() {
    let dir = tempfile::tempdir().expect("dir");
    let url = sqlite_url(&dir);
    let store = AssetStore::open(&url).await.expect("open");
    let d = ddo(
        9,
        A,
        "Legacy asset",
        "Published by an older insitu",
        &["old"],
        &["x"],
        &[(Download, 0)],
    );
    add(&store, &d).await.expect("add");
    // Simulate the older schema: no index rows, no version history.
    for sql in [
        "DELETE FROM asset_fts",
        "DELETE FROM asset_search",
        "DELETE FROM asset_tags",
        "DELETE FROM asset_services",
        "DELETE FROM asset_versions",
    ] {
        sqlx::query(sql).execute(store.pool()).await.expect(sql);
    }
    assert!(names(&store, text("legacy")).await.is_empty());
    drop(store);
    let reopened = AssetStore::open(&url).await.expect("reopen");
    assert_eq!(names(&reopened, text("legacy")).await, ["Legacy asset"]);
    assert_eq!(reopened.history(d.did).await.expect("history").len(), 1);
}

#[tokio::test]
async fn a_text_index_without_prefixes_is_rebuilt_on_open() {
    let dir = tempfile::tempdir().expect("dir");
    let url = sqlite_url(&dir);
    let store = AssetStore::open(&url).await.expect("open");
    let d = ddo(
        11,
        A,
        "Customer churn",
        "Monthly churn per customer segment",
        &["crm"],
        &["customer_id", "churned"],
        &[(Download, 0)],
    );
    add(&store, &d).await.expect("add");
    // The text index as versions before the prefix index made it, on one connection
    // (another's cached schema would still hold the dropped table).
    let mut conn = store.pool().acquire().await.expect("connection");
    for sql in [
        "CREATE VIRTUAL TABLE old_fts USING fts5(name, description, tags, columns,
            tokenize = 'porter unicode61 remove_diacritics 2')",
        "INSERT INTO old_fts (rowid, name, description, tags, columns)
            SELECT rowid, name, description, tags, columns FROM asset_fts",
        "DROP TABLE asset_fts",
        "ALTER TABLE old_fts RENAME TO asset_fts",
    ] {
        sqlx::query(sql).execute(&mut *conn).await.expect(sql);
    }
    drop(conn);
    assert_eq!(names(&store, text("customer_id")).await, ["Customer churn"]);
    drop(store);
    let reopened = AssetStore::open(&url).await.expect("reopen");
    let (definition,): (String,) =
        sqlx::query_as("SELECT sql FROM sqlite_master WHERE name = 'asset_fts'")
            .fetch_one(reopened.pool())
            .await
            .expect("definition");
    assert!(definition.contains("prefix"), "{definition}");
    for t in ["customer_id", "custom", "churn", "crm"] {
        assert_eq!(names(&reopened, text(t)).await, ["Customer churn"], "{t}");
    }
}
