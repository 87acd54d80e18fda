//! The provider's configuration file. Flags and `INSITU_*` variables override it.

use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use anyhow::{Context, Result};
use serde::Deserialize;

/// `insitu serve --config FILE`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub catalog: Option<String>,
    pub audit_log: Option<PathBuf>,
    #[serde(default)]
    pub chain: ChainConfig,
    #[serde(default)]
    pub key: Option<insitu_ledger::KeySource>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Assets to serve: published on start unless already in the catalog.
    #[serde(default)]
    pub assets: Vec<AssetConfig>,
    /// Provider rules in Cedar, evaluated after every on-chain grant.
    #[serde(default)]
    pub rules: Option<RulesConfig>,
    /// OpenLineage receivers (`[[lineage]]`, one block each): every publish, update and
    /// query run is delivered to each through the outbox in the catalog database.
    #[serde(default)]
    pub lineage: Vec<LineageConfig>,
    /// The catalog's JSON HTTP API for web front ends (`[catalog_api]`); off if absent.
    #[serde(default)]
    pub catalog_api: Option<CatalogApiConfig>,
    /// Compute to the data (`[compute]`): consumers' algorithms in the WASI sandbox.
    /// Off if absent.
    #[serde(default)]
    pub compute: Option<ComputeConfig>,
    /// Federated training (`[train]`). It runs through the compute bridge, so it is on
    /// whenever `[compute]` is, for assets that offer a `train` service; this section
    /// only tunes it.
    #[serde(default)]
    pub train: TrainConfig,
}

/// `[compute]`: which algorithms run, and under which limits. An empty allow-list runs
/// nothing (deny by default).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeConfig {
    /// Module hashes allowed to run (`sha256:<hex>`, as `insitu compute hash` prints).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Publishers whose signed approvals (`insitu compute approve`) are trusted.
    #[serde(default)]
    pub publishers: Vec<Address>,
    /// Wall time per job.
    #[serde(default = "default_deadline")]
    pub deadline_secs: u64,
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// Bytes a job may write under /out, in MiB.
    #[serde(default = "default_output")]
    pub output_mib: u64,
    /// stdout + stderr kept per job, in KiB; more fails the job.
    #[serde(default = "default_log")]
    pub log_kib: u64,
    /// Jobs running at once; the others wait, queued.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Staged inputs, outputs and results; default `<data_dir>/compute`.
    pub work_dir: Option<PathBuf>,
    /// Run jobs on a Kubernetes cluster (`[compute.kubernetes]`) instead of in this
    /// process's WASI sandbox.
    #[serde(default)]
    pub kubernetes: Option<KubernetesConfig>,
}

/// `[train]`: how this provider takes part in federated training.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Send updates in the clear to jobs that turn secure aggregation off (robust
    /// strategies). Off: updates only ever leave masked.
    pub allow_plain_updates: bool,
    /// The most rounds one job may run here.
    pub max_rounds: u32,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            allow_plain_updates: false,
            max_rounds: 1000,
        }
    }
}

/// `[compute.kubernetes]`: where and how jobs run on the cluster. The cluster is the
/// one `KUBECONFIG` (or the in-cluster service account) names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Namespace of the runs.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The runner image: holds this `insitu` binary (its entry point is not used).
    pub image: String,
    /// Where this process serves the pods' gateway.
    pub gateway_listen: String,
    /// The gateway as pods reach it, by IP address (the provider Service's ClusterIP):
    /// run pods get no DNS.
    pub gateway_url: url::Url,
    /// Labels of this provider's pods: the only egress a run's pod gets.
    pub gateway_selector: std::collections::BTreeMap<String, String>,
    /// This provider's namespace, when runs go to another one.
    pub gateway_namespace: Option<String>,
    /// CPU limit of the algorithm container.
    #[serde(default = "default_cpu")]
    pub cpu: String,
    /// `job` (default) or `workflow` (Argo).
    #[serde(default)]
    pub flavor: Option<String>,
    /// Argo's executor service account (workflow flavor).
    pub executor_service_account: Option<String>,
    /// The API server's address block and port, for Argo's executor (workflow flavor).
    pub api_server_cidr: Option<String>,
    #[serde(default = "default_api_port")]
    pub api_server_port: u16,
}

fn default_namespace() -> String {
    "default".into()
}
fn default_cpu() -> String {
    "2".into()
}
fn default_api_port() -> u16 {
    443
}

impl KubernetesConfig {
    pub fn settings(&self) -> Result<insitu_compute::kubernetes::KubeSettings> {
        use insitu_compute::kubernetes::{Flavor, KubeSettings};
        let flavor = match self.flavor.as_deref() {
            None | Some("job") => Flavor::Job,
            Some("workflow") => Flavor::Workflow,
            Some(other) => anyhow::bail!(
                "invalid config: compute.kubernetes.flavor is `{other}`; use `job` or `workflow`"
            ),
        };
        let mut b = KubeSettings::builder(&self.image, self.gateway_url.clone())
            .namespace(&self.namespace)
            .gateway_selector(self.gateway_selector.clone())
            .cpu(&self.cpu)
            .flavor(flavor);
        if let Some(ns) = &self.gateway_namespace {
            b = b.gateway_namespace(ns);
        }
        if let Some(sa) = &self.executor_service_account {
            b = b.executor_service_account(sa);
        }
        if let Some(cidr) = &self.api_server_cidr {
            b = b.api_server_egress(cidr, self.api_server_port);
        }
        Ok(b.build()?)
    }
}

fn default_deadline() -> u64 {
    300
}
fn default_memory() -> u64 {
    512
}
fn default_output() -> u64 {
    256
}
fn default_log() -> u64 {
    1024
}
fn default_concurrency() -> usize {
    2
}

impl ComputeConfig {
    pub fn limits(&self) -> insitu_compute::SandboxLimits {
        insitu_compute::SandboxLimits::default()
            .with_deadline(std::time::Duration::from_secs(self.deadline_secs.max(1)))
            .with_memory_bytes(self.memory_mib.max(1) << 20)
            .with_output_bytes(self.output_mib << 20)
            .with_log_bytes(self.log_kib << 10)
    }

    pub fn allow_list(&self) -> Result<insitu_compute::AllowList> {
        let mut list = insitu_compute::AllowList::new();
        for (i, h) in self.allow.iter().enumerate() {
            list = list
                .with_hash(h)
                .with_context(|| format!("invalid config: compute.allow[{i}]"))?;
        }
        for p in &self.publishers {
            list = list.with_publisher(*p);
        }
        Ok(list)
    }
}

/// One OpenLineage receiver.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineageConfig {
    /// Names the receiver's rows in the outbox: keep it stable, or events queued under
    /// the old name wait for a receiver that no longer exists.
    pub name: String,
    /// `http`, `file` or `console`.
    pub kind: String,
    /// Base URL of the catalog (`http://marquez:5000`), for `http`.
    pub url: Option<String>,
    /// `marquez` (also any plain OpenLineage receiver at `/api/v1/lineage`), `datahub`
    /// or `openmetadata`, for `http`.
    pub profile: Option<String>,
    /// Environment variable holding a bearer token (OpenMetadata's JWT, an API key):
    /// secrets never go in this file.
    pub token_env: Option<String>,
    /// JSON-lines file, for `file`.
    pub path: Option<PathBuf>,
}

impl LineageConfig {
    /// The transport this block describes, with its secret read from the environment.
    pub fn transport(
        &self,
    ) -> Result<std::sync::Arc<dyn insitu_catalog::lineage::LineageTransport>> {
        use insitu_catalog::lineage::{ConsoleTransport, FileTransport, HttpTransport, Profile};
        let name = self.name.trim();
        if name.is_empty() || name == insitu_catalog::lineage::EVERY_RECEIVER {
            anyhow::bail!("invalid config: lineage.name must be a non-empty name other than '*'");
        }
        let at = |what: &str| format!("invalid config: [[lineage]] '{name}' {what}");
        Ok(match self.kind.as_str() {
            "http" => {
                let url = self
                    .url
                    .as_deref()
                    .ok_or_else(|| anyhow::anyhow!(at("needs url")))?;
                url::Url::parse(url).map_err(|e| anyhow::anyhow!(at(&format!("url: {e}"))))?;
                let profile = match self.profile.as_deref() {
                    None => Profile::Marquez,
                    Some(p) => Profile::parse(p).ok_or_else(|| {
                        anyhow::anyhow!(at(&format!(
                            "profile '{p}' is not marquez, datahub or openmetadata"
                        )))
                    })?,
                };
                let bearer = match &self.token_env {
                    Some(var) => Some(std::env::var(var).map_err(|_| {
                        anyhow::anyhow!(at(&format!(
                            "reads its token from ${var}, which is not set"
                        )))
                    })?),
                    None => None,
                };
                std::sync::Arc::new(HttpTransport::new(name, url, profile, bearer))
            }
            "file" => {
                let path = self
                    .path
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!(at("needs path")))?;
                std::sync::Arc::new(FileTransport::new(name, path))
            }
            "console" => std::sync::Arc::new(ConsoleTransport),
            other => anyhow::bail!(at(&format!("kind '{other}' is not http, file or console"))),
        })
    }
}

/// `[catalog_api]`: where the JSON search API listens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogApiConfig {
    pub listen: String,
    /// An origin whose browser pages may read the answers (CORS), or `*`.
    pub allow_origin: Option<String>,
}

/// `[rules]`: the provider's Cedar policies and group memberships.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// A `.cedar` policy file, validated against insitu's Cedar schema at start-up.
    pub policies: PathBuf,
    /// Cedar entities JSON (consumers and the groups they belong to).
    pub entities: Option<PathBuf>,
    /// How often the files are checked for changes, seconds.
    #[serde(default = "default_reload")]
    pub reload_secs: u64,
}

fn default_reload() -> u64 {
    5
}

/// One asset the provider serves, as `[[assets]]` in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetConfig {
    /// A local Parquet or CSV path, or an object URL (`s3://…`, `file:///…`).
    pub source: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default = "default_service")]
    pub service: String,
    /// Price in base units of the token (wei for ETH); "0" is free.
    #[serde(default = "default_price")]
    pub price: String,
    /// ERC-20 to be paid in; ETH if absent.
    pub token: Option<Address>,
    #[serde(default = "default_access")]
    pub access: String,
    #[serde(default = "default_timeout")]
    pub fulfill_timeout: String,
    /// Constraints of a query service, a TOML file; applied on every start, so editing
    /// the file and restarting changes them.
    pub constraints: Option<PathBuf>,
}

fn default_service() -> String {
    "download".into()
}
fn default_price() -> String {
    "0".into()
}
fn default_access() -> String {
    "24h".into()
}
fn default_timeout() -> String {
    "1h".into()
}

/// Bounds on what one request may hold or how long a proof lives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// How long a DoGet ticket from GetFlightInfo stays valid, seconds.
    pub ticket_ttl_secs: u64,
    /// How long a grant is reused before the chain is asked again, seconds.
    pub grant_cache_secs: u64,
    /// Longest bearer-token lifetime accepted, seconds (at most 86,400).
    pub max_token_lifetime_secs: u64,
    /// Tolerated clock difference between consumers and this provider, seconds.
    pub max_clock_skew_secs: u64,
    /// Largest request message accepted from a client, bytes.
    pub max_request_bytes: usize,
    /// Memory one Flight SQL query may use, bytes (no spilling to disk).
    pub query_memory_bytes: usize,
    /// Longest a Flight SQL query may run, seconds.
    pub query_timeout_secs: u64,
    /// Largest SQL text accepted, bytes.
    pub max_sql_bytes: usize,
    /// Flight SQL queries executing at once on this provider; more are refused.
    pub max_concurrent_queries: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            ticket_ttl_secs: 300,
            grant_cache_secs: 15,
            max_token_lifetime_secs: 86_400,
            max_clock_skew_secs: 60,
            max_request_bytes: 1024 * 1024,
            query_memory_bytes: 512 * 1024 * 1024,
            query_timeout_secs: 300,
            max_sql_bytes: 64 * 1024,
            max_concurrent_queries: 16,
        }
    }
}

impl LimitsConfig {
    /// Refuses values that would weaken a security bound or make the server unusable.
    pub fn validate(&self) -> anyhow::Result<()> {
        let bad = |key: &str, why: &str| anyhow::anyhow!("invalid config: limits.{key} {why}");
        if self.ticket_ttl_secs == 0 || self.ticket_ttl_secs > 3600 {
            return Err(bad("ticket_ttl_secs", "must be between 1 and 3600"));
        }
        if self.query_memory_bytes < 1024 * 1024 {
            return Err(bad("query_memory_bytes", "must be at least 1 MiB"));
        }
        if self.query_timeout_secs == 0 || self.query_timeout_secs > 86_400 {
            return Err(bad("query_timeout_secs", "must be between 1 and 86400"));
        }
        if self.max_concurrent_queries == 0 || self.max_concurrent_queries > 1024 {
            return Err(bad("max_concurrent_queries", "must be between 1 and 1024"));
        }
        if self.max_sql_bytes < 1024 || self.max_sql_bytes > 16 * 1024 * 1024 {
            return Err(bad("max_sql_bytes", "must be between 1 KiB and 16 MiB"));
        }
        if self.grant_cache_secs > 300 {
            return Err(bad(
                "grant_cache_secs",
                "must be at most 300 (a refund must take effect quickly)",
            ));
        }
        if self.max_token_lifetime_secs == 0 || self.max_token_lifetime_secs > 86_400 {
            return Err(bad(
                "max_token_lifetime_secs",
                "must be between 1 and 86400 (24 h)",
            ));
        }
        if self.max_clock_skew_secs > 600 {
            return Err(bad("max_clock_skew_secs", "must be at most 600"));
        }
        if self.max_request_bytes < 4096 || self.max_request_bytes > 16 * 1024 * 1024 {
            return Err(bad(
                "max_request_bytes",
                "must be between 4096 and 16777216",
            ));
        }
        Ok(())
    }
}

/// Object-store options for the assets' locations (credentials belong in `AWS_*`,
/// `GOOGLE_*` or `AZURE_*` environment variables, which are read as well).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

/// TLS for the Flight port: PEM files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// `rpc` or `embedded`.
    pub kind: Option<String>,
    pub rpc_url: Option<String>,
    pub chain_id: Option<u64>,
    pub registry: Option<Address>,
    pub agreements: Option<Address>,
    pub confirmations: Option<u64>,
    pub from_block: Option<u64>,
}

impl ServeConfig {
    /// Reads the file (if any), applies `INSITU__SECTION__KEY` environment overrides, and
    /// validates. Any setting of the file can be overridden this way, e.g.
    /// `INSITU__LIMITS__TICKET_TTL_SECS=60` or `INSITU__CHAIN__CONFIRMATIONS=3`; the common
    /// ones also have flags with their own variables (`INSITU_LISTEN`, `INSITU_RPC_URL`…).
    pub fn load(path: Option<&Path>) -> Result<Self> {
        Self::load_with_env(path, std::env::vars())
    }

    pub(crate) fn load_with_env(
        path: Option<&Path>,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<Self> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the config file {}", path.display()))?;
                toml::from_str::<toml::Table>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => toml::Table::new(),
        };
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix("INSITU__") else {
                continue;
            };
            let keys: Vec<String> = rest.split("__").map(|k| k.to_ascii_lowercase()).collect();
            set_path(&mut table, &keys, &value)
                .with_context(|| format!("invalid override {name}"))?;
        }
        let origin = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the environment".into());
        let cfg: ServeConfig = toml::Value::Table(table)
            .try_into()
            .with_context(|| format!("invalid configuration (from {origin})"))?;
        cfg.limits.validate()?;
        Ok(cfg)
    }
}

/// Sets `keys` (a path of tables) to `raw`, read as a TOML value when it parses as one
/// (numbers, booleans, arrays) and as a string otherwise.
fn set_path(table: &mut toml::Table, keys: &[String], raw: &str) -> Result<()> {
    let (last, parents) = keys
        .split_last()
        .ok_or_else(|| anyhow::anyhow!("empty key"))?;
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| anyhow::anyhow!("{key} is not a section"))?;
    }
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn environment_overrides_reach_every_section() {
        let cfg = ServeConfig::load_with_env(
            None,
            env(&[
                ("INSITU__LIMITS__TICKET_TTL_SECS", "60"),
                ("INSITU__CHAIN__KIND", "embedded"),
                ("INSITU__LISTEN", "0.0.0.0:1"),
                ("INSITU__STORAGE__OPTIONS__AWS_REGION", "eu-west-1"),
                ("UNRELATED", "x"),
            ]),
        )
        .expect("loads");
        assert_eq!(cfg.limits.ticket_ttl_secs, 60);
        assert_eq!(cfg.chain.kind.as_deref(), Some("embedded"));
        assert_eq!(cfg.listen.as_deref(), Some("0.0.0.0:1"));
        assert_eq!(
            cfg.storage.options.get("aws_region").map(String::as_str),
            Some("eu-west-1")
        );
    }

    #[test]
    fn a_bad_override_names_the_key() {
        let err =
            ServeConfig::load_with_env(None, env(&[("INSITU__LIMITS__TICKET_TTL_SECS", "soon")]))
                .expect_err("not a number");
        assert!(format!("{err:#}").contains("ticket_ttl_secs"), "{err:#}");
        let err =
            ServeConfig::load_with_env(None, env(&[("INSITU__LISTN", "x")])).expect_err("typo");
        assert!(format!("{err:#}").contains("listn"), "{err:#}");
    }
}
