//! Flight SQL against a real provider: the Rust client, the refusals on every RPC, the
//! limits, and real Python clients (ADBC, pandas, polars, Spark) in separate processes.

mod limits;
mod lineage;
pub mod policy;
mod python;
mod refusals;
mod rust_client;
mod spark;

use alloy::primitives::U256;
use anyhow::Result;
use arrow::array::RecordBatch;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightClient, FlightDescriptor, FlightInfo};
use futures::TryStreamExt;
use insitu_integration_tests::data::{sample_batches, write_parquet};
use insitu_integration_tests::{
    CONSUMER, OTHER_CONSUMER, Provider, ProviderOptions, World, account, token_with_scope,
};
use insitu_ledger::{AgreementId, Did, Ledger, ServiceOffer, ServiceType};
use prost::Message;
use tonic::Status;

use crate::common::{PRICE, ROWS, bearer, offer, raw_client};

/// A provider with two query assets and one download asset; CONSUMER holds a query
/// agreement for `sales`, OTHER_CONSUMER one for `other`.
pub struct QueryScene {
    pub world: World,
    pub provider: Provider,
    /// Paid (ERC-20) query service over `sample_batches(ROWS)`, Parquet.
    pub sales: Did,
    /// Free query service over the same rows, CSV, that CONSUMER never ordered.
    pub other: Did,
    /// CONSUMER's query agreement on `sales`.
    pub agreement: AgreementId,
    /// OTHER_CONSUMER's query agreement on `other`.
    pub others_agreement: AgreementId,
    /// CONSUMER's download agreement on `download`.
    pub download_agreement: AgreementId,
}

pub fn query_offer(price: u64, token: Option<alloy::primitives::Address>) -> ServiceOffer {
    ServiceOffer {
        service_type: ServiceType::Query,
        ..offer(price, token)
    }
}

impl QueryScene {
    pub async fn start() -> Result<QueryScene> {
        Self::start_with(ProviderOptions::default()).await
    }

    pub async fn start_with(opts: ProviderOptions) -> Result<QueryScene> {
        let world = World::start().await?;
        let provider = Provider::start(&world, opts).await?;
        let batches = sample_batches(ROWS)?;
        let parquet = provider.path("sales.parquet");
        write_parquet(&parquet, &batches)?;
        let csv = provider.path("other.csv");
        insitu_integration_tests::data::write_csv(&csv, &batches[..1])?;
        let sales = provider
            .publish(&parquet, "sales", query_offer(PRICE, Some(world.token)))
            .await?;
        let other = provider
            .publish(&csv, "other", query_offer(0, None))
            .await?;
        let download = provider
            .publish(&parquet, "sales download", offer(0, None))
            .await?;
        for who in [CONSUMER, OTHER_CONSUMER] {
            world
                .mint(account(who).address(), U256::from(PRICE * 10))
                .await?;
        }
        let order = |who: u32, did: Did| {
            let world = &world;
            async move {
                let ledger = world.ledger(who).await?;
                anyhow::Ok(ledger.order(did, 0).await?.agreement_id)
            }
        };
        let agreement = order(CONSUMER, sales).await?;
        let others_agreement = order(OTHER_CONSUMER, other).await?;
        let download_agreement = order(CONSUMER, download).await?;
        Ok(QueryScene {
            world,
            provider,
            sales,
            other,
            agreement,
            others_agreement,
            download_agreement,
        })
    }

    /// A token of `who` carrying `agreements` in its query scope.
    pub fn token(&self, who: u32, agreements: &[AgreementId]) -> String {
        token_with_scope(
            &self.world,
            &account(who),
            self.provider.address,
            &insitu_flight::query_scope(agreements),
        )
        .expect("token")
    }

    /// CONSUMER's token for its own query agreement.
    pub fn consumer_token(&self) -> String {
        self.token(CONSUMER, &[self.agreement])
    }

    pub async fn client(&self, token: &str) -> FlightClient {
        raw_client(&self.provider.endpoint, Some(&bearer(token)))
            .await
            .expect("client")
    }
}

pub fn statement(sql: &str) -> FlightDescriptor {
    FlightDescriptor::new_cmd(
        CommandStatementQuery {
            query: sql.to_string(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec(),
    )
}

/// Plans and fetches `sql`, returning the gRPC status on failure.
pub async fn run_sql(
    client: &mut FlightClient,
    sql: &str,
) -> std::result::Result<Vec<RecordBatch>, Status> {
    let info: FlightInfo = client
        .get_flight_info(statement(sql))
        .await
        .map_err(crate::common::status)?;
    let ticket = info
        .endpoint
        .first()
        .and_then(|e| e.ticket.clone())
        .expect("a ticket");
    client
        .do_get(ticket)
        .await
        .map_err(crate::common::status)?
        .try_collect()
        .await
        .map_err(crate::common::status)
}
