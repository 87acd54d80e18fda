//! `insitu demo` needs no node, no npm and no services: it runs with a PATH that holds
//! only the directory of cargo, in a scratch directory.

use insitu_integration_tests::insitu_bin;

#[tokio::test]
async fn the_demo_completes_without_node_npm_or_anvil_on_the_path() {
    let bin = insitu_bin().expect("binary");
    let cargo = which("cargo").expect("cargo is on the test's PATH");
    let cargo_dir = cargo.parent().expect("cargo has a directory").to_path_buf();
    for tool in ["node", "npm", "anvil"] {
        assert!(
            !cargo_dir.join(tool).exists(),
            "{tool} sits next to cargo; the test would not prove its absence"
        );
    }
    let work = tempfile::tempdir().expect("dir");
    let out = tokio::process::Command::new(&bin)
        .args(["demo", "--scale-factor", "0.002", "--data-dir"])
        .arg(work.path().join("state"))
        .current_dir(work.path())
        .env_clear()
        .env("PATH", &cargo_dir)
        .env("HOME", work.path())
        .output()
        .await
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("alice downloads lineitem"), "{stdout}");
    assert!(stdout.contains("belongs to another consumer"), "{stdout}");
    assert!(stdout.contains("escrow 0.00 ITT"), "{stdout}");
    // Bob's SQL answer: one row per return flag, and his escapes refused.
    assert!(stdout.contains("| flag | line_items | revenue"), "{stdout}");
    assert!(stdout.contains("reading another asset in SQL"), "{stdout}");
    assert!(
        stdout.contains("listing rows: refused by the provider: rule `aggregate_only`"),
        "{stdout}"
    );
    assert!(stdout.contains("only queries are allowed"), "{stdout}");
    // Alice's algorithm ran where the data is; its result is hers alone.
    assert!(stdout.contains("succeeded in"), "{stdout}");
    assert!(stdout.contains("owned by alice"), "{stdout}");
    assert!(stdout.contains("is served to its owner only"), "{stdout}");
    // ../shared/data is beside the repository in CI and development checkouts.
    assert!(stdout.contains("sklearn.digits 1797 rows"), "{stdout}");
    // The state it kept is a real, resumable chain.
    assert!(work.path().join("state/chain/embedded-chain.json").exists());
    assert!(work.path().join("state/audit.jsonl").exists());
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .or_else(|| {
            std::env::var_os("CARGO")
                .map(std::path::PathBuf::from)
                .filter(|p| p.is_file())
        })
}

#[tokio::test]
async fn the_demo_carries_on_without_the_shared_datasets() {
    let bin = insitu_bin().expect("binary");
    let work = tempfile::tempdir().expect("dir");
    let out = tokio::process::Command::new(&bin)
        .args(["demo", "--scale-factor", "0.001", "--shared-data"])
        .arg(work.path().join("no-such-folder"))
        .current_dir(work.path())
        .output()
        .await
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("unreadable, skipped"), "{stdout}");
    assert!(stdout.contains("alice downloads lineitem"), "{stdout}");
}
