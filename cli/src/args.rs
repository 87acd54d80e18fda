//! Command-line arguments. Every option can also come from an `INSITU_*` environment
//! variable, so scripts and containers need no flags.

use std::path::PathBuf;

use alloy::primitives::Address;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "insitu",
    version,
    about = "Share and sell data without giving it up: agreement-gated Arrow Flight on an EVM chain"
)]
pub struct Cli {
    /// More logging (-v, -vv). INSITU_LOG overrides with a tracing filter.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole flow in one process: in-process chain, provider, two consumers.
    Demo(DemoArgs),
    /// Create or import signing keys (encrypted keystore files).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Development helpers: deploy contracts, mint test tokens.
    #[command(subcommand)]
    Dev(DevCommand),
    /// Run a provider: the gated Flight server.
    Serve(ServeArgs),
    /// Publish a Parquet or CSV file as an asset (provider).
    Publish(PublishArgs),
    /// Change an asset's name, description or tags: a new version, its hash on chain (owner).
    Update(UpdateArgs),
    /// Find assets by text and filters, in a local catalog or a provider's.
    Search(SearchArgs),
    /// Order a service of an asset, locking its price in escrow (consumer).
    Order(OrderArgs),
    /// Print a bearer token for a provider (consumer).
    Token(TokenArgs),
    /// Download an asset you hold an agreement for (consumer).
    Get(GetArgs),
    /// Run SQL on an asset you hold a query agreement for, where the data lives (consumer).
    Query(QueryArgs),
    /// Run an algorithm where the data lives, and follow, read and cancel jobs (consumer);
    /// hash and approve algorithms (provider, publisher).
    #[command(subcommand)]
    Compute(ComputeCommand),
    /// Train one model across several providers' assets with secure aggregation, and
    /// read a job's progress and model (consumer).
    #[command(subcommand)]
    Train(TrainCommand),
    /// Set what a query service lets out: columns, masks, row filter, aggregate-only,
    /// limits, templates, differential privacy (provider).
    Constraints(ConstraintsArgs),
    /// Write a commented configuration file for `insitu serve`.
    Init(InitArgs),
    /// Show an agreement as the chain sees it.
    Status(StatusArgs),
    /// Take back the payment of an agreement the provider never fulfilled (consumer).
    Refund(StatusArgs),
}

/// Which chain and contracts.
#[derive(Debug, Clone, Args)]
pub struct ChainArgs {
    /// Which chain: `rpc` (any EVM JSON-RPC endpoint) or `embedded` (the in-process EVM
    /// persisted in --data-dir; no node needed).
    #[arg(long = "chain", env = "INSITU_CHAIN", default_value = "rpc")]
    pub kind: String,
    /// Data directory of the embedded chain (and default home of catalog and audit log).
    #[arg(long, env = "INSITU_DATA_DIR", default_value = ".insitu")]
    pub data_dir: PathBuf,
    /// JSON-RPC endpoint of the chain.
    #[arg(long, env = "INSITU_RPC_URL", default_value = "http://127.0.0.1:8545")]
    pub rpc_url: String,
    /// Expected chain id; the node is refused if it differs.
    #[arg(long, env = "INSITU_CHAIN_ID")]
    pub chain_id: Option<u64>,
    /// AssetRegistry contract address.
    #[arg(long, env = "INSITU_REGISTRY")]
    pub registry: Option<Address>,
    /// AgreementManager contract address.
    #[arg(long, env = "INSITU_AGREEMENTS")]
    pub agreements: Option<Address>,
    /// Blocks an order needs before it is trusted.
    #[arg(long, env = "INSITU_CONFIRMATIONS", default_value_t = 1)]
    pub confirmations: u64,
    /// First block to scan for agreement events (the contracts' deployment block).
    #[arg(long, env = "INSITU_FROM_BLOCK", default_value_t = 0)]
    pub from_block: u64,
}

/// Which signing key. Keys never go on the command line.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// Encrypted keystore file (its password in the variable named by --password-env).
    #[arg(long, env = "INSITU_KEYSTORE")]
    pub keystore: Option<PathBuf>,
    /// Environment variable holding the keystore password.
    #[arg(
        long,
        env = "INSITU_PASSWORD_ENV",
        default_value = "INSITU_KEYSTORE_PASSWORD"
    )]
    pub password_env: String,
    /// Environment variable holding a BIP-39 mnemonic.
    #[arg(long, env = "INSITU_MNEMONIC_ENV")]
    pub mnemonic_env: Option<String>,
    /// Account index when deriving from a mnemonic.
    #[arg(long, env = "INSITU_ACCOUNT_INDEX", default_value_t = 0)]
    pub account_index: u32,
    /// Environment variable holding a hex private key (used when no keystore or mnemonic is set).
    #[arg(long, env = "INSITU_KEY_ENV", default_value = "INSITU_PRIVATE_KEY")]
    pub key_env: String,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a new key and write it as an encrypted keystore file.
    New {
        /// Keystore file to write.
        #[arg(long, short)]
        out: PathBuf,
        /// Environment variable holding the password to encrypt with.
        #[arg(long, default_value = "INSITU_KEYSTORE_PASSWORD")]
        password_env: String,
    },
    /// Encrypt the private key from --key-env (or a mnemonic account) into a keystore file.
    Import {
        #[arg(long, short)]
        out: PathBuf,
        /// Environment variable holding the password to encrypt the new keystore with
        /// (`--password-env` names the password of a keystore being read).
        #[arg(long, default_value = "INSITU_KEYSTORE_PASSWORD")]
        out_password_env: String,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Print the address of the configured key.
    Show {
        #[command(flatten)]
        key: KeyArgs,
    },
}

/// Where a compute job runs: the provider's endpoint and address (the token's audience).
#[derive(Debug, Clone, Args)]
pub struct ComputeRemote {
    /// The provider's Flight endpoint.
    #[arg(
        long,
        env = "INSITU_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: String,
    /// The provider's address. `submit` looks it up from the asset if it has one
    /// provider; the job commands need it.
    #[arg(long, env = "INSITU_PROVIDER")]
    pub provider: Option<Address>,
    /// PEM CA certificate to trust for an https:// endpoint (default: the web PKI).
    #[arg(long, env = "INSITU_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    #[command(flatten)]
    pub chain: ChainArgs,
    #[command(flatten)]
    pub key: KeyArgs,
}

#[derive(Debug, Subcommand)]
pub enum ComputeCommand {
    /// Run an algorithm (a WASI module) on an asset you hold a compute agreement for.
    Submit {
        /// The asset's DID.
        did: String,
        /// The compute agreement (from `insitu order`).
        #[arg(long)]
        agreement: String,
        /// The algorithm: a WebAssembly module built for wasm32-wasip1.
        #[arg(long)]
        algorithm: PathBuf,
        /// A publisher's approval of the module (JSON from `insitu compute approve`).
        #[arg(long)]
        approval: Option<PathBuf>,
        /// Follow the job until it ends, with a progress display.
        #[arg(long)]
        follow: bool,
        /// Arguments passed to the algorithm (after `--args`).
        #[arg(long, num_args = 1.., allow_hyphen_values = true)]
        args: Vec<String>,
        #[command(flatten)]
        remote: ComputeRemote,
    },
    /// A job's state and history; `--follow` shows progress until it ends.
    Status {
        job: String,
        #[arg(long)]
        follow: bool,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: ComputeRemote,
    },
    /// A job's stdout and stderr.
    Logs {
        job: String,
        #[command(flatten)]
        remote: ComputeRemote,
    },
    /// Cancel a job that has not ended.
    Cancel {
        job: String,
        #[command(flatten)]
        remote: ComputeRemote,
    },
    /// The assets a finished job published for you (order their download service to read them).
    Result {
        job: String,
        #[command(flatten)]
        remote: ComputeRemote,
    },
    /// Print a module's content hash, as a provider's allow-list takes it.
    Hash { algorithm: PathBuf },
    /// Sign an approval of a module as a publisher, for providers that trust you.
    Approve {
        algorithm: PathBuf,
        /// How long the approval holds (`90d`, `24h`…).
        #[arg(long, default_value = "90d")]
        expires_in: String,
        /// Where to write the approval (JSON); stdout if absent.
        #[arg(long, short)]
        out: Option<PathBuf>,
        #[command(flatten)]
        chain: ChainArgs,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Steps inside a cluster run's pod (the runner image's entry points).
    #[command(subcommand, hide = true)]
    Pod(PodCommand),
}

/// The steps inside a cluster run's pod: the entry points of the runner image, which
/// the provider's Kubernetes backend writes into each Job. Not for people.
#[derive(Debug, Subcommand)]
pub enum PodCommand {
    /// Fetch the run's staged input and module from the provider's gateway.
    Stage {
        #[command(flatten)]
        gateway: PodGatewayArgs,
        #[arg(long, default_value = "/data")]
        data: PathBuf,
        #[arg(long, default_value = "/work")]
        work: PathBuf,
    },
    /// Run one algorithm step in the WASI sandbox, under the run's limits.
    Exec {
        #[arg(long)]
        module: PathBuf,
        #[arg(long, default_value = "/data")]
        data: PathBuf,
        #[arg(long, default_value = "/out")]
        out: PathBuf,
        #[arg(long)]
        deadline_secs: u64,
        #[arg(long)]
        memory_bytes: u64,
        #[arg(long)]
        output_bytes: u64,
        #[arg(long)]
        output_files: u64,
        #[arg(long)]
        log_bytes: u64,
        /// Where the cluster reads a failed container's reason
        /// (`/dev/termination-log` in a pod).
        #[arg(long)]
        termination_log: Option<PathBuf>,
        /// The algorithm's own arguments (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Send every file of `/out` back to the provider's gateway.
    Publish {
        #[command(flatten)]
        gateway: PodGatewayArgs,
        #[arg(long, default_value = "/out")]
        out: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct PodGatewayArgs {
    /// The gateway's URL, as the pod reaches it.
    #[arg(long)]
    pub gateway: url::Url,
    /// The run's job id.
    #[arg(long)]
    pub job: String,
    /// The file holding the run's token (mounted from its Secret).
    #[arg(long)]
    pub token_file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Deploy AssetRegistry and AgreementManager (and optionally the test ERC-20).
    Deploy {
        #[command(flatten)]
        chain: ChainArgs,
        #[command(flatten)]
        key: KeyArgs,
        /// Marketplace fee in basis points (paid to --fee-receiver).
        #[arg(long, default_value_t = 0)]
        fee_bps: u16,
        #[arg(long)]
        fee_receiver: Option<Address>,
        /// Also deploy the test ERC-20.
        #[arg(long)]
        test_token: bool,
    },
    /// Mint test ERC-20 tokens.
    Mint {
        #[command(flatten)]
        chain: ChainArgs,
        #[command(flatten)]
        key: KeyArgs,
        #[arg(long)]
        token: Address,
        #[arg(long)]
        to: Address,
        /// Amount in base units.
        #[arg(long)]
        amount: String,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file; flags override it.
    #[arg(long, short, env = "INSITU_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "INSITU_LISTEN")]
    pub listen: Option<String>,
    /// PEM certificate chain for TLS on the Flight port (with --tls-key).
    #[arg(long, env = "INSITU_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, env = "INSITU_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Address of the admin endpoint (/health, /metrics); keep it private.
    #[arg(long, env = "INSITU_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Catalog database URL.
    #[arg(long, env = "INSITU_CATALOG")]
    pub catalog: Option<String>,
    /// Audit log file (JSON lines, append-only).
    #[arg(long, env = "INSITU_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    #[command(flatten)]
    pub chain: ChainArgs,
    #[command(flatten)]
    pub key: KeyArgs,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The Parquet or CSV file to publish, or an object URL (`s3://bucket/key.parquet`,
    /// `gs://…`, `az://…`, `file:///…`; cloud schemes need the `cloud` feature).
    pub file: PathBuf,
    /// Object-store option for a URL source, `key=value` (repeatable), e.g.
    /// `aws_region=eu-west-1`. `AWS_*`, `GOOGLE_*` and `AZURE_*` variables are read too.
    #[arg(long = "storage-option")]
    pub storage_options: Vec<String>,
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value = "")]
    pub description: String,
    /// A tag (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Service type.
    #[arg(long, default_value = "download")]
    pub service: String,
    /// Constraints for a query service, a TOML file (see docs/query-policy.md).
    #[arg(long)]
    pub constraints: Option<PathBuf>,
    /// Price in base units of the token (wei for ETH). 0 is free.
    #[arg(long, default_value = "0")]
    pub price: String,
    /// ERC-20 token to be paid in; ETH if absent.
    #[arg(long)]
    pub token: Option<Address>,
    /// Access window after fulfilment, e.g. 3600, 90m, 24h, 7d.
    #[arg(long, default_value = "24h")]
    pub access: String,
    /// Time the provider has to fulfil before the consumer may refund.
    #[arg(long, default_value = "1h")]
    pub fulfill_timeout: String,
    /// Extra provider addresses allowed to serve the asset (the publisher always is).
    #[arg(long = "provider")]
    pub providers: Vec<Address>,
    /// Public endpoint where consumers reach this provider.
    #[arg(
        long,
        env = "INSITU_PUBLIC_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: String,
    /// Catalog database URL (the one `insitu serve` uses; default: catalog.db in --data-dir).
    #[arg(long, env = "INSITU_CATALOG")]
    pub catalog: Option<String>,
    #[command(flatten)]
    pub chain: ChainArgs,
    #[command(flatten)]
    pub key: KeyArgs,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The asset's DID.
    pub did: String,
    /// New name.
    #[arg(long)]
    pub name: Option<String>,
    /// New description.
    #[arg(long)]
    pub description: Option<String>,
    /// The new tags, replacing the old ones (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Remove every tag.
    #[arg(long, conflicts_with = "tags")]
    pub clear_tags: bool,
    /// Catalog database URL (the one `insitu serve` uses; default: catalog.db in --data-dir).
    #[arg(long, env = "INSITU_CATALOG")]
    pub catalog: Option<String>,
    #[command(flatten)]
    pub chain: ChainArgs,
    #[command(flatten)]
    pub key: KeyArgs,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Words to find in names, descriptions, tags and column names (all must match;
    /// the last letters of a word may be left off).
    pub text: Option<String>,
    /// Only assets with this tag (repeatable: all must be present).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only assets offering this service: download, query, compute or train.
    #[arg(long)]
    pub service: Option<String>,
    /// Lowest price, in base units of the service's token.
    #[arg(long)]
    pub min_price: Option<String>,
    /// Highest price, in base units of the service's token.
    #[arg(long)]
    pub max_price: Option<String>,
    /// Only assets owned by this address.
    #[arg(long)]
    pub owner: Option<Address>,
    /// Results per page (at most 100).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Results to skip (the `next` offset a previous page printed).
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// Output: `table` (for people) or `json` (the whole page, DDOs included).
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Search a provider's catalog over Flight at this endpoint (with --provider);
    /// without it, the local catalog is searched.
    #[arg(long, requires = "provider")]
    pub endpoint: Option<String>,
    /// The provider's address (the search token is signed for it).
    #[arg(long)]
    pub provider: Option<Address>,
    /// PEM CA certificate to trust for an https:// endpoint (default: the web PKI).
    #[arg(long, env = "INSITU_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Local catalog database URL (default: catalog.db in --data-dir).
    #[arg(long, env = "INSITU_CATALOG")]
    pub catalog: Option<String>,
    #[command(flatten)]
    pub chain: ChainArgs,
    #[command(flatten)]
    pub key: KeyArgs,
}

#[derive(Debug, Args)]
pub struct OrderArgs {
    /// The asset's DID.
    pub did: String,
    /// Index of the service to order.
    #[arg(long, default_value_t = 0)]
    pub service: u64,
    #[command(flatten)]
    pub chain: ChainArgs,
    #[command(flatten)]
    pub key: KeyArgs,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The provider the token is for (its address).
    #[arg(long)]
    pub provider: Address,
    /// Lifetime, e.g. 15m, 1h (at most 24h).
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    #[arg(long, default_value = "access", conflicts_with = "query_agreements")]
    pub scope: String,
    /// A query agreement the token carries, for Flight SQL clients (repeat for several;
    /// sets the scope to `query:<id>,…`).
    #[arg(long = "agreement", value_name = "ID")]
    pub query_agreements: Vec<String>,
    #[command(flatten)]
    pub chain: ChainArgs,
    #[command(flatten)]
    pub key: KeyArgs,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The asset's DID (its provider is looked up on chain).
    pub did: String,
    /// The SQL to run. `--tables` lists what you can query instead.
    #[arg(required_unless_present_any = ["tables", "budget"])]
    pub sql: Option<String>,
    /// The query agreement that entitles you (from `insitu order --service <query index>`).
    #[arg(long)]
    pub agreement: String,
    /// List the tables this agreement lets you query, with their columns.
    #[arg(long)]
    pub tables: bool,
    /// Show the differential-privacy budget left on this agreement.
    #[arg(long)]
    pub budget: bool,
    /// The provider's Flight endpoint.
    #[arg(
        long,
        env = "INSITU_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: String,
    /// Output: `table` (aligned, for people) or `csv` (for pipes).
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Print at most this many rows in table format (the rest are counted).
    #[arg(long, default_value_t = 1000)]
    pub max_rows: usize,
    /// PEM CA certificate to trust for an https:// endpoint (default: the web PKI).
    #[arg(long, env = "INSITU_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Provider address, if the asset lists several.
    #[arg(long)]
    pub provider: Option<Address>,
    #[command(flatten)]
    pub chain: ChainArgs,
    #[command(flatten)]
    pub key: KeyArgs,
}

#[derive(Debug, Args)]
pub struct ConstraintsArgs {
    /// The asset's DID.
    pub did: String,
    /// The constraints, a TOML file (see docs/query-policy.md).
    pub file: PathBuf,
    /// Which service of the asset (its index in the DDO).
    #[arg(long, default_value_t = 0)]
    pub service_index: u64,
    /// Catalog database URL (the one `insitu serve` uses; default: catalog.db in --data-dir).
    #[arg(long, env = "INSITU_CATALOG")]
    pub catalog: Option<String>,
    /// Data directory (default home of the catalog).
    #[arg(long, env = "INSITU_DATA_DIR", default_value = ".insitu")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The asset's DID.
    pub did: String,
    /// The agreement that entitles you (from `insitu order`).
    #[arg(long)]
    pub agreement: String,
    /// The provider's Flight endpoint.
    #[arg(
        long,
        env = "INSITU_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: String,
    /// Output file: .parquet, .arrow (IPC) or .csv.
    #[arg(long, short)]
    pub out: PathBuf,
    /// PEM CA certificate to trust for an https:// endpoint (default: the web PKI).
    #[arg(long, env = "INSITU_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Provider address, if the asset lists several.
    #[arg(long)]
    pub provider: Option<Address>,
    #[command(flatten)]
    pub chain: ChainArgs,
    #[command(flatten)]
    pub key: KeyArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agreement id.
    pub agreement: String,
    #[command(flatten)]
    pub chain: ChainArgs,
    #[command(flatten)]
    pub key: KeyArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the chain, catalog, data and audit log here (default: a scratch directory).
    #[arg(long, env = "INSITU_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TPC-H scale factor of the generated sample data.
    #[arg(long, default_value_t = 0.01)]
    pub scale_factor: f64,
    /// The shared datasets folder (default: ../shared/data when present).
    #[arg(long)]
    pub shared_data: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the configuration.
    #[arg(default_value = "insitu.toml")]
    pub path: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Orders (or takes) a `train` agreement per asset, opens the job on chain with a
    /// fresh coordinator key, runs every round from here, and publishes the model as
    /// your asset with its hash on chain.
    Start(Box<TrainStartArgs>),
    /// A job's rounds so far, as this machine recorded them, and its model on chain.
    Status {
        /// The job id `start` printed.
        job: String,
        /// Print the record as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Where a finished job's model is: its asset, its hash on chain, its file.
    Result {
        job: String,
        /// Copy the model file (Arrow IPC) here.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        chain: ChainArgs,
    },
}

#[derive(Debug, Args)]
pub struct TrainStartArgs {
    /// The assets to train on, comma-separated DIDs (one per provider).
    #[arg(long, value_delimiter = ',', required = true)]
    pub assets: Vec<String>,
    /// The training module: a WASI module built for wasm32-wasip1 (see docs/federated.md).
    #[arg(long)]
    pub algorithm: PathBuf,
    #[arg(long, default_value_t = 10)]
    pub rounds: u32,
    /// Existing `train` agreements, one per asset in the same order; without them, each
    /// asset's first `train` service is ordered (paying its price into escrow).
    #[arg(long = "agreement-ids", value_delimiter = ',')]
    pub agreement_ids: Vec<String>,
    /// A provider endpoint for an asset, as DID=URL; by default the asset's metadata URL.
    #[arg(long = "endpoint")]
    pub endpoints: Vec<String>,
    /// fedavg, fedavgm, fedadam; median or trimmed-mean need --no-secure-aggregation.
    #[arg(long, default_value = "fedavg")]
    pub strategy: String,
    /// Send plain updates (only to providers that allow it). Robust strategies need it.
    #[arg(long)]
    pub no_secure_aggregation: bool,
    /// Providers every secure aggregation phase needs (default: a majority).
    #[arg(long)]
    pub threshold: Option<usize>,
    /// SecAgg+: each provider masks with this many neighbours (even, at least 4)
    /// instead of with every provider; for jobs with many providers.
    #[arg(long)]
    pub neighbours: Option<usize>,
    /// Each update value is clipped to [-clip, clip].
    #[arg(long, default_value_t = 4.0)]
    pub clip: f32,
    /// DP-FedAvg: clip each provider's update to this L2 norm and add distributed
    /// discrete Gaussian noise (with --dp-noise); every provider then weighs 1.
    #[arg(long, requires = "dp_noise")]
    pub dp_clip: Option<f32>,
    /// DP-FedAvg noise multiplier z: the summed noise has deviation z × --dp-clip.
    #[arg(long, requires = "dp_clip")]
    pub dp_noise: Option<f64>,
    /// The most samples all providers weigh together in a round.
    #[arg(long, default_value_t = 65536)]
    pub max_samples: u32,
    /// How long local training may take each round.
    #[arg(long, default_value = "10m")]
    pub train_timeout: String,
    /// How long each secure aggregation phase waits.
    #[arg(long, default_value = "60s")]
    pub phase_timeout: String,
    /// A trusted publisher's approval of the module (`insitu compute approve`).
    #[arg(long)]
    pub approval: Option<PathBuf>,
    /// Also write the final model (Arrow IPC) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the coordinator can be reached, published on chain with its key. The
    /// coordinator dials the providers, so this is informational.
    #[arg(long, default_value = "dial-out")]
    pub coordinator_endpoint: String,
    /// PEM CA certificate to trust for https:// endpoints (default: the web PKI).
    #[arg(long, env = "INSITU_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    #[command(flatten)]
    pub chain: ChainArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Arguments for the training module, after `--`.
    #[arg(last = true)]
    pub module_args: Vec<String>,
}
