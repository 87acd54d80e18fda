//! A local Spark 4 session reads a gated table through the Python data source in
//! `clients/python/` and computes the same aggregate as DataFusion on the provider.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use insitu_integration_tests::{python, workspace_root};
use tokio::process::Command;

use super::{QueryScene, run_sql};

#[tokio::test]
async fn spark_reads_a_gated_table_and_agrees_with_datafusion() {
    let s = QueryScene::start().await.expect("scene");
    let token = super::python::cli_token(&s).await;
    let python = python().expect("python venv");
    let out = Command::new(&python)
        .arg(workspace_root().join("integration-tests/python/spark_aggregate.py"))
        .args([&s.provider.endpoint, &token, "sales"])
        .env("PYTHONPATH", workspace_root().join("clients/python"))
        .env("PYSPARK_PYTHON", &python)
        .env("PYSPARK_DRIVER_PYTHON", &python)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .output()
        .await
        .expect("spark");
    assert!(
        out.status.success(),
        "spark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().expect("output");
    let r: serde_json::Value = serde_json::from_str(line).expect("JSON");
    assert_eq!(r["columns"], serde_json::json!(["id", "name", "amount"]));

    let mut client = s.client(&s.consumer_token()).await;
    let batches: Vec<RecordBatch> = run_sql(
        &mut client,
        "SELECT id % 10 AS bucket, count(*) AS n, sum(amount) AS total \
         FROM sales GROUP BY 1 ORDER BY 1",
    )
    .await
    .expect("datafusion aggregate");
    let mut expected = Vec::new();
    for b in &batches {
        let (bucket, n, total) = (
            b.column(0).as_primitive::<Int64Type>(),
            b.column(1).as_primitive::<Int64Type>(),
            b.column(2).as_primitive::<Float64Type>(),
        );
        for i in 0..b.num_rows() {
            expected.push((bucket.value(i), n.value(i), total.value(i)));
        }
    }
    let groups = r["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), expected.len());
    for (got, (bucket, n, total)) in groups.iter().zip(expected) {
        assert_eq!(got[0].as_i64(), Some(bucket));
        assert_eq!(got[1].as_i64(), Some(n));
        let spark_total = got[2].as_f64().expect("total");
        assert!(
            (spark_total - total).abs() <= 1e-9 * total.abs().max(1.0),
            "bucket {bucket}: spark {spark_total} vs datafusion {total}"
        );
    }
}
