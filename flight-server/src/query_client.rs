//! The consumer side of a query: connect with a token that carries query agreements,
//! send SQL, and stream the result. Used by `insitu query` and by embedders; any Flight
//! SQL client (ADBC, JDBC, ODBC) works the same way.

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::sql::{CommandGetTables, CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightClient, FlightDescriptor, FlightInfo};
use futures::TryStreamExt;
use prost::Message;

use crate::client::{authenticated, status_error};
use crate::error::{FlightError, Result};

/// A connected, authenticated Flight SQL client.
#[derive(Debug)]
pub struct QueryClient {
    inner: FlightClient,
}

impl QueryClient {
    /// Connects to `endpoint` and sends `token` (from `insitu token --agreement …`) on
    /// every call; `ca_pem` is trusted for `https://` endpoints.
    pub async fn connect(endpoint: &str, token: &str, ca_pem: Option<Vec<u8>>) -> Result<Self> {
        let inner = authenticated(endpoint, token, ca_pem).await?;
        Ok(QueryClient { inner })
    }

    /// Plans `sql` on the provider: the result schema and the tickets to fetch it.
    pub async fn plan(&mut self, sql: &str) -> Result<FlightInfo> {
        let command = CommandStatementQuery {
            query: sql.to_string(),
            transaction_id: None,
        };
        self.inner
            .get_flight_info(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()))
            .await
            .map_err(status_error)
    }

    /// Streams the result of a planned query (its first endpoint, the only one this
    /// provider issues).
    pub async fn fetch(&mut self, info: &FlightInfo) -> Result<FlightRecordBatchStream> {
        let ticket = info
            .endpoint
            .first()
            .and_then(|e| e.ticket.clone())
            .ok_or_else(|| FlightError::Internal("the provider returned no ticket".into()))?;
        self.inner.do_get(ticket).await.map_err(status_error)
    }

    /// The privacy budget left on each differentially private agreement in the token,
    /// as the provider reports it (a JSON array).
    pub async fn privacy_budgets(&mut self) -> Result<serde_json::Value> {
        let mut results = self
            .inner
            .do_action(arrow_flight::Action::new(crate::PRIVACY_BUDGET, ""))
            .await
            .map_err(status_error)?;
        let body = results
            .try_next()
            .await
            .map_err(status_error)?
            .ok_or_else(|| FlightError::Internal("the provider sent no budget".into()))?;
        serde_json::from_slice(&body).map_err(|e| FlightError::Internal(e.to_string()))
    }

    /// Runs `sql` and streams its result.
    pub async fn query(&mut self, sql: &str) -> Result<FlightRecordBatchStream> {
        let info = self.plan(sql).await?;
        self.fetch(&info).await
    }

    /// The tables this token may query, with their schemas.
    pub async fn tables(&mut self) -> Result<Vec<(String, arrow::datatypes::Schema)>> {
        let command = CommandGetTables {
            include_schema: true,
            ..Default::default()
        };
        let info = self
            .inner
            .get_flight_info(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()))
            .await
            .map_err(status_error)?;
        let batches: Vec<arrow::array::RecordBatch> = self
            .fetch(&info)
            .await?
            .try_collect()
            .await
            .map_err(status_error)?;
        let mut out = Vec::new();
        for batch in batches {
            let names = batch.column_by_name("table_name").and_then(|c| {
                c.as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .cloned()
            });
            let schemas = batch.column_by_name("table_schema").and_then(|c| {
                c.as_any()
                    .downcast_ref::<arrow::array::BinaryArray>()
                    .cloned()
            });
            let (Some(names), Some(schemas)) = (names, schemas) else {
                return Err(FlightError::Internal(
                    "GetTables answered without schemas".into(),
                ));
            };
            for i in 0..batch.num_rows() {
                let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(schemas.value(i))
                    .map_err(|e| FlightError::Internal(format!("unreadable table schema: {e}")))?;
                out.push((names.value(i).to_string(), schema));
            }
        }
        Ok(out)
    }
}
