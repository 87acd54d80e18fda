//! Fixtures shared by the suites: a chain, a provider with a free (CSV) and a paid
//! (ERC-20, Parquet) asset published, and raw Flight calls that expose gRPC statuses.

use alloy::primitives::U256;
use anyhow::Result;
use arrow_flight::{FlightClient, FlightDescriptor, FlightInfo, Ticket};
use futures::TryStreamExt;
use insitu_integration_tests::data::{sample_batches, write_csv, write_parquet};
use insitu_integration_tests::{
    CONSUMER, OTHER_CONSUMER, Provider, ProviderOptions, World, account,
};
use insitu_ledger::{AgreementId, Did, Ledger, ServiceOffer, ServiceType};
use tonic::Status;

pub const PRICE: u64 = 1_000_000;
pub const ROWS: usize = 25_000;

/// A chain, a provider and two published assets.
pub struct Scene {
    pub world: World,
    pub provider: Provider,
    /// Free, CSV.
    pub free: Did,
    /// Paid in the test ERC-20, Parquet.
    pub paid: Did,
}

pub fn offer(price: u64, token: Option<alloy::primitives::Address>) -> ServiceOffer {
    ServiceOffer {
        service_type: ServiceType::Download,
        token,
        price: U256::from(price),
        access_duration: 3600,
        fulfill_timeout: 600,
    }
}

impl Scene {
    pub async fn start() -> Result<Scene> {
        Self::start_with(ProviderOptions::default()).await
    }

    pub async fn start_with(opts: ProviderOptions) -> Result<Scene> {
        let world = World::start().await?;
        let provider = Provider::start(&world, opts).await?;
        let batches = sample_batches(ROWS)?;
        let csv = provider.path("free.csv");
        write_csv(&csv, &batches[..1])?;
        let parquet = provider.path("paid.parquet");
        write_parquet(&parquet, &batches)?;
        let free = provider
            .publish(&csv, "free sample", offer(0, None))
            .await?;
        let paid = provider
            .publish(&parquet, "paid sample", offer(PRICE, Some(world.token)))
            .await?;
        for who in [CONSUMER, OTHER_CONSUMER] {
            world
                .mint(account(who).address(), U256::from(PRICE * 10))
                .await?;
        }
        Ok(Scene {
            world,
            provider,
            free,
            paid,
        })
    }

    /// `who` orders service 0 of `did`.
    pub async fn order(&self, who: u32, did: Did) -> Result<AgreementId> {
        let ledger = self.world.ledger(who).await?;
        Ok(ledger.order(did, 0).await?.agreement_id)
    }

    /// A valid token of account `who` for this provider.
    pub fn token(&self, who: u32) -> Result<String> {
        insitu_integration_tests::token_for(&self.world, &account(who), self.provider.address)
    }

    /// The claims of a valid token of CONSUMER for this provider, for attacks to bend.
    pub fn claims(&self) -> insitu_policy::AccessClaims {
        let d = &self.world.deployed;
        insitu_policy::AccessClaims {
            provider: self.provider.address,
            chain_id: d.chain_id,
            verifying_contract: d.addresses.agreements,
            issued_at: insitu_integration_tests::now(),
            lifetime: std::time::Duration::from_secs(600),
            scope: "access".into(),
        }
    }

    /// A raw Flight client carrying a token of CONSUMER signed over `claims`.
    pub async fn client_with(&self, claims: &insitu_policy::AccessClaims) -> FlightClient {
        let token = insitu_policy::sign_access_token(&account(CONSUMER), claims).expect("sign");
        raw_client(&self.provider.endpoint, Some(&bearer(&token)))
            .await
            .expect("client")
    }

    /// Downloads `did` as account `who`, the way `insitu get` does.
    pub async fn download(
        &self,
        who: u32,
        did: Did,
        agreement: AgreementId,
    ) -> std::result::Result<Vec<arrow::record_batch::RecordBatch>, insitu_flight::FlightError>
    {
        let token = self.token(who).expect("token");
        insitu_integration_tests::download(&self.provider.endpoint, &token, did, agreement).await
    }

    /// A raw Flight client carrying a valid token of account `who`.
    pub async fn client(&self, who: u32) -> FlightClient {
        let token = self.token(who).expect("token");
        raw_client(&self.provider.endpoint, Some(&bearer(&token)))
            .await
            .expect("client")
    }

    /// How many transactions the provider has sent (fulfils included).
    pub async fn provider_txs(&self) -> Result<u64> {
        self.world.tx_count(self.provider.address).await
    }

    pub async fn state(&self, id: AgreementId) -> Result<Option<insitu_ledger::AgreementState>> {
        Ok(self.provider.ledger.agreement(id).await?.map(|a| a.state))
    }
}

/// A Flight client that sends `authorization` as given (or nothing).
pub async fn raw_client(endpoint: &str, authorization: Option<&str>) -> Result<FlightClient> {
    let channel = tonic::transport::Channel::from_shared(endpoint.to_string())?
        .connect()
        .await?;
    let mut client = FlightClient::new(channel);
    if let Some(value) = authorization {
        client.add_header("authorization", value)?;
    }
    Ok(client)
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub fn status(e: arrow_flight::error::FlightError) -> Status {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => Status::unknown(other.to_string()),
    }
}

pub fn descriptor(did: Did, agreement: AgreementId) -> FlightDescriptor {
    insitu_flight::AssetRequest { did, agreement }.to_descriptor()
}

/// GetFlightInfo, returning the gRPC status on failure.
pub async fn info(
    client: &mut FlightClient,
    did: Did,
    agreement: AgreementId,
) -> std::result::Result<FlightInfo, Status> {
    client
        .get_flight_info(descriptor(did, agreement))
        .await
        .map_err(status)
}

/// DoGet to completion, returning the row count or the gRPC status.
pub async fn fetch(
    client: &mut FlightClient,
    ticket: Ticket,
) -> std::result::Result<usize, Status> {
    let stream = client.do_get(ticket).await.map_err(status)?;
    let batches: Vec<_> = stream.try_collect().await.map_err(status)?;
    Ok(batches.iter().map(|b| b.num_rows()).sum())
}

pub fn ticket_of(info: &FlightInfo) -> Ticket {
    info.endpoint
        .first()
        .and_then(|e| e.ticket.clone())
        .unwrap_or_else(|| Ticket::new(Vec::<u8>::new()))
}

/// Asserts a refusal with `code` whose message contains `needle`.
pub fn assert_refused<T: std::fmt::Debug>(
    r: std::result::Result<T, Status>,
    code: tonic::Code,
    needle: &str,
) {
    match r {
        Ok(v) => panic!("expected {code:?} containing '{needle}', got success: {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "unexpected status: {s:?}");
            assert!(
                s.message().contains(needle),
                "message '{}' does not contain '{needle}'",
                s.message()
            );
        }
    }
}

/// Rows as display strings (`null` for nulls), for comparing answers across clients.
pub fn rows_of(batches: &[arrow::array::RecordBatch]) -> Vec<Vec<String>> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("null");
    let mut out = Vec::new();
    for b in batches {
        let formatters: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for r in 0..b.num_rows() {
            out.push(formatters.iter().map(|f| f.value(r).to_string()).collect());
        }
    }
    out
}
