//! The Rust clients: insitu's `QueryClient`, arrow-flight's `FlightSqlServiceClient` for
//! the metadata surface, and the `insitu query` command.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetPrimaryKeys, CommandGetXdbcTypeInfo};
use futures::TryStreamExt;
use insitu_flight::query_client::QueryClient;
use insitu_integration_tests::data::{fingerprint, sample_batches};
use insitu_integration_tests::{CONSUMER, TEST_MNEMONIC, insitu_bin};
use insitu_ledger::{AgreementState, Ledger};
use tokio::process::Command;

use super::QueryScene;
use crate::common::ROWS;

fn int(batch: &RecordBatch, column: &str) -> i64 {
    batch
        .column_by_name(column)
        .expect("column")
        .as_primitive::<Int64Type>()
        .value(0)
}

#[tokio::test]
async fn the_rust_client_queries_its_table_and_sees_nothing_else() {
    let s = QueryScene::start().await.expect("scene");
    let mut client = QueryClient::connect(&s.provider.endpoint, &s.consumer_token(), None)
        .await
        .expect("connect");

    let tables = client.tables().await.expect("tables");
    let names: Vec<&str> = tables.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["sales"], "only the entitled asset is visible");
    let columns: Vec<(String, DataType)> = tables[0]
        .1
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    assert_eq!(
        columns,
        [
            ("id".to_string(), DataType::Int64),
            ("name".to_string(), DataType::Utf8),
            ("amount".to_string(), DataType::Float64),
        ]
    );

    let batches: Vec<RecordBatch> = client
        .query("SELECT count(*) AS n, sum(id) AS total FROM sales")
        .await
        .expect("query")
        .try_collect()
        .await
        .expect("stream");
    let (rows, id_sum) = fingerprint(&sample_batches(ROWS).expect("data"));
    assert_eq!(int(&batches[0], "n") as u64, rows as u64);
    assert_eq!(int(&batches[0], "total"), id_sum);

    // Strings leave as plain Utf8 even though DataFusion reads them as views.
    let batches: Vec<RecordBatch> = client
        .query("SELECT name FROM sales WHERE id BETWEEN 10 AND 12 ORDER BY id DESC")
        .await
        .expect("query")
        .try_collect()
        .await
        .expect("stream");
    let names = batches[0].column(0);
    assert_eq!(names.data_type(), &DataType::Utf8);
    let names: Vec<&str> = names.as_string::<i32>().iter().flatten().collect();
    assert_eq!(names, ["customer-12", "customer-11", "customer-10"]);

    // The first use fulfilled the agreement on chain, releasing the escrow.
    let agreement = s
        .provider
        .ledger
        .agreement(s.agreement)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(agreement.state, AgreementState::Fulfilled);
}

#[tokio::test]
async fn a_token_with_two_agreements_joins_both_tables() {
    let s = QueryScene::start().await.expect("scene");
    let ledger = s.world.ledger(CONSUMER).await.expect("ledger");
    let second = ledger.order(s.other, 0).await.expect("order").agreement_id;
    let token = s.token(CONSUMER, &[s.agreement, second]);
    let mut client = QueryClient::connect(&s.provider.endpoint, &token, None)
        .await
        .expect("connect");
    let mut names: Vec<String> = client
        .tables()
        .await
        .expect("tables")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    assert_eq!(names, ["other", "sales"]);
    let batches: Vec<RecordBatch> = client
        .query("SELECT count(*) AS n FROM sales s JOIN other o ON s.id = o.id")
        .await
        .expect("query")
        .try_collect()
        .await
        .expect("stream");
    // `other` holds the first 10,000 rows of the same data.
    assert_eq!(int(&batches[0], "n"), 10_000);
}

#[tokio::test]
async fn the_metadata_surface_answers_with_typed_results() {
    let s = QueryScene::start().await.expect("scene");
    let channel = tonic::transport::Channel::from_shared(s.provider.endpoint.clone())
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = FlightSqlServiceClient::new(channel);
    client.set_header("authorization", format!("Bearer {}", s.consumer_token()));

    async fn fetch(
        client: &mut FlightSqlServiceClient<tonic::transport::Channel>,
        info: arrow_flight::FlightInfo,
    ) -> Vec<RecordBatch> {
        let ticket = info.endpoint[0].ticket.clone().expect("ticket");
        client
            .do_get(ticket)
            .await
            .expect("do_get")
            .try_collect()
            .await
            .expect("stream")
    }

    let info = client.get_catalogs().await.expect("catalogs");
    let batches = fetch(&mut client, info).await;
    let catalogs: Vec<&str> = batches[0]
        .column(0)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(catalogs, ["insitu"]);

    let info = client.get_table_types().await.expect("table types");
    let batches = fetch(&mut client, info).await;
    assert_eq!(batches[0].column(0).as_string::<i32>().value(0), "TABLE");

    let info = client.get_sql_info(vec![]).await.expect("sql info");
    let rows: usize = fetch(&mut client, info)
        .await
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert!(rows >= 80, "GetSqlInfo is dense: {rows} entries");

    let info = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .expect("xdbc");
    let rows: usize = fetch(&mut client, info)
        .await
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert!(rows >= 10);

    let info = client
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "sales".into(),
        })
        .await
        .expect("primary keys");
    let schema = info.clone().try_decode_schema().expect("schema");
    assert_eq!(schema.field(2).name(), "table_name");
    let rows: usize = fetch(&mut client, info)
        .await
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(
        rows, 0,
        "no keys across shared assets, but the shape is right"
    );

    // A prepared statement with a bound parameter, through arrow-flight's own client.
    let mut prepared = client
        .prepare("SELECT count(*) AS n FROM sales WHERE id < ?".into(), None)
        .await
        .expect("prepare");
    assert_eq!(
        prepared.dataset_schema().expect("schema").field(0).name(),
        "n"
    );
    let param = RecordBatch::try_from_iter([(
        "$1",
        std::sync::Arc::new(arrow::array::Int64Array::from(vec![100])) as arrow::array::ArrayRef,
    )])
    .expect("batch");
    prepared.set_parameters(param).expect("bind");
    let info = prepared.execute().await.expect("execute");
    let batches = fetch(&mut client, info).await;
    assert_eq!(int(&batches[0], "n"), 100);
}

#[tokio::test]
async fn insitu_query_prints_a_table_and_lists_tables() {
    let s = QueryScene::start().await.expect("scene");
    let d = &s.world.deployed;
    let run = |args: Vec<String>| {
        let mut cmd = Command::new(insitu_bin().expect("binary"));
        cmd.args(args)
            .args(["--mnemonic-env", "TEST_MNEMONIC", "--account-index"])
            .arg(CONSUMER.to_string())
            .env("TEST_MNEMONIC", TEST_MNEMONIC)
            .env("INSITU_RPC_URL", s.world.rpc_url())
            .env("INSITU_CHAIN_ID", d.chain_id.to_string())
            .env("INSITU_REGISTRY", d.addresses.registry.to_string())
            .env("INSITU_AGREEMENTS", d.addresses.agreements.to_string())
            .env("INSITU_ENDPOINT", &s.provider.endpoint);
        cmd.output()
    };
    let out = run(vec![
        "query".into(),
        s.sales.to_string(),
        "SELECT count(*) AS n FROM sales WHERE amount > 30000".into(),
        "--agreement".into(),
        s.agreement.to_string(),
    ])
    .await
    .expect("insitu query");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // amount = 1.5 * id, so ids 20,001..24,999 qualify.
    assert!(stdout.contains("| 4999 |"), "{stdout}");

    let out = run(vec![
        "query".into(),
        s.sales.to_string(),
        "--tables".into(),
        "--agreement".into(),
        s.agreement.to_string(),
    ])
    .await
    .expect("insitu query --tables");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "sales (id Int64, name Utf8, amount Float64)");

    // A refusal is a clear message and a failing exit status.
    let out = run(vec![
        "query".into(),
        s.sales.to_string(),
        "DROP TABLE sales".into(),
        "--agreement".into(),
        s.agreement.to_string(),
    ])
    .await
    .expect("insitu query");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("only queries"), "{stderr}");
}
