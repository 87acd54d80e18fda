//! `insitu init`: writes a commented configuration for `insitu serve`. Every key can be
//! overridden by a flag or an `INSITU_*` environment variable (see `insitu serve --help`).

use anyhow::{Result, bail};

use crate::args::InitArgs;
use crate::serve_config::ServeConfig;

/// The template. It must parse as a [`ServeConfig`]; a unit test keeps it honest.
pub const TEMPLATE: &str = r#"# insitu provider configuration. Used by: insitu serve --config insitu.toml
# Every setting can be overridden from the environment as INSITU__SECTION__KEY
# (INSITU__LISTEN, INSITU__CHAIN__CONFIRMATIONS, INSITU__LIMITS__TICKET_TTL_SECS, ...);
# the common ones also have flags with their own variables (INSITU_LISTEN, INSITU_RPC_URL,
# ...), which win over both. Secrets never go in this file.

# Where Flight listens. Consumers connect here.
listen = "127.0.0.1:50051"

# /health and /metrics (Prometheus). Keep it on a private interface.
admin_listen = "127.0.0.1:9464"

# Home of the embedded chain, the catalog and the audit log (unless set below).
data_dir = ".insitu"

# The asset catalog: public metadata and private storage locations.
# SQLite here, or postgres://user@host/db when several replicas share one catalog;
# the same database `insitu publish` writes to.
catalog = "sqlite://.insitu/catalog.db"

# Append-only audit log: one JSON line per access decision.
audit_log = ".insitu/audit.jsonl"

[chain]
# "embedded": an in-process EVM persisted in data_dir (no node needed; one operator).
# "rpc": any EVM JSON-RPC endpoint (anvil, a testnet, a private chain, mainnet).
kind = "embedded"
# For kind = "rpc":
# rpc_url = "http://127.0.0.1:8545"
# chain_id = 31337
# registry = "0x..."          # AssetRegistry, printed by `insitu dev deploy`
# agreements = "0x..."        # AgreementManager
# confirmations = 2           # blocks an order needs before it is trusted
# from_block = 0              # deployment block, bounds event scans

# Object-store options for assets published from s3://, gs:// or az:// URLs (needs a
# build with the `cloud` feature). Credentials go in AWS_*, GOOGLE_* or AZURE_* variables.
# [storage.options]
# aws_region = "eu-west-1"

# TLS on the Flight port (PEM files). Without it Flight is plaintext: fine on loopback,
# not across networks.
# [tls]
# cert = "/etc/insitu/tls/cert.pem"
# key = "/etc/insitu/tls/key.pem"

# Assets to serve: published on start unless the catalog already has their location.
# [[assets]]
# source = "data/orders.parquet"      # a local Parquet/CSV path, or s3://… with the cloud feature
# name = "orders"
# description = "Orders, 2026"
# tags = ["sales"]
# service = "download"
# price = "1000000"                   # base units of the token; "0" is free
# token = "0x..."                     # ERC-20; ETH if absent
# access = "24h"
# fulfill_timeout = "1h"

# Bounds on requests and proofs (defaults shown).
[limits]
ticket_ttl_secs = 300            # a DoGet ticket's life
grant_cache_secs = 15            # how long a grant is reused before asking the chain again
max_token_lifetime_secs = 86400  # longest bearer token accepted (at most 24 h)
max_clock_skew_secs = 60
max_request_bytes = 1048576      # largest client message (descriptors, tickets)
query_memory_bytes = 536870912    # memory one Flight SQL query may use (no spilling)
query_timeout_secs = 300          # longest a Flight SQL query may run
max_sql_bytes = 65536             # largest SQL text accepted
max_concurrent_queries = 16       # Flight SQL queries executing at once; more are refused

# Where the provider key comes from. Choose one.
[key]
kind = "private_key_env"
var = "INSITU_PRIVATE_KEY"
# kind = "keystore"
# path = "/etc/insitu/provider.json"
# password_env = "INSITU_KEYSTORE_PASSWORD"
# kind = "mnemonic_env"
# var = "INSITU_MNEMONIC"
# index = 0
"#;

pub fn run(a: InitArgs) -> Result<()> {
    if a.path.exists() && !a.force {
        bail!(
            "{} already exists; pass --force to overwrite it",
            a.path.display()
        );
    }
    // Refuse to write a template this build could not read back.
    toml::from_str::<ServeConfig>(TEMPLATE)?;
    std::fs::write(&a.path, TEMPLATE)?;
    eprintln!(
        "wrote {}; start a provider with: insitu serve --config {}",
        a.path.display(),
        a.path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_as_a_serve_config() {
        let cfg: ServeConfig = toml::from_str(TEMPLATE).expect("template parses");
        assert_eq!(cfg.chain.kind.as_deref(), Some("embedded"));
        assert!(cfg.key.is_some());
    }

    #[test]
    fn a_limit_that_weakens_a_bound_is_refused_by_name() {
        let cfg: ServeConfig =
            toml::from_str("[limits]\nmax_token_lifetime_secs = 999999\n").expect("parses");
        let err = cfg.limits.validate().expect_err("too long");
        assert!(
            err.to_string().contains("limits.max_token_lifetime_secs"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_key_is_named_in_the_error() {
        let err = toml::from_str::<ServeConfig>("lissten = \"x\"\n").expect_err("unknown key");
        assert!(err.to_string().contains("lissten"), "{err}");
    }
}
