//! The one Flight service a provider mounts. It routes each RPC to the download service
//! (path descriptors, download tickets) or to Flight SQL (command descriptors, SQL
//! tickets), and intercepts what arrow-flight's `FlightSqlService` cannot route:
//!
//! - `GetSchema` and `PollFlightInfo` for SQL commands: the trait's blanket
//!   `FlightService` answers both with "unimplemented";
//! - `CancelFlightInfo`, `SetSessionOptions`, `GetSessionOptions` and `CloseSession`:
//!   `Flight.proto` actions the trait does not know (they reach `do_action_fallback`
//!   undecoded, and arrow-flight 59 has no types for the session messages);
//! - `ListActions`: the trait lists transactions and Substrait, which this read-only
//!   server does not offer;
//! - `Handshake`, shared by both halves and exempt from the auth layer;
//! - `ListFlights`: authorised first, then refused as unsupported, so a caller without
//!   an agreement learns nothing, not even what is unsupported;
//! - `DoExchange`: handed to the mounted exchange service for the token's scope
//!   (federated training), otherwise authorised and refused like `ListFlights`.

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{Any, Command};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, Criteria,
    Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse, PollInfo,
    PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::service::{GatedFlight, complete_poll};
use crate::sql::session_options::{
    self, CLOSE_SESSION, CloseSessionResult, GET_SESSION_OPTIONS, SET_SESSION_OPTIONS,
    SetSessionOptionsRequest,
};
use crate::sql::{Authorized, SqlService};

const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";
/// insitu's own action: the privacy budget left on the caller's private agreements.
pub const PRIVACY_BUDGET: &str = "insitu.privacy_budget";
/// insitu's own action: search this provider's catalog. The body is a JSON
/// `SearchQuery`, the result a JSON `SearchPage`.
pub const SEARCH: &str = "insitu.search";
/// The token scope a search needs. Finding assets comes before ordering, so no
/// agreement is asked for, but the caller is still authenticated: a signed token bound
/// to this provider, this chain and this action, like every other call.
pub const SEARCH_SCOPE: &str = "search";
const SQL_TYPE_PREFIX: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

/// Downloads and Flight SQL behind one `FlightService`.
#[derive(Debug, Clone)]
pub struct InsituFlight {
    pub(crate) download: GatedFlight,
    pub(crate) sql: SqlService,
    pub(crate) catalog: std::sync::Arc<dyn insitu_catalog::CatalogStore>,
    pub(crate) actions: Vec<std::sync::Arc<dyn crate::ActionHandler>>,
    pub(crate) exchanges: Vec<std::sync::Arc<dyn crate::ExchangeHandler>>,
}

type Stream<T> = BoxStream<'static, std::result::Result<T, Status>>;

fn is_path(d: &FlightDescriptor) -> bool {
    d.r#type == DescriptorType::Path as i32
}

fn is_sql_ticket(ticket: &[u8]) -> bool {
    Any::decode(ticket).is_ok_and(|a| a.type_url.starts_with(SQL_TYPE_PREFIX))
}

fn result(body: Vec<u8>) -> Stream<arrow_flight::Result> {
    Box::pin(futures::stream::once(async move {
        Ok(arrow_flight::Result { body: body.into() })
    }))
}

impl InsituFlight {
    /// Authorises a caller for the SQL half before anything of its request is decoded,
    /// and records the decision in the request for the handler.
    async fn gate<T>(&self, request: &mut Request<T>) -> Result<(), Status> {
        let principal = SqlService::principal(request).map_err(Status::from)?;
        let assets = self.sql.authorize(&principal).await.map_err(Status::from)?;
        request.extensions_mut().insert(Authorized(assets));
        Ok(())
    }

    async fn sql_schema(
        &self,
        mut request: Request<FlightDescriptor>,
    ) -> Result<SchemaResult, Status> {
        self.gate(&mut request).await?;
        let any = Any::decode(request.get_ref().cmd.as_ref())
            .map_err(|e| Status::invalid_argument(format!("bad command: {e}")))?;
        let command =
            Command::try_from(any).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let schema = match command {
            Command::CommandStatementQuery(q) => {
                self.sql.statement_schema(&request, &q.query, None).await
            }
            Command::CommandPreparedStatementQuery(p) => {
                let (sql, params) = self
                    .sql
                    .prepared(&request, &p.prepared_statement_handle)
                    .map_err(Status::from)?;
                self.sql.statement_schema(&request, &sql, params).await
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "GetSchema answers statements; {} carries its schema in GetFlightInfo",
                    other.type_url()
                )));
            }
        }
        .map_err(Status::from)?;
        let options = arrow::ipc::writer::IpcWriteOptions::default();
        SchemaAsIpc::new(&schema, &options)
            .try_into()
            .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))
    }

    /// `insitu.search`: public metadata only, for an authenticated caller whose token
    /// was signed for searching.
    async fn search(&self, request: &Request<Action>) -> Result<Vec<u8>, Status> {
        let principal = SqlService::principal(request).map_err(Status::from)?;
        if principal.scope != SEARCH_SCOPE {
            return Err(Status::permission_denied(format!(
                "searching needs a token signed for scope `{SEARCH_SCOPE}` \
                 (`insitu search` signs one)"
            )));
        }
        let query: insitu_catalog::SearchQuery =
            serde_json::from_slice(request.get_ref().body.as_ref())
                .map_err(|e| Status::invalid_argument(format!("bad search: {e}")))?;
        let page = self.catalog.search(&query).await.map_err(|e| match e {
            insitu_catalog::CatalogError::Invalid(m) => Status::invalid_argument(m),
            other => {
                tracing::error!(error = %other, "search failed");
                Status::unavailable("the catalog cannot answer searches right now")
            }
        })?;
        serde_json::to_vec(&page).map_err(|e| Status::internal(e.to_string()))
    }

    async fn cancel_flight_info(&self, request: Request<Action>) -> Result<Vec<u8>, Status> {
        let cancel = CancelFlightInfoRequest::decode(request.get_ref().body.as_ref())
            .map_err(|e| Status::invalid_argument(format!("bad CancelFlightInfoRequest: {e}")))?;
        let ticket = cancel
            .info
            .as_ref()
            .and_then(|i| i.endpoint.first())
            .and_then(|e| e.ticket.as_ref())
            .ok_or_else(|| Status::invalid_argument("the FlightInfo has no ticket"))?;
        self.sql
            .cancel_ticket(&request, &ticket.ticket)
            .map_err(Status::from)?;
        Ok(CancelFlightInfoResult {
            status: CancelStatus::Cancelled as i32,
        }
        .encode_to_vec())
    }
}

#[tonic::async_trait]
impl FlightService for InsituFlight {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;
    type DoExchangeStream = Stream<FlightData>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        self.download.handshake(request).await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let mut request = request;
        self.gate(&mut request).await?;
        Err(Status::unimplemented(
            "ListFlights is not offered; use GetTables for your agreements' tables",
        ))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        if is_path(request.get_ref()) {
            self.download.get_flight_info(request).await
        } else {
            let mut request = request;
            self.gate(&mut request).await?;
            FlightService::get_flight_info(&self.sql, request).await
        }
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        if is_path(request.get_ref()) {
            return self.download.poll_flight_info(request).await;
        }
        // Queries are planned synchronously, so the first poll is the final answer.
        let mut request = request;
        self.gate(&mut request).await?;
        let descriptor = request.get_ref().clone();
        let info = FlightService::get_flight_info(&self.sql, request)
            .await?
            .into_inner();
        Ok(Response::new(complete_poll(descriptor, info)))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        if is_path(request.get_ref()) {
            self.download.get_schema(request).await
        } else {
            Ok(Response::new(self.sql_schema(request).await?))
        }
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        if is_sql_ticket(&request.get_ref().ticket) {
            let mut request = request;
            self.gate(&mut request).await?;
            FlightService::do_get(&self.sql, request).await
        } else {
            self.download.do_get(request).await
        }
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let mut request = request;
        self.gate(&mut request).await?;
        FlightService::do_put(&self.sql, request).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        if request.get_ref().r#type == SEARCH {
            return Ok(Response::new(result(self.search(&request).await?)));
        }
        let kind = request.get_ref().r#type.clone();
        if let Some(handler) = self
            .actions
            .iter()
            .find(|h| h.actions().iter().any(|(t, _)| *t == kind))
        {
            let principal = SqlService::principal(&request).map_err(Status::from)?;
            let body = handler.handle(principal, request.into_inner()).await?;
            return Ok(Response::new(result(body)));
        }
        let mut request = request;
        self.gate(&mut request).await?;
        let kind = request.get_ref().r#type.as_str();
        if kind == CANCEL_FLIGHT_INFO {
            return Ok(Response::new(result(
                self.cancel_flight_info(request).await?,
            )));
        }
        if kind == PRIVACY_BUDGET {
            let body = self
                .sql
                .privacy_budgets(&request)
                .await
                .map_err(Status::from)?;
            return Ok(Response::new(result(body)));
        }
        if [SET_SESSION_OPTIONS, GET_SESSION_OPTIONS, CLOSE_SESSION].contains(&kind) {
            let body = match kind {
                SET_SESSION_OPTIONS => {
                    let set = SetSessionOptionsRequest::decode(request.get_ref().body.as_ref())
                        .map_err(|e| {
                            Status::invalid_argument(format!("bad SetSessionOptionsRequest: {e}"))
                        })?;
                    session_options::set(&set).encode_to_vec()
                }
                GET_SESSION_OPTIONS => session_options::current().encode_to_vec(),
                _ => CloseSessionResult {
                    status: session_options::CLOSED,
                }
                .encode_to_vec(),
            };
            return Ok(Response::new(result(body)));
        }
        FlightService::do_action(&self.sql, request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let mut request = request;
        self.gate(&mut request).await?;
        let actions = [
            (
                "CreatePreparedStatement",
                "Prepares a SQL query; returns its handle and schemas.",
            ),
            (
                "ClosePreparedStatement",
                "Forgets a prepared statement's bound parameters.",
            ),
            (
                CANCEL_FLIGHT_INFO,
                "Cancels the query behind a FlightInfo you hold.",
            ),
            (
                "CancelQuery",
                "Deprecated Flight SQL form of CancelFlightInfo.",
            ),
            (
                SET_SESSION_OPTIONS,
                "Accepts the fixed catalog and schema; reports others.",
            ),
            (GET_SESSION_OPTIONS, "Returns the catalog and schema."),
            (
                PRIVACY_BUDGET,
                "The differential-privacy budget left on each private agreement in your token (JSON).",
            ),
            (
                CLOSE_SESSION,
                "Ends the session (sessions hold no state here).",
            ),
            (
                SEARCH,
                "Searches this provider's catalog: JSON SearchQuery in, JSON SearchPage out (token scope `search`).",
            ),
        ]
        .into_iter()
        .chain(self.actions.iter().flat_map(|h| h.actions()))
        .map(|(t, d)| {
            Ok(ActionType {
                r#type: t.to_string(),
                description: d.to_string(),
            })
        })
        .collect::<Vec<_>>();
        Ok(Response::new(Box::pin(futures::stream::iter(actions))))
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let principal = SqlService::principal(&request).map_err(Status::from)?;
        if let Some(handler) = self.exchanges.iter().find(|h| h.scope() == principal.scope) {
            let incoming: crate::ExchangeStream = Box::pin(request.into_inner());
            return Ok(Response::new(handler.exchange(principal, incoming).await?));
        }
        let mut request = request;
        self.gate(&mut request).await?;
        Err(Status::unimplemented("DoExchange is not offered"))
    }
}
