//! Query runs become OpenLineage events: START when planned, COMPLETE with the rows
//! returned when the stream ends, FAIL when a limit ends it; one run id per query.

use insitu_integration_tests::data::{people_batch, write_parquet};
use insitu_integration_tests::{CONSUMER, Provider, ProviderOptions, World};
use serde_json::Value;

use super::query_offer;
use crate::flight_sql::policy::{order, query};

#[tokio::test]
async fn query_runs_are_recorded_start_to_end() {
    let world = World::start().await.expect("world");
    let provider = Provider::start(
        &world,
        ProviderOptions {
            lineage: true,
            ..ProviderOptions::default()
        },
    )
    .await
    .expect("provider");
    let file = provider.path("people.parquet");
    write_parquet(&file, &[people_batch().expect("batch")]).expect("parquet");
    let did = provider
        .publish_constrained(
            &file,
            "people",
            query_offer(0, None),
            Some("row_limit = 50"),
        )
        .await
        .expect("publish");
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
    let dispatcher = provider.lineage.as_ref().expect("lineage on");
    let sent = dispatcher
        .run_once(u64::MAX / 2, 500)
        .await
        .expect("deliver");
    assert_eq!(sent, 4, "two STARTs, one COMPLETE, one FAIL");
    let text = std::fs::read_to_string(provider.path("lineage.jsonl")).expect("lineage file");
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let of =
        |kind: &str| -> Vec<&Value> { events.iter().filter(|e| e["eventType"] == kind).collect() };
    let (starts, completes, fails) = (of("START"), of("COMPLETE"), of("FAIL"));
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
