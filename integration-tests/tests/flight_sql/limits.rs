//! Per-query limits: memory, time, cancellation by the client and by `CancelFlightInfo`.
//! The server keeps serving others in every case. Waiting for the server to notice a
//! gone client polls a counter until a generous deadline; nothing here times the server.

use std::time::Duration;

use arrow_flight::CancelFlightInfoRequest;
use futures::StreamExt;
use insitu_integration_tests::ProviderOptions;
use tonic::Code;

use super::{QueryScene, run_sql, statement};

/// Every row of `sales` against every other: 625 million rows, far more than the
/// limits below allow, and slow enough to still be running when cancelled.
const HEAVY: &str = "SELECT a.name || b.name AS pair FROM sales a CROSS JOIN sales b ORDER BY pair";

/// 15.6 trillion joined rows, each computed (a plain count would be answered from
/// statistics): it runs until stopped.
const ENDLESS: &str =
    "SELECT sum(a.id * b.id + c.id) FROM sales a CROSS JOIN sales b CROSS JOIN sales c";

fn limited(memory: usize, timeout: Duration) -> ProviderOptions {
    ProviderOptions {
        query_limits: Some(insitu_flight::QueryLimits {
            memory_bytes: memory,
            timeout,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Starts ENDLESS as `client` and returns once the server counts it as running.
async fn start_endless(
    s: &QueryScene,
    client: &mut arrow_flight::FlightClient,
) -> (
    arrow_flight::FlightInfo,
    arrow_flight::decode::FlightRecordBatchStream,
) {
    let info = client
        .get_flight_info(statement(ENDLESS))
        .await
        .expect("plan");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let stream = client.do_get(ticket).await.expect("started");
    for _ in 0..600 {
        if s.provider.sql.stats().active == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (info, stream)
}

async fn until_idle(s: &QueryScene) -> insitu_flight::QueryStats {
    for _ in 0..600 {
        let stats = s.provider.sql.stats();
        if stats.active == 0 {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("queries still active: {:?}", s.provider.sql.stats());
}

#[tokio::test]
async fn a_query_over_the_memory_limit_fails_cleanly_and_others_still_run() {
    let s = QueryScene::start_with(limited(8 * 1024 * 1024, Duration::from_secs(300)))
        .await
        .expect("scene");
    let mut client = s.client(&s.consumer_token()).await;
    let err = run_sql(&mut client, HEAVY)
        .await
        .expect_err("over the limit");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("memory"), "{}", err.message());

    // Another consumer session, and the same client, are served as before.
    let batches = run_sql(&mut client, "SELECT count(*) AS n FROM sales")
        .await
        .expect("a small query after the failure");
    assert_eq!(batches[0].num_rows(), 1);
    let stats = until_idle(&s).await;
    assert_eq!(stats.failed, 1, "{stats:?}");
    assert_eq!(stats.completed, 1, "{stats:?}");
}

#[tokio::test]
async fn a_query_over_the_time_limit_is_stopped() {
    let s = QueryScene::start_with(limited(512 * 1024 * 1024, Duration::from_secs(1)))
        .await
        .expect("scene");
    let mut client = s.client(&s.consumer_token()).await;
    let err = run_sql(&mut client, ENDLESS)
        .await
        .expect_err("over the time limit");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err.message());
    until_idle(&s).await;
    run_sql(&mut client, "SELECT 1 AS one")
        .await
        .expect("the provider still answers");
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_query() {
    let s = QueryScene::start().await.expect("scene");
    {
        let mut client = s.client(&s.consumer_token()).await;
        let (_, stream) = start_endless(&s, &mut client).await;
        assert_eq!(s.provider.sql.stats().active, 1);
        drop(stream);
    }
    let stats = until_idle(&s).await;
    assert_eq!(stats.abandoned, 1, "{stats:?}");
    assert_eq!(stats.completed, 0, "{stats:?}");
}

#[tokio::test]
async fn cancel_flight_info_stops_a_running_query() {
    let s = QueryScene::start().await.expect("scene");
    let mut client = s.client(&s.consumer_token()).await;
    let (info, mut stream) = start_endless(&s, &mut client).await;
    let mut canceller = s.client(&s.consumer_token()).await;
    let result = canceller
        .cancel_flight_info(CancelFlightInfoRequest::new(info.clone()))
        .await
        .expect("cancel");
    assert_eq!(result.status, arrow_flight::CancelStatus::Cancelled as i32);
    let end = stream.next().await.expect("an answer");
    let status = crate::common::status(end.expect_err("the stream ends with an error"));
    assert_eq!(status.code(), Code::Cancelled, "{}", status.message());
    until_idle(&s).await;

    // A query cancelled before its DoGet never runs.
    let info = client
        .get_flight_info(statement("SELECT 1"))
        .await
        .expect("plan");
    canceller
        .cancel_flight_info(CancelFlightInfoRequest::new(info.clone()))
        .await
        .expect("cancel");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let refused = match client.do_get(ticket).await {
        Ok(mut s) => s.next().await.and_then(|r| r.err()),
        Err(e) => Some(e),
    };
    let status = crate::common::status(refused.expect("refused"));
    assert_eq!(status.code(), Code::Cancelled);
}

#[tokio::test]
async fn queries_beyond_the_concurrency_cap_are_refused_not_queued() {
    let s = QueryScene::start_with(ProviderOptions {
        query_limits: Some(insitu_flight::QueryLimits {
            max_concurrent: 1,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("scene");
    let mut first = s.client(&s.consumer_token()).await;
    let (_, running) = start_endless(&s, &mut first).await;
    let mut second = s.client(&s.consumer_token()).await;
    let err = run_sql(&mut second, "SELECT 1 AS one")
        .await
        .expect_err("no slot left");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(
        err.message().contains("already running"),
        "{}",
        err.message()
    );
    drop(running);
    until_idle(&s).await;
    run_sql(&mut second, "SELECT 1 AS one")
        .await
        .expect("a slot is free again");
}
