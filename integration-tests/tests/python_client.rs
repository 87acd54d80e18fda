//! A real pyarrow.flight client in a separate Python process, using the token printed by
//! `insitu token`.

use tokio::process::Command;

use insitu_integration_tests::data::{fingerprint, sample_batches};
use insitu_integration_tests::{CONSUMER, TEST_MNEMONIC, insitu_bin, python, workspace_root};

use crate::common::{ROWS, Scene};

#[tokio::test]
async fn pyarrow_downloads_with_the_token_that_insitu_token_printed() {
    let s = Scene::start().await.expect("scene");
    let agreement = s.order(CONSUMER, s.paid).await.expect("order");
    let d = &s.world.deployed;
    let out = Command::new(insitu_bin().expect("binary"))
        .args([
            "token",
            "--provider",
            &s.provider.address.to_string(),
            "--ttl",
            "10m",
        ])
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
    let token = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string();
    assert!(!token.is_empty());

    let script = workspace_root().join("integration-tests/python/download.py");
    let (rows, sum) = fingerprint(&sample_batches(ROWS).expect("data"));
    for mode in ["bearer", "basic"] {
        let out = Command::new(python().expect("python venv"))
            .arg(&script)
            .args([
                &s.provider.endpoint,
                &token,
                &s.paid.to_string(),
                &agreement.to_string(),
                mode,
            ])
            .output()
            .await
            .expect("python");
        assert!(
            out.status.success(),
            "python ({mode}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("python prints JSON");
        assert_eq!(report["rows"], serde_json::json!(rows), "{mode}");
        assert_eq!(report["id_sum"], serde_json::json!(sum), "{mode}");
        assert_eq!(
            report["columns"],
            serde_json::json!(["id", "name", "amount"]),
            "{mode}"
        );
    }
}
