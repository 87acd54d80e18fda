//! ADBC, pandas, polars and plain pyarrow.flight in a separate Python process, with the token that
//! `insitu token --agreement` printed.

use insitu_integration_tests::{CONSUMER, TEST_MNEMONIC, insitu_bin, python, workspace_root};
use serde_json::json;
use tokio::process::Command;

use super::QueryScene;
use crate::common::ROWS;

/// `insitu token --agreement <id>` for CONSUMER, as a user would run it.
pub async fn cli_token(s: &QueryScene) -> String {
    let d = &s.world.deployed;
    let out = Command::new(insitu_bin().expect("binary"))
        .args([
            "token",
            "--provider",
            &s.provider.address.to_string(),
            "--ttl",
            "10m",
        ])
        .args(["--agreement", &s.agreement.to_string()])
        .args([
            "--mnemonic-env",
            "TEST_MNEMONIC",
            "--account-index",
            &CONSUMER.to_string(),
        ])
        .env("TEST_MNEMONIC", TEST_MNEMONIC)
        .env("INSITU_RPC_URL", s.world.rpc_url())
        .env("INSITU_CHAIN_ID", d.chain_id.to_string())
        .env("INSITU_REGISTRY", d.addresses.registry.to_string())
        .env("INSITU_AGREEMENTS", d.addresses.agreements.to_string())
        .output()
        .await
        .expect("insitu token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

#[tokio::test]
async fn adbc_pandas_and_polars_query_the_gated_table() {
    let s = QueryScene::start().await.expect("scene");
    let token = cli_token(&s).await;
    let out = Command::new(python().expect("python venv"))
        .arg(workspace_root().join("integration-tests/python/flight_sql.py"))
        .args([&s.provider.endpoint, &token, "sales"])
        .output()
        .await
        .expect("python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");

    // adbc_get_objects lists exactly the entitled table, with its columns.
    assert_eq!(
        r["objects"],
        json!([{
            "catalog": "insitu", "schema": "public", "table": "sales", "type": "TABLE",
            "columns": ["id", "name", "amount"],
        }])
    );
    assert_eq!(
        r["table_schema"],
        json!([["id", "int64"], ["name", "string"], ["amount", "double"]])
    );
    let rows = ROWS as i64;
    assert_eq!(r["count"], json!(rows));
    assert_eq!(
        r["pyarrow_count"],
        json!(rows),
        "plain pyarrow.flight agrees"
    );
    assert_eq!(r["sum"], json!(rows * (rows - 1) / 2));
    assert_eq!(
        r["result_schema"],
        json!([["n", "int64"], ["total", "int64"]])
    );
    assert_eq!(
        r["prepared"],
        json!([
            [100, "customer-100"],
            [101, "customer-101"],
            [102, "customer-102"],
            [103, "customer-103"],
            [104, "customer-104"]
        ])
    );
    assert_eq!(
        r["prepared_again"],
        json!([[7, "customer-7"], [8, "customer-8"]])
    );
    assert_eq!(r["pandas_shape"], json!([1000, 3]));
    assert_eq!(r["polars_shape"], json!([1000, 3]));
    // amount = 1.5 * id for ids 0..999.
    let expected = 1.5 * (999.0 * 1000.0 / 2.0);
    assert_eq!(r["pandas_amount_sum"], json!(expected));
    assert_eq!(r["polars_amount_sum"], json!(expected));
    assert_eq!(
        r["frames_equal"],
        json!(true),
        "pandas and polars read the same frame"
    );
}
