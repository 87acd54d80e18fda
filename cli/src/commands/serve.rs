//! `insitu serve`: wire a ledger, a policy engine, the catalog and the Flight service,
//! and serve until Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use insitu_catalog::AssetStore;
use insitu_flight::{FlightServiceBuilder, serve_on_tls};
use insitu_ledger::load_signer;
use insitu_policy::{JsonlAuditLog, PolicyEngine, TokenVerifier};

use crate::args::ServeArgs;
use crate::serve_config::ServeConfig;

pub async fn run(mut a: ServeArgs) -> Result<()> {
    let cfg = ServeConfig::load(a.config.as_deref())?;
    // Flags (and their environment variables) win over the file.
    let c = &mut a.chain;
    if std::env::var_os("INSITU_CHAIN").is_none()
        && c.kind == "rpc"
        && let Some(kind) = cfg.chain.kind.clone()
    {
        c.kind = kind;
    }
    if std::env::var_os("INSITU_DATA_DIR").is_none()
        && c.data_dir.as_os_str() == ".insitu"
        && let Some(dir) = cfg.data_dir.clone()
    {
        c.data_dir = dir;
    }
    if std::env::var_os("INSITU_RPC_URL").is_none()
        && let Some(url) = cfg.chain.rpc_url.clone()
        && c.rpc_url == "http://127.0.0.1:8545"
    {
        c.rpc_url = url;
    }
    c.chain_id = c.chain_id.or(cfg.chain.chain_id);
    c.registry = c.registry.or(cfg.chain.registry);
    c.agreements = c.agreements.or(cfg.chain.agreements);
    if c.confirmations == 1 {
        c.confirmations = cfg.chain.confirmations.unwrap_or(1);
    }
    if c.from_block == 0 {
        c.from_block = cfg.chain.from_block.unwrap_or(0);
    }
    let listen = a
        .listen
        .or(cfg.listen)
        .unwrap_or_else(|| "127.0.0.1:50051".into());
    let catalog_url = a
        .catalog
        .or(cfg.catalog)
        .unwrap_or_else(|| format!("sqlite://{}", a.chain.data_dir.join("catalog.db").display()));
    let tls_files = match (a.tls_cert.take(), a.tls_key.take(), cfg.tls) {
        (Some(cert), Some(key), _) => Some((cert, key)),
        (_, _, Some(t)) => Some((t.cert, t.key)),
        _ => None,
    };
    let tls = tls_files
        .map(|(cert, key)| insitu_flight::TlsIdentity::from_files(&cert, &key))
        .transpose()?;
    let admin_listen = a
        .admin_listen
        .or(cfg.admin_listen)
        .unwrap_or_else(|| "127.0.0.1:9464".into());
    let audit_path = a
        .audit_log
        .or(cfg.audit_log)
        .unwrap_or_else(|| a.chain.data_dir.join("audit.jsonl"));
    let signer = match (&a.key.keystore, &a.key.mnemonic_env, cfg.key) {
        (None, None, Some(source)) => load_signer(&source).context("loading the provider key")?,
        _ => super::load_key(&a.key)?,
    };
    let provider = signer.address();

    let train_key = Arc::new(signer.clone());
    let ledger = super::connect(&a.chain, Some(signer)).await?;
    let limits = &cfg.limits;
    let verifier = Arc::new(
        TokenVerifier::builder(provider, ledger.chain_id(), ledger.contracts().agreements)
            .with_max_lifetime(Duration::from_secs(limits.max_token_lifetime_secs))
            .with_max_skew(Duration::from_secs(limits.max_clock_skew_secs))
            .build(),
    );
    let audit = Arc::new(JsonlAuditLog::open(&audit_path).await?);
    super::publish::ensure_catalog_dir(&catalog_url)?;
    let catalog = AssetStore::open(&catalog_url)
        .await
        .context("opening the catalog")?;
    let mut policy = PolicyEngine::builder(ledger.clone(), verifier, audit)
        .with_cache_ttl(Duration::from_secs(limits.grant_cache_secs))
        .with_audience(Arc::new(insitu_flight::CatalogAudience(catalog.clone())));
    if let Some(r) = &cfg.rules {
        let rules = Arc::new(
            insitu_policy::ProviderRules::from_files(&r.policies, r.entities.as_deref())
                .context("loading the provider rules ([rules])")?,
        );
        rules.watch(Duration::from_secs(r.reload_secs.max(1)));
        tracing::info!(policies = %r.policies.display(), "provider rules loaded");
        policy = policy.with_rules(rules);
    }
    let engine = Arc::new(policy.build());
    let mask_key = mask_key(&a.chain.data_dir)?;
    let storage = insitu_flight::StorageOptions::new(cfg.storage.options).with_environment();
    let public_endpoint = format!("grpc://{listen}");
    for (i, asset) in cfg.assets.iter().enumerate() {
        ensure_published(ledger.as_ref(), &catalog, &storage, asset, &public_endpoint)
            .await
            .with_context(|| format!("publishing assets[{i}] ({})", asset.name))?;
    }
    let mut transports = Vec::new();
    let mut names = std::collections::HashSet::new();
    for block in &cfg.lineage {
        let t = block.transport()?;
        if !names.insert(t.name().to_string()) {
            anyhow::bail!(
                "invalid config: two [[lineage]] receivers are named '{}'",
                t.name()
            );
        }
        transports.push(t);
    }
    let lineage = (!transports.is_empty())
        .then(|| insitu_catalog::lineage::Dispatcher::new(catalog.lineage_outbox(), transports));
    if let Some(api) = &cfg.catalog_api {
        let mut search = insitu_catalog::SearchApi::new(Arc::new(catalog.clone()));
        if let Some(origin) = &api.allow_origin {
            search = search.with_allowed_origin(origin)?;
        }
        let listener = tokio::net::TcpListener::bind(&api.listen)
            .await
            .with_context(|| format!("binding the catalog API {}", api.listen))?;
        let addr = listener.local_addr()?;
        let app = search.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "catalog API failed");
            }
        });
        tracing::info!(listen = %addr, "catalog API serving");
        eprintln!("catalog API on http://{addr}/api/v1/search");
    }
    let mut builder = FlightServiceBuilder::new(engine.clone(), catalog.clone());
    let mut sink = None;
    if let Some(d) = &lineage {
        let s = insitu_flight::LineageSink::new(catalog.lineage_outbox(), d.receivers())?;
        builder = builder.with_lineage(s.clone());
        sink = Some(s);
        tracing::info!(receivers = ?d.receivers(), "lineage delivery on");
        d.clone().spawn(Duration::from_secs(1));
    }
    if let Some(c) = &cfg.compute {
        let work_dir = c
            .work_dir
            .clone()
            .unwrap_or_else(|| a.chain.data_dir.join("compute"));
        let jobs = insitu_compute::JobStore::open(
            catalog.pool().clone(),
            catalog_url.starts_with("postgres"),
        )
        .await?;
        let (backend, where_): (Arc<dyn insitu_compute::ComputeBackend>, &str) = match &c.kubernetes
        {
            None => (
                Arc::new(insitu_compute::WasmBackend::new()?),
                "WASI sandbox",
            ),
            Some(k) => (kubernetes_backend(k).await?, "Kubernetes"),
        };
        let compute = insitu_compute::ComputeService::builder(
            engine.clone(),
            catalog.clone(),
            jobs,
            backend,
            work_dir,
        )
        .with_allow_list(c.allow_list()?)
        .with_limits(c.limits())
        .with_concurrency(c.concurrency)
        .with_storage_options(storage.clone())
        .with_lineage(true)
        .with_metadata_url(public_endpoint.clone())
        .build()?;
        let recovered = compute.recover().await?;
        tracing::info!(
            allowed = c.allow.len(),
            publishers = c.publishers.len(),
            recovered,
            backend = where_,
            "compute on"
        );
        let train_dir = c
            .work_dir
            .clone()
            .unwrap_or_else(|| a.chain.data_dir.join("compute"))
            .join("train");
        let train = insitu_federated::TrainExchange::builder(
            compute.clone(),
            engine.clone(),
            train_key.clone(),
            train_dir,
        )
        .with_plain_updates(cfg.train.allow_plain_updates)
        .with_max_rounds(cfg.train.max_rounds)
        .build()?;
        tracing::info!(
            plain_updates = cfg.train.allow_plain_updates,
            max_rounds = cfg.train.max_rounds,
            "federated training on"
        );
        builder = builder
            .with_actions(Arc::new(insitu_compute::ComputeActions::new(compute)))
            .with_exchange(Arc::new(train));
    }
    let service = builder
        .with_storage_options(storage)
        .with_mask_key(mask_key)
        .with_ticket_ttl(Duration::from_secs(limits.ticket_ttl_secs))
        .with_max_decoding_message_size(limits.max_request_bytes)
        .with_query_limits(insitu_flight::QueryLimits {
            memory_bytes: limits.query_memory_bytes,
            timeout: Duration::from_secs(limits.query_timeout_secs),
            max_sql_bytes: limits.max_sql_bytes,
            max_concurrent: limits.max_concurrent_queries,
        })
        .build()?;
    let admin = tokio::net::TcpListener::bind(&admin_listen)
        .await
        .with_context(|| format!("binding the admin endpoint {admin_listen}"))?;
    let admin_addr = admin.local_addr()?;
    let admin_app = crate::admin::router(engine, ledger.clone(), catalog.lineage_outbox());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(admin, admin_app).await {
            tracing::error!(error = %e, "admin endpoint failed");
        }
    });
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let local = listener.local_addr()?;
    tracing::info!(
        %provider,
        chain_id = ledger.chain_id(),
        listen = %local,
        audit_log = %audit_path.display(),
        "insitu provider serving Flight"
    );
    eprintln!("insitu provider {provider} serving Flight on {local}, admin on http://{admin_addr}");
    let scheme = if tls.is_some() { "TLS" } else { "plaintext" };
    tracing::info!(transport = scheme, "Flight transport");
    serve_on_tls(listener, service, tls, async {
        shutdown_signal().await;
        tracing::info!("shutting down");
    })
    .await?;
    // Runs recorded until the end are written to the outbox before the process exits,
    // so the next start delivers them.
    if let Some(s) = sink {
        s.flush().await;
    }
    Ok(())
}

/// The provider's mask key, created once in the data directory (owner-only), so masked
/// values stay stable across restarts.
fn mask_key(data_dir: &std::path::Path) -> Result<[u8; 32]> {
    let path = data_dir.join("mask.key");
    if let Ok(bytes) = std::fs::read(&path) {
        return <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key", path.display()));
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let key: [u8; 32] = rand::random();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&key)?;
    Ok(key)
}

/// Ctrl-C, or SIGTERM (what systemd and Kubernetes send).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Publishes a configured asset unless the catalog already serves its location.
async fn ensure_published(
    ledger: &dyn insitu_ledger::Ledger,
    catalog: &AssetStore,
    storage: &insitu_flight::StorageOptions,
    asset: &crate::serve_config::AssetConfig,
    endpoint: &str,
) -> Result<()> {
    use insitu_flight::publish::{PublishRequest, publish_asset, publish_object};
    let remote = asset.source.contains("://");
    let url = if remote {
        asset.source.clone()
    } else {
        let abs = std::fs::canonicalize(&asset.source)
            .with_context(|| format!("cannot read {}", asset.source))?;
        url::Url::from_file_path(&abs)
            .map_err(|_| anyhow::anyhow!("cannot make a file URL of {}", abs.display()))?
            .to_string()
    };
    let constraints = asset
        .constraints
        .as_deref()
        .map(super::constraints::read)
        .transpose()?;
    if let Some(did) = catalog.find_by_location(&url).await? {
        tracing::info!(%did, name = %asset.name, "configured asset already published");
        if let Some(c) = &constraints {
            insitu_flight::publish::set_constraints(catalog, did, 0, c).await?;
        }
        return Ok(());
    }
    let request = PublishRequest {
        file: asset.source.clone().into(),
        name: asset.name.clone(),
        description: asset.description.clone(),
        tags: asset.tags.clone(),
        services: vec![insitu_ledger::ServiceOffer {
            service_type: asset.service.parse()?,
            token: asset.token,
            price: super::parse_amount(&asset.price)?,
            access_duration: super::parse_duration(&asset.access)?.as_secs(),
            fulfill_timeout: super::parse_duration(&asset.fulfill_timeout)?.as_secs(),
        }],
        providers: vec![],
        metadata_url: endpoint.to_string(),
        constraints,
    };
    let published = if remote {
        publish_object(ledger, catalog, &url, storage, request).await?
    } else {
        publish_asset(ledger, catalog, request).await?
    };
    tracing::info!(did = %published.did, name = %asset.name, tx = %published.tx.hash, "published configured asset");
    eprintln!("published {} as {}", asset.name, published.did);
    Ok(())
}

/// The cluster backend of `[compute.kubernetes]`, with its pod gateway serving.
async fn kubernetes_backend(
    k: &crate::serve_config::KubernetesConfig,
) -> Result<Arc<dyn insitu_compute::ComputeBackend>> {
    use insitu_compute::kubernetes::{KubernetesBackend, PodGateway};
    let settings = k.settings()?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes cluster (KUBECONFIG or in-cluster)")?;
    let gateway = PodGateway::new();
    let listener = tokio::net::TcpListener::bind(&k.gateway_listen)
        .await
        .with_context(|| format!("binding the pod gateway {}", k.gateway_listen))?;
    tracing::info!(listen = %listener.local_addr()?, "pod gateway serving");
    let serving = gateway.clone();
    tokio::spawn(async move {
        if let Err(e) = serving.serve(listener).await {
            tracing::error!(error = %e, "the pod gateway stopped");
        }
    });
    Ok(Arc::new(KubernetesBackend::new(client, settings, gateway)))
}
