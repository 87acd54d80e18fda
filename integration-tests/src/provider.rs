//! A chain with the insitu contracts deployed ([`World`]) and a provider serving Flight
//! in-process on an ephemeral port ([`Provider`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider as _;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result};
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use insitu_catalog::AssetStore;
use insitu_flight::client::DownloadClient;
use insitu_flight::publish::{PublishRequest, publish_asset};
use insitu_flight::{AssetRequest, FlightServiceBuilder, serve_on};
use insitu_ledger::{AgreementId, DeployedContracts, Did, Ledger, RpcLedger, ServiceOffer};
use insitu_policy::{AccessClaims, MemoryAuditLog, PolicyEngine, TokenVerifier, sign_access_token};
use tokio::sync::oneshot;

use crate::anvil::{Anvil, account};

/// Account indices of the test mnemonic, by role.
pub const PROVIDER: u32 = 0;
pub const CONSUMER: u32 = 1;
pub const OTHER_CONSUMER: u32 = 2;
pub const FEE_RECEIVER: u32 = 9;
/// Marketplace fee the test deployment charges, in basis points.
pub const FEE_BPS: u16 = 250;

/// anvil with the insitu contracts and a test ERC-20 deployed.
#[derive(Debug)]
pub struct World {
    pub anvil: Anvil,
    pub deployed: DeployedContracts,
    pub token: Address,
}

impl World {
    pub async fn start() -> Result<World> {
        let anvil = Anvil::start().await?;
        let deployed = insitu_ledger::deploy_contracts(
            &anvil.url(),
            account(PROVIDER),
            FEE_BPS,
            Some(account(FEE_RECEIVER).address()),
        )
        .await?;
        let token = insitu_ledger::deploy_test_token(&anvil.url(), account(PROVIDER)).await?;
        Ok(World {
            anvil,
            deployed,
            token,
        })
    }

    pub fn rpc_url(&self) -> String {
        self.anvil.url()
    }

    /// A ledger acting as account `index`.
    pub async fn ledger(&self, index: u32) -> Result<RpcLedger> {
        self.ledger_with(index, 1).await
    }

    pub async fn ledger_with(&self, index: u32, confirmations: u64) -> Result<RpcLedger> {
        Ok(RpcLedger::builder(self.rpc_url())
            .with_chain_id(self.deployed.chain_id)
            .with_contracts(self.deployed.addresses)
            .with_signer(account(index))
            .with_confirmations(confirmations)
            .with_retries(2, Duration::from_millis(20))
            .with_tx_timeout(Duration::from_secs(30))
            .connect()
            .await?)
    }

    /// Mints test tokens to `to`.
    pub async fn mint(&self, to: Address, amount: U256) -> Result<()> {
        insitu_ledger::mint_test_token(&self.rpc_url(), account(PROVIDER), self.token, to, amount)
            .await?;
        Ok(())
    }

    /// Moves chain time forward and mines a block.
    pub async fn warp(&self, seconds: u64) -> Result<()> {
        let l = self.ledger(PROVIDER).await?;
        let _: serde_json::Value = l
            .provider()
            .raw_request("evm_increaseTime".into(), (seconds,))
            .await?;
        self.mine(1).await
    }

    /// Mines `n` empty blocks.
    pub async fn mine(&self, n: u64) -> Result<()> {
        let l = self.ledger(PROVIDER).await?;
        for _ in 0..n {
            let _: serde_json::Value = l.provider().raw_request("evm_mine".into(), ()).await?;
        }
        Ok(())
    }

    /// Transactions sent so far by `who` (to prove an attack caused no `fulfill`).
    pub async fn tx_count(&self, who: Address) -> Result<u64> {
        let l = self.ledger(PROVIDER).await?;
        Ok(l.provider().get_transaction_count(who).await?)
    }
}

/// How to run a test provider.
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    pub confirmations: u64,
    pub cache_ttl: Duration,
    /// Catalog database URL; a SQLite file in the provider's scratch directory if `None`.
    pub catalog_url: Option<String>,
    /// Flight SQL limits (the library's defaults if `None`).
    pub query_limits: Option<insitu_flight::QueryLimits>,
    /// Provider rules in Cedar.
    pub rules: Option<Arc<insitu_policy::ProviderRules>>,
    /// Record query runs as OpenLineage events, delivered to `lineage.jsonl` in the
    /// provider's directory by `Provider::deliver_lineage`.
    pub lineage: bool,
    /// Run compute jobs (WASI sandbox) with this allow-list and these limits.
    pub compute: Option<ComputeOptions>,
}

/// The compute service of a test provider.
#[derive(Debug, Clone)]
pub struct ComputeOptions {
    /// Allowed module hashes (`sha256:<hex>`).
    pub allow: Vec<String>,
    /// Trusted publishers.
    pub publishers: Vec<Address>,
    pub limits: insitu_compute::SandboxLimits,
    /// Where jobs run; the WASI sandbox when absent.
    pub backend: Option<Arc<dyn insitu_compute::ComputeBackend>>,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        ProviderOptions {
            confirmations: 1,
            cache_ttl: Duration::from_secs(15),
            catalog_url: None,
            query_limits: None,
            rules: None,
            lineage: false,
            compute: None,
        }
    }
}

/// A provider serving Flight on 127.0.0.1 with its own catalog and audit log.
#[derive(Debug)]
pub struct Provider {
    pub ledger: Arc<RpcLedger>,
    pub engine: Arc<PolicyEngine>,
    pub catalog: AssetStore,
    pub audit: Arc<MemoryAuditLog>,
    /// The Flight SQL half, for its query statistics.
    pub sql: insitu_flight::SqlService,
    /// The compute service, if compute is on.
    pub compute: Option<insitu_compute::ComputeService>,
    /// Delivers the lineage outbox to `lineage.jsonl`, if lineage is on.
    pub lineage: Option<insitu_catalog::lineage::Dispatcher>,
    /// Where query runs are recorded, if lineage is on (`flush` before reading them).
    pub lineage_sink: Option<insitu_flight::LineageSink>,
    pub endpoint: String,
    pub address: Address,
    dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Provider {
    pub async fn start(world: &World, opts: ProviderOptions) -> Result<Provider> {
        let ledger = Arc::new(world.ledger_with(PROVIDER, opts.confirmations).await?);
        let address = account(PROVIDER).address();
        let verifier = Arc::new(
            TokenVerifier::builder(address, ledger.chain_id(), ledger.contracts().agreements)
                .build(),
        );
        let audit = Arc::new(MemoryAuditLog::default());
        let dir = tempfile::tempdir()?;
        let db = opts
            .catalog_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("catalog.db").display()));
        let catalog = AssetStore::open(&db).await?;
        let mut policy = PolicyEngine::builder(ledger.clone(), verifier, audit.clone())
            .with_cache_ttl(opts.cache_ttl)
            .with_audience(Arc::new(insitu_flight::CatalogAudience(catalog.clone())));
        if let Some(rules) = opts.rules.clone() {
            policy = policy.with_rules(rules);
        }
        let engine = Arc::new(policy.build());
        let mut builder = FlightServiceBuilder::new(engine.clone(), catalog.clone());
        if let Some(limits) = opts.query_limits.clone() {
            builder = builder.with_query_limits(limits);
        }
        let mut lineage = None;
        let mut lineage_sink = None;
        if opts.lineage {
            use insitu_catalog::lineage::{Dispatcher, FileTransport};
            let outbox = catalog.lineage_outbox();
            let file = FileTransport::new("file", dir.path().join("lineage.jsonl"));
            let dispatcher = Dispatcher::new(outbox.clone(), vec![Arc::new(file)]);
            let sink = insitu_flight::LineageSink::new(outbox, dispatcher.receivers())?;
            builder = builder.with_lineage(sink.clone());
            lineage = Some(dispatcher);
            lineage_sink = Some(sink);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let mut compute = None;
        if let Some(c) = &opts.compute {
            let mut allow = insitu_compute::AllowList::new();
            for h in &c.allow {
                allow = allow.with_hash(h)?;
            }
            for p in &c.publishers {
                allow = allow.with_publisher(*p);
            }
            let postgres = db.starts_with("postgres");
            let store = insitu_compute::JobStore::open(catalog.pool().clone(), postgres).await?;
            let service = insitu_compute::ComputeService::builder(
                engine.clone(),
                catalog.clone(),
                store,
                match &c.backend {
                    Some(b) => b.clone(),
                    None => Arc::new(insitu_compute::WasmBackend::new()?),
                },
                dir.path().join("compute"),
            )
            .with_allow_list(allow)
            .with_limits(c.limits.clone())
            .with_lineage(opts.lineage)
            .with_metadata_url(endpoint.clone())
            .build()?;
            service.recover().await?;
            builder = builder.with_actions(Arc::new(insitu_compute::ComputeActions::new(
                service.clone(),
            )));
            compute = Some(service);
        }
        let (service, sql) = builder.build_parts()?;
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = serve_on(listener, service, async {
                let _ = rx.await;
            })
            .await;
        });
        Ok(Provider {
            ledger,
            engine,
            catalog,
            audit,
            sql,
            compute,
            lineage,
            lineage_sink,
            endpoint,
            address,
            dir,
            shutdown: Some(tx),
        })
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Publishes a file with one service.
    pub async fn publish(&self, file: &Path, name: &str, offer: ServiceOffer) -> Result<Did> {
        self.publish_constrained(file, name, offer, None).await
    }

    /// Publishes a file with one (query) service under `constraints` (TOML).
    pub async fn publish_constrained(
        &self,
        file: &Path,
        name: &str,
        offer: ServiceOffer,
        constraints: Option<&str>,
    ) -> Result<Did> {
        let constraints = constraints
            .map(insitu_policy::QueryConstraints::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!(e))?;
        let published = publish_asset(
            self.ledger.as_ref(),
            &self.catalog,
            PublishRequest {
                file: file.to_path_buf(),
                name: name.to_string(),
                description: format!("test asset {name}"),
                tags: vec!["test".into()],
                services: vec![offer],
                providers: vec![],
                metadata_url: self.endpoint.clone(),
                constraints,
            },
        )
        .await?;
        Ok(published.did)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A bearer token signed by `consumer` for `provider` on the world's deployment.
pub fn token_for(world: &World, consumer: &PrivateKeySigner, provider: Address) -> Result<String> {
    token_with_scope(world, consumer, provider, "access")
}

/// Like [`token_for`], with a given scope (`query:<agreement>,…` for Flight SQL).
pub fn token_with_scope(
    world: &World,
    consumer: &PrivateKeySigner,
    provider: Address,
    scope: &str,
) -> Result<String> {
    Ok(sign_access_token(
        consumer,
        &AccessClaims {
            provider,
            chain_id: world.deployed.chain_id,
            verifying_contract: world.deployed.addresses.agreements,
            issued_at: now(),
            lifetime: Duration::from_secs(600),
            scope: scope.into(),
        },
    )?)
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Downloads an asset the way `insitu get` does.
pub async fn download(
    endpoint: &str,
    token: &str,
    did: Did,
    agreement: AgreementId,
) -> std::result::Result<Vec<RecordBatch>, insitu_flight::FlightError> {
    let mut client = DownloadClient::connect(endpoint, token).await?;
    let info = client.info(AssetRequest { did, agreement }).await?;
    let stream = client.stream(&info).await?;
    collect(stream).await
}

/// Collects a Flight stream.
pub async fn collect(
    stream: arrow_flight::decode::FlightRecordBatchStream,
) -> std::result::Result<Vec<RecordBatch>, insitu_flight::FlightError> {
    stream
        .try_collect()
        .await
        .map_err(|e| insitu_flight::FlightError::Internal(e.to_string()))
}

/// Context helper for tests.
pub fn ctx<T, E: std::fmt::Display>(r: std::result::Result<T, E>, what: &str) -> Result<T> {
    r.map_err(|e| anyhow::anyhow!("{what}: {e}"))
        .context(what.to_string())
}

/// The `insitu` CLI on the world's anvil deployment, acting as account `who`, with its
/// data directory, catalog and working directory in `dir`.
pub fn cli_on(world: &World, dir: &Path, who: u32) -> Result<tokio::process::Command> {
    let mut c = tokio::process::Command::new(crate::insitu_bin()?);
    c.env("INSITU_CHAIN", "rpc")
        .env("INSITU_RPC_URL", world.rpc_url())
        .env(
            "INSITU_REGISTRY",
            world.deployed.addresses.registry.to_string(),
        )
        .env(
            "INSITU_AGREEMENTS",
            world.deployed.addresses.agreements.to_string(),
        )
        .env("INSITU_DATA_DIR", dir)
        .env(
            "INSITU_CATALOG",
            format!("sqlite://{}", dir.join("catalog.db").display()),
        )
        .env("TEST_MNEMONIC", crate::TEST_MNEMONIC)
        .env("INSITU_MNEMONIC_ENV", "TEST_MNEMONIC")
        .env("INSITU_ACCOUNT_INDEX", who.to_string())
        .current_dir(dir);
    Ok(c)
}

/// Waits until something listens on 127.0.0.1:`port`; false after 30 s.
pub async fn wait_for_port(port: u16) -> bool {
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
