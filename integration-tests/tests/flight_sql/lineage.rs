//! Query runs become OpenLineage events: START when planned, COMPLETE with the rows
//! returned when the stream ends, FAIL when a limit ends it; one run id per query.

use insitu_integration_tests::data::{people_batch, write_parquet};
use insitu_integration_tests::{CONSUMER, Provider, ProviderOptions, World};
use serde_json::Value;

use super::query_offer;
use crate::flight_sql::policy::{order, query};

/// A provider with lineage on, serving `batches` as the free query asset `name`.
async fn lineage_provider(
    world: &World,
    name: &str,
    batches: &[arrow::array::RecordBatch],
    constraints: Option<&str>,
) -> (Provider, insitu_ledger::Did) {
    let provider = Provider::start(
        world,
        ProviderOptions {
            lineage: true,
            ..ProviderOptions::default()
        },
    )
    .await
    .expect("provider");
    let file = provider.path(&format!("{name}.parquet"));
    write_parquet(&file, batches).expect("parquet");
    let did = provider
        .publish_constrained(&file, name, query_offer(0, None), constraints)
        .await
        .expect("publish");
    (provider, did)
}

#[tokio::test]
async fn query_runs_are_recorded_start_to_end() {
    let world = World::start().await.expect("world");
    let people = [people_batch().expect("batch")];
    let (provider, did) = lineage_provider(&world, "people", &people, Some("row_limit = 50")).await;
    let agreement = order(&world, CONSUMER, did).await;
    let rows = query(
        &provider,
        &world,
        CONSUMER,
        &[agreement],
        "SELECT region, count(*) FROM people GROUP BY region",
    )
    .await
    .expect("query");
    assert_eq!(rows.len(), 4);
    query(
        &provider,
        &world,
        CONSUMER,
        &[agreement],
        "SELECT id FROM people",
    )
    .await
    .expect_err("over the row limit");
    provider
        .lineage_sink
        .as_ref()
        .expect("lineage on")
        .flush()
        .await;
    let dispatcher = provider.lineage.as_ref().expect("lineage on");
    let sent = dispatcher
        .run_once(u64::MAX / 2, 500)
        .await
        .expect("deliver");
    assert_eq!(
        sent, 5,
        "the publish's DatasetEvent, two STARTs, one COMPLETE, one FAIL"
    );
    let text = std::fs::read_to_string(provider.path("lineage.jsonl")).expect("lineage file");
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let of =
        |kind: &str| -> Vec<&Value> { events.iter().filter(|e| e["eventType"] == kind).collect() };
    let (starts, completes, fails) = (of("START"), of("COMPLETE"), of("FAIL"));
    let published: Vec<&Value> = events
        .iter()
        .filter(|e| e.get("dataset").is_some())
        .collect();
    assert_eq!(published.len(), 1);
    assert_eq!(
        published[0]["dataset"]["facets"]["lifecycleStateChange"]["lifecycleStateChange"],
        "CREATE"
    );
    assert_eq!((starts.len(), completes.len(), fails.len()), (2, 1, 1));
    let complete = completes[0];
    assert!(
        starts
            .iter()
            .any(|s| s["run"]["runId"] == complete["run"]["runId"]),
        "one run id from plan to end"
    );
    assert_eq!(
        complete["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"],
        4
    );
    assert_eq!(
        complete["job"]["facets"]["sql"]["query"],
        "SELECT region, count(*) FROM people GROUP BY region"
    );
    assert_eq!(
        complete["run"]["facets"]["insitu_agreement"]["agreementId"],
        agreement.to_string()
    );
    let input = &complete["inputs"][0];
    assert_eq!(input["namespace"], "file://");
    assert_eq!(
        input["facets"]["symlinks"]["identifiers"][0]["name"],
        did.to_string()
    );
    assert!(
        fails[0]["run"]["facets"]["errorMessage"]["message"]
            .as_str()
            .expect("message")
            .contains("row_limit")
    );
    assert!(
        starts
            .iter()
            .any(|s| s["run"]["runId"] == fails[0]["run"]["runId"])
    );
}

#[tokio::test]
async fn a_query_abandoned_mid_stream_is_recorded_as_aborted() {
    use futures::StreamExt;
    use insitu_flight::query_client::QueryClient;
    use insitu_integration_tests::data::sample_batches;
    use insitu_integration_tests::{account, token_with_scope};

    let world = World::start().await.expect("world");
    let big = sample_batches(1_000_000).expect("data");
    let (provider, did) = lineage_provider(&world, "big", &big, None).await;
    let agreement = order(&world, CONSUMER, did).await;
    let token = token_with_scope(
        &world,
        &account(CONSUMER),
        provider.address,
        &insitu_flight::query_scope(&[agreement]),
    )
    .expect("token");
    let mut client = QueryClient::connect(&provider.endpoint, &token, None)
        .await
        .expect("connect");
    let mut stream = client.query("SELECT * FROM big").await.expect("query");
    let first = stream.next().await.expect("a batch").expect("ok");
    assert!(first.num_rows() > 0);
    drop(stream);
    drop(client);

    // The server notices the cancelled stream on its own schedule: poll the outbox.
    let dispatcher = provider.lineage.as_ref().expect("lineage on");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let aborted = loop {
        dispatcher
            .run_once(u64::MAX / 2, 500)
            .await
            .expect("deliver");
        let text = std::fs::read_to_string(provider.path("lineage.jsonl")).unwrap_or_default();
        let found = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("json"))
            .find(|e| e["eventType"] == "ABORT");
        if let Some(e) = found {
            break e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no ABORT recorded for the abandoned query"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let sent = aborted["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"]
        .as_u64()
        .expect("rows");
    assert!(
        sent < 1_000_000,
        "only part of the result went out before the client left ({sent} rows)"
    );
    let text = std::fs::read_to_string(provider.path("lineage.jsonl")).expect("file");
    assert!(
        !text.contains("\"COMPLETE\""),
        "an abandoned run is not complete"
    );
}
