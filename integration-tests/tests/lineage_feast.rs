//! The whole governance path with real peers: `insitu serve` (the binary, on anvil)
//! configured with two lineage receivers, Feast's OpenLineage server among them, and
//! the catalog's HTTP API. A configured asset is published, found three ways (HTTP,
//! Flight `insitu.search`, `insitu search`), updated with `insitu update`, and queried;
//! Feast then shows the dataset with schema, owner and description, and the run as
//! COMPLETE.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use insitu_catalog::SearchQuery;
use insitu_flight::query_client::QueryClient;
use insitu_flight::search_client::SearchClient;
use insitu_integration_tests::data::{people_batch, write_parquet};
use insitu_integration_tests::feast::FeastLineage;
use insitu_integration_tests::{CONSUMER, PROVIDER, World, account, token_with_scope};
use insitu_ledger::{Did, Ledger};
use serde_json::Value;
use tokio::process::Command;

const API_KEY: &str = "feast-test-key";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The CLI on anvil, acting as account `who`.
fn insitu(world: &World, dir: &Path, who: u32) -> Command {
    let mut c = insitu_integration_tests::provider::cli_on(world, dir, who).expect("binary");
    c.env("FEAST_API_KEY", API_KEY);
    c
}

async fn run(cmd: &mut Command) -> String {
    let out = cmd.output().await.expect("run insitu");
    assert!(
        out.status.success(),
        "insitu failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// Polls `check` until it returns `Some`, or fails after `limit` with `what`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn feast_sees_the_published_asset_and_its_query_run_from_insitu_serve() {
    let world = World::start().await.expect("world");
    let feast = FeastLineage::start(API_KEY).await.expect("feast");
    let work = tempfile::tempdir().expect("dir");
    let dir = work.path();
    write_parquet(
        &dir.join("people.parquet"),
        &[people_batch().expect("batch")],
    )
    .expect("parquet");
    let (flight_port, api_port) = (free_port(), free_port());
    std::fs::write(
        dir.join("insitu.toml"),
        format!(
            r#"listen = "127.0.0.1:{flight_port}"
admin_listen = "127.0.0.1:0"

[[assets]]
source = "people.parquet"
name = "people"
description = "People by region, for the lineage test"
tags = ["lineage", "census"]
service = "query"

[[lineage]]
name = "feast"
kind = "http"
url = "{feast}"
profile = "marquez"
token_env = "FEAST_API_KEY"

[[lineage]]
name = "audit-file"
kind = "file"
path = "{file}"

[catalog_api]
listen = "127.0.0.1:{api_port}"
allow_origin = "*"
"#,
            feast = feast.url(),
            file = dir.join("lineage.jsonl").display(),
        ),
    )
    .expect("config");
    let _serve = insitu(&world, dir, PROVIDER)
        .args(["serve", "--config", "insitu.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("serve");
    let endpoint = format!("http://127.0.0.1:{flight_port}");
    eventually(Duration::from_secs(60), "serve did not listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", flight_port))
            .await
            .ok()
    })
    .await;

    // 1. The HTTP API finds the configured asset.
    let http = |path: String| async move {
        let resp = reqwest::get(format!("http://127.0.0.1:{api_port}{path}"))
            .await
            .ok()?;
        let cors = resp
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap_or("").to_string());
        let status = resp.status().as_u16();
        let body: Value = serde_json::from_str(&resp.text().await.ok()?).ok()?;
        Some((status, cors, body))
    };
    let (status, cors, page) = http("/api/v1/search?q=census+peop&service=query".into())
        .await
        .expect("search API");
    assert_eq!(status, 200, "{page}");
    assert_eq!(cors.as_deref(), Some("*"));
    assert_eq!(page["total"], 1, "{page}");
    let did: Did = page["hits"][0]["ddo"]["did"]
        .as_str()
        .expect("did")
        .parse()
        .expect("a DID");
    let (status, _, body) = http("/api/v1/search?service=sell".into())
        .await
        .expect("bad search");
    assert_eq!(status, 400);
    assert!(body["error"].as_str().expect("error").contains("service"));
    let text = serde_json::to_string(&page).expect("json");
    assert!(
        !text.contains("people.parquet"),
        "search answers carry public metadata only, never the location"
    );

    // 2. Flight `insitu.search`, with a token signed for searching and nothing else.
    let provider = account(PROVIDER).address();
    let token = token_with_scope(&world, &account(CONSUMER), provider, "search").expect("token");
    let mut client = SearchClient::connect(&endpoint, &token, None)
        .await
        .expect("connect");
    let found = client
        .search(&SearchQuery::new().with_tag("census"))
        .await
        .expect("flight search");
    assert_eq!(found.hits.len(), 1);
    assert_eq!(found.hits[0].ddo.did, did);
    let wrong = token_with_scope(&world, &account(CONSUMER), provider, "access").expect("token");
    let err = SearchClient::connect(&endpoint, &wrong, None)
        .await
        .expect("connect")
        .search(&SearchQuery::new())
        .await
        .expect_err("a token for another action");
    assert!(err.to_string().contains("scope `search`"), "{err}");

    // 3. The CLI, remotely.
    let out = run(insitu(&world, dir, CONSUMER).args([
        "search",
        "people",
        "--endpoint",
        &endpoint,
        "--provider",
        &provider.to_string(),
    ]))
    .await;
    assert!(out.contains(&did.to_string()), "{out}");

    // The owner changes the description: a new version, a new hash on chain.
    let version = run(insitu(&world, dir, PROVIDER).args([
        "update",
        &did.to_string(),
        "--description",
        "People by region, version two",
    ]))
    .await;
    assert_eq!(version.trim(), "2");
    let on_chain = world
        .ledger(CONSUMER)
        .await
        .expect("ledger")
        .asset(did)
        .await
        .expect("asset")
        .expect("registered");
    let (_, _, versions) = http(format!("/api/v1/assets/{did}/versions"))
        .await
        .expect("versions");
    assert_eq!(versions.as_array().expect("list").len(), 2);
    assert_eq!(
        versions[1]["metadata_hash"],
        on_chain.metadata_hash.to_string(),
        "the chain holds the hash of the latest version"
    );

    // A consumer orders the query service and runs an aggregate.
    let agreement = world
        .ledger(CONSUMER)
        .await
        .expect("ledger")
        .order(did, 0)
        .await
        .expect("order")
        .agreement_id;
    let token = token_with_scope(
        &world,
        &account(CONSUMER),
        provider,
        &insitu_flight::query_scope(&[agreement]),
    )
    .expect("token");
    let mut q = QueryClient::connect(&endpoint, &token, None)
        .await
        .expect("connect");
    let batches: Vec<_> = q
        .query("SELECT region, count(*) AS n FROM people GROUP BY region")
        .await
        .expect("query")
        .try_collect()
        .await
        .expect("rows");
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 4);

    // Feast shows the dataset (named by its location) with schema, owner and the
    // updated description, and the query run as COMPLETE.
    let owner = format!("ethereum:{provider:#x}");
    let dataset = eventually(
        Duration::from_secs(60),
        "Feast never showed the updated dataset",
        || async {
            feast.datasets().await.ok()?.into_iter().find(|d| {
                d["dataset_name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("/people.parquet"))
                    && d["description"] == "People by region, version two"
            })
        },
    )
    .await;
    assert_eq!(dataset["dataset_namespace"], "file://");
    assert_eq!(dataset["owner_name"], owner.as_str());
    let schema: Value =
        serde_json::from_str(dataset["schema_json"].as_str().expect("schema")).expect("json");
    let fields: Vec<&str> = schema["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["name"].as_str().expect("name"))
        .collect();
    assert_eq!(fields, ["id", "name", "email", "region", "age", "income"]);
    let run = eventually(
        Duration::from_secs(60),
        "Feast never showed a COMPLETE query run",
        || async {
            feast
                .runs()
                .await
                .ok()?
                .into_iter()
                .find(|r| r["state"] == "COMPLETE")
        },
    )
    .await;
    assert!(
        run["job_name"].as_str().expect("job").starts_with("query."),
        "{run}"
    );
    let detail = feast
        .get(&format!(
            "/api/v1/lineage/openlineage/runs/{}",
            run["run_id"].as_str().expect("id")
        ))
        .await
        .expect("run detail");
    assert!(
        detail["inputs"][0]["name"]
            .as_str()
            .expect("input")
            .ends_with("/people.parquet"),
        "{detail}"
    );

    // The second receiver got the same four events: publish, update, start, complete.
    let kinds = eventually(
        Duration::from_secs(60),
        "the file receiver did not get all four events",
        || async {
            let text = std::fs::read_to_string(dir.join("lineage.jsonl")).ok()?;
            let kinds: Vec<String> = text
                .lines()
                .map(|l| {
                    let e: Value = serde_json::from_str(l).expect("json");
                    e["eventType"].as_str().map_or_else(
                        || {
                            e["dataset"]["facets"]["lifecycleStateChange"]["lifecycleStateChange"]
                                .as_str()
                                .unwrap_or("?")
                                .to_string()
                        },
                        str::to_string,
                    )
                })
                .collect();
            (kinds.len() >= 4).then_some(kinds)
        },
    )
    .await;
    assert_eq!(kinds, ["CREATE", "ALTER", "START", "COMPLETE"]);
}
