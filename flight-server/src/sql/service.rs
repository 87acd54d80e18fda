//! `FlightSqlService` for query agreements. Every method starts by authorising the
//! caller's token against the chain (through the shared policy engine) and building a
//! session over exactly the granted assets; nothing is cached across calls except the
//! policy engine's short-lived grants.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::SqlInfoData;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginSavepointRequest, ActionBeginSavepointResult, ActionBeginTransactionRequest,
    ActionBeginTransactionResult, ActionCancelQueryRequest, ActionCancelQueryResult,
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, ActionEndSavepointRequest, ActionEndTransactionRequest,
    Any, CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementSubstraitPlan, CommandStatementUpdate, DoPutPreparedStatementResult,
    ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket,
};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use insitu_catalog::AssetStore;
use insitu_policy::{
    Action as PolicyAction, AuditRecord, Decision, PolicyEngine, Principal, PrivacyBudgets,
    QueryAudit, QueryConstraints,
};
use prost::Message;
use tonic::{Request, Response, Status};

use super::execute::{self, CancelOutcome, Running, plain_schema};
use super::handles::{PreparedHandle, QueryTicket, decode_params, encode_params, new_id};
use super::metadata;
use super::scope::agreements_in_scope;
use super::session::{CATALOG, GatedSession, GrantedAsset, QueryLimits, SCHEMA, SessionFactory};
use crate::auth;
use crate::encode::flight_data as encode;
use crate::error::{FlightError, Result};
use crate::service::{served_asset, unix_now};
use crate::source::StorageOptions;
use crate::ticket::TicketSigner;

/// Bound parameters are values, not data: 1 MiB is plenty.
const MAX_PARAMS_BYTES: usize = 1024 * 1024;
/// Bound parameters kept for clients that reuse the old handle, at most this many.
const MAX_BOUND: usize = 10_000;

/// The decision the router's gate took for a request, so handlers do not decide (and
/// audit) twice.
#[derive(Debug, Clone)]
pub(crate) struct Authorized(pub Vec<GrantedAsset>);

/// The Flight SQL half of the provider's service.
#[derive(Debug, Clone)]
pub struct SqlService {
    pub(crate) inner: Arc<SqlShared>,
}

pub(crate) struct SqlShared {
    pub engine: Arc<PolicyEngine>,
    pub catalog: AssetStore,
    pub tickets: Arc<TicketSigner>,
    pub ticket_ttl: Duration,
    pub storage: Arc<StorageOptions>,
    pub factory: SessionFactory,
    pub running: Arc<Running>,
    pub sql_info: SqlInfoData,
    /// The provider's key for hash masks (bound per asset and agreement before use).
    pub mask_key: [u8; 32],
    pub budgets: PrivacyBudgets,
    pub lineage: Option<super::lineage::LineageSink>,
    /// Parameters bound by `DoPut`, by statement id, with their expiry.
    bound: Mutex<HashMap<String, (String, u64)>>,
}

impl std::fmt::Debug for SqlShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlShared")
            .field("limits", &self.factory.limits)
            .finish_non_exhaustive()
    }
}

type Stream<T> = BoxStream<'static, std::result::Result<T, Status>>;

/// nano-ε as ε.
fn epsilon(nano: u64) -> f64 {
    nano as f64 / 1e9
}

fn status(e: FlightError) -> Status {
    Status::from(e)
}

fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| FlightError::Internal(e.to_string()))?;
    Ok(bytes)
}

fn one_batch(batch: RecordBatch) -> Stream<arrow_flight::FlightData> {
    let schema = batch.schema();
    encode(schema, futures::stream::once(async { Ok(batch) }).boxed())
}

/// How the Flight SQL half runs queries: limits, mask key, and where runs are recorded.
#[derive(Debug)]
pub(crate) struct SqlOptions {
    pub limits: QueryLimits,
    pub mask_key: [u8; 32],
    pub lineage: Option<super::lineage::LineageSink>,
}

impl SqlService {
    pub(crate) fn new(
        engine: Arc<PolicyEngine>,
        catalog: AssetStore,
        tickets: Arc<TicketSigner>,
        ticket_ttl: Duration,
        storage: Arc<StorageOptions>,
        options: SqlOptions,
    ) -> Result<Self> {
        let SqlOptions {
            limits,
            mask_key,
            lineage,
        } = options;
        let sql_info = metadata::sql_info(&limits)?;
        let budgets = PrivacyBudgets::new(catalog.pool().clone());
        let max_concurrent = limits.max_concurrent;
        Ok(SqlService {
            inner: Arc::new(SqlShared {
                engine,
                catalog,
                tickets,
                ticket_ttl,
                storage,
                factory: SessionFactory::new(limits),
                running: Arc::new(Running::new(max_concurrent)),
                sql_info,
                mask_key,
                budgets,
                lineage,
                bound: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub(crate) fn principal<T>(request: &Request<T>) -> Result<Principal> {
        auth::principal(request).map_err(|s| FlightError::Unauthenticated(s.message().to_string()))
    }

    /// The assets the caller's token entitles it to query, each checked by the policy
    /// engine (which fulfils the agreement on first use). Any refusal refuses the call.
    pub(crate) async fn authorize(&self, principal: &Principal) -> Result<Vec<GrantedAsset>> {
        let agreements = agreements_in_scope(&principal.scope)?;
        let decisions = futures::future::join_all(agreements.iter().map(|id| {
            self.inner
                .engine
                .decide_agreement(principal, PolicyAction::Query, *id)
        }))
        .await;
        let mut grants = Vec::with_capacity(decisions.len());
        for decision in decisions {
            match decision {
                Decision::Allow(grant) => grants.push(grant),
                Decision::Deny(reason) => return Err(FlightError::Denied(reason)),
            }
        }
        let catalog = &self.inner.catalog;
        let entries =
            futures::future::join_all(grants.iter().map(|g| served_asset(catalog, g.did))).await;
        let mut assets = Vec::with_capacity(grants.len());
        for (grant, entry) in grants.into_iter().zip(entries) {
            let (asset, location) = entry?;
            let columns: Vec<String> = asset.ddo.schema.iter().map(|c| c.name.clone()).collect();
            let constraints = self.constraints(principal, &grant, &columns).await?;
            assets.push(GrantedAsset {
                did: grant.did,
                agreement: grant.agreement,
                name: asset.ddo.name.clone(),
                version: asset.version,
                location,
                access_end: grant.access_end,
                constraints,
            });
        }
        Ok(assets)
    }

    /// The constraints of the granted service, widened by any extra columns the
    /// provider's rules grant this consumer. Unreadable constraints refuse the call.
    async fn constraints(
        &self,
        principal: &Principal,
        grant: &insitu_policy::Grant,
        columns: &[String],
    ) -> Result<Arc<QueryConstraints>> {
        let stored = self
            .inner
            .catalog
            .constraints(grant.did, grant.service_index)
            .await
            .map_err(|e| {
                FlightError::Unavailable(format!("reading the service's constraints: {e}"))
            })?;
        let Some(json) = stored else {
            return Ok(Arc::new(QueryConstraints::default()));
        };
        let mut constraints = QueryConstraints::parse(&json).map_err(|e| {
            tracing::error!(did = %grant.did, error = %e, "stored constraints are unreadable");
            FlightError::Refused(format!(
                "the constraints of asset {} cannot be read, so nothing is served",
                grant.did
            ))
        })?;
        if let Some(rules) = self.inner.engine.rules() {
            let restricted = constraints.restricted_columns(columns);
            let extra = rules.extra_columns(
                principal.consumer,
                grant.did,
                grant.agreement,
                grant.service_index,
                &restricted,
            );
            constraints.unblock(&extra);
        }
        Ok(Arc::new(constraints))
    }

    /// The lineage run of a query, if lineage is configured.
    fn run(
        &self,
        query_id: &str,
        sql: &str,
        assets: &[GrantedAsset],
        principal: &Principal,
    ) -> Option<(
        insitu_catalog::lineage::RunLifecycle,
        &super::lineage::LineageSink,
    )> {
        let sink = self.inner.lineage.as_ref()?;
        let ledger = self.inner.engine.ledger();
        let run = super::lineage::run_of(
            self.inner.engine.provider(),
            ledger.chain_id(),
            ledger.contracts().agreements,
            query_id,
            sql,
            assets,
            principal.consumer,
        );
        Some((run, sink))
    }

    /// Plans `sql` and checks it against the constraints, returning the plan (with its
    /// parameters, for prepared statements) and the schema the client will receive: the
    /// rewritten plan's (a redacted column becomes nullable, for one). A plan that cannot
    /// be rewritten before its parameters are bound keeps its own schema, which the
    /// rewrite preserves in every other way. A refusal is audited; an allowed plan is
    /// audited when it runs.
    async fn planned(
        &self,
        principal: &Principal,
        assets: &[GrantedAsset],
        session: &GatedSession,
        sql: &str,
        params: Option<&[u8]>,
    ) -> Result<(datafusion::logical_expr::LogicalPlan, SchemaRef)> {
        let planned = execute::plan(session, sql, params, &self.inner.factory.limits)
            .await
            .and_then(|plan| {
                let enforced = super::policy::enforce(
                    plan.clone(),
                    &session.policies,
                    &session.ctx.state(),
                    principal.consumer,
                    &self.inner.mask_key,
                );
                let schema = match enforced {
                    Ok(e) => plain_schema(e.plan.schema().as_arrow()),
                    Err(e @ FlightError::Refused(_)) => return Err(e),
                    Err(_) => plain_schema(plan.schema().as_arrow()),
                };
                Ok((plan, schema))
            });
        if let Err(e @ FlightError::Refused(_)) = &planned {
            let rules = super::policy::rules_in_force(&session.policies);
            self.audit_query(principal, assets, &new_id(), rules, Some(e), &[])
                .await;
        }
        planned
    }

    /// Appends one audit record per asset of a query: what ran, under which rules, and
    /// what refused it or what it spent.
    async fn audit_query(
        &self,
        principal: &Principal,
        assets: &[GrantedAsset],
        query_id: &str,
        rules: Vec<String>,
        refused: Option<&FlightError>,
        spent: &[(insitu_ledger::AgreementId, u64)],
    ) {
        for asset in assets {
            let record = AuditRecord {
                at_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                consumer: principal.consumer,
                action: PolicyAction::Query,
                did: asset.did,
                agreement: asset.agreement,
                allowed: refused.is_none(),
                reason: refused.map_or_else(|| "query answered".to_string(), |e| e.to_string()),
                fulfil_tx: None,
                query: Some(QueryAudit {
                    query_id: query_id.to_string(),
                    constraints: rules.clone(),
                    refused_by: refused.map(|e| e.to_string()),
                    epsilon_nano: spent
                        .iter()
                        .find(|(a, _)| *a == asset.agreement)
                        .map(|(_, n)| *n),
                }),
            };
            if let Err(e) = self.inner.engine.audit(&record).await {
                tracing::error!(error = %e, "could not audit a query");
            }
        }
    }

    /// The caller and its granted assets: from the router's gate if it already decided
    /// for this request, otherwise decided now. Either way, once per call.
    pub(crate) async fn authorized<T>(
        &self,
        request: &Request<T>,
    ) -> Result<(Principal, Vec<GrantedAsset>)> {
        let principal = Self::principal(request)?;
        if let Some(Authorized(assets)) = request.extensions().get::<Authorized>() {
            return Ok((principal, assets.clone()));
        }
        let assets = self.authorize(&principal).await?;
        Ok((principal, assets))
    }

    async fn session<T>(
        &self,
        request: &Request<T>,
    ) -> Result<(Principal, Vec<GrantedAsset>, GatedSession)> {
        let (principal, assets) = self.authorized(request).await?;
        let session = self
            .inner
            .factory
            .session(&assets, &self.inner.storage)
            .await?;
        Ok((principal, assets, session))
    }

    /// A `FlightInfo` whose ticket runs `sql` (with `params`) for `principal`.
    fn query_info(
        &self,
        principal: &Principal,
        assets: &[GrantedAsset],
        (sql, params): (&str, Option<String>),
        schema: &Schema,
        descriptor: FlightDescriptor,
        query_id: String,
    ) -> Result<FlightInfo> {
        let now = unix_now();
        let window_end = assets.iter().map(|a| a.access_end).min().unwrap_or(now);
        let expires_at = (now + self.inner.ticket_ttl.as_secs())
            .min(window_end.max(now + 1))
            .min(principal.expires_at.max(now + 1));
        let sealed = QueryTicket {
            principal: principal.consumer,
            query_id,
            sql: sql.to_string(),
            params,
            expires_at,
        }
        .seal(&self.inner.tickets)?;
        let ticket = TicketStatementQuery {
            statement_handle: sealed.into(),
        };
        Ok(FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| FlightError::Internal(e.to_string()))?
            .with_endpoint(
                FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())),
            )
            .with_descriptor(descriptor)
            .with_ordered(true))
    }

    /// Authorises the caller, then answers a metadata command's `GetFlightInfo`: the
    /// ticket is the command itself, and `DoGet` authorises again.
    async fn metadata_response(
        &self,
        request: Request<FlightDescriptor>,
        command: Any,
        schema: &Schema,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        self.authorized(&request).await.map_err(status)?;
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(command.encode_to_vec())))
            .with_descriptor(request.into_inner());
        Ok(Response::new(info))
    }

    async fn statement_info(
        &self,
        sql: &str,
        params: Option<String>,
        request: Request<FlightDescriptor>,
    ) -> Result<FlightInfo> {
        let (principal, assets, session) = self.session(&request).await?;
        let ipc = params.as_deref().map(decode_params).transpose()?;
        let (_, schema) = self
            .planned(&principal, &assets, &session, sql, ipc.as_deref())
            .await?;
        let query_id = new_id();
        let info = self.query_info(
            &principal,
            &assets,
            (sql, params),
            &schema,
            request.into_inner(),
            query_id.clone(),
        )?;
        if let Some((run, sink)) = self.run(&query_id, sql, &assets, &principal) {
            sink.record(run.start());
        }
        Ok(info)
    }

    /// The schema a statement would return, without running it (`GetSchema`).
    pub(crate) async fn statement_schema(
        &self,
        request: &Request<FlightDescriptor>,
        sql: &str,
        params: Option<String>,
    ) -> Result<SchemaRef> {
        let (principal, assets, session) = self.session(request).await?;
        let ipc = params.as_deref().map(decode_params).transpose()?;
        let (_, schema) = self
            .planned(&principal, &assets, &session, sql, ipc.as_deref())
            .await?;
        Ok(schema)
    }

    /// The SQL and parameters of a prepared statement handle held by the caller.
    pub(crate) fn prepared<T>(
        &self,
        request: &Request<T>,
        handle: &[u8],
    ) -> Result<(String, Option<String>)> {
        let principal = Self::principal(request)?;
        let h = PreparedHandle::open(&self.inner.tickets, handle, principal.consumer)?;
        let params = h.params.or_else(|| {
            self.inner
                .bound
                .lock()
                .ok()
                .and_then(|b| b.get(&h.statement_id).map(|(p, _)| p.clone()))
        });
        Ok((h.sql, params))
    }

    async fn run_ticket(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Stream<arrow_flight::FlightData>> {
        let principal = Self::principal(&request)?;
        let t = QueryTicket::open(
            &self.inner.tickets,
            &ticket.statement_handle,
            principal.consumer,
            unix_now(),
        )?;
        let (_, assets, session) = self.session(&request).await?;
        let agreements: Vec<String> = assets.iter().map(|a| a.agreement.to_string()).collect();
        let ipc = t.params.as_deref().map(decode_params).transpose()?;
        let limits = &self.inner.factory.limits;
        let enforced = async {
            let plan = execute::plan(&session, &t.sql, ipc.as_deref(), limits).await?;
            super::policy::enforce(
                plan,
                &session.policies,
                &session.ctx.state(),
                principal.consumer,
                &self.inner.mask_key,
            )
        }
        .await;
        let enforced = match enforced {
            Ok(e) => e,
            Err(e) => {
                if matches!(e, FlightError::Refused(_)) {
                    self.audit_query(
                        &principal,
                        &assets,
                        &t.query_id,
                        super::policy::rules_in_force(&session.policies),
                        Some(&e),
                        &[],
                    )
                    .await;
                }
                if let Some((run, sink)) = self.run(&t.query_id, &t.sql, &assets, &principal) {
                    sink.record(run.fail(&e.to_string()));
                }
                return Err(e);
            }
        };
        let spent = self.spend(&enforced.charges).await;
        let spent = match spent {
            Ok(s) => s,
            Err(e) => {
                self.audit_query(
                    &principal,
                    &assets,
                    &t.query_id,
                    enforced.rules,
                    Some(&e),
                    &[],
                )
                .await;
                if let Some((run, sink)) = self.run(&t.query_id, &t.sql, &assets, &principal) {
                    sink.record(run.fail(&e.to_string()));
                }
                return Err(e);
            }
        };
        let df = session
            .ctx
            .execute_logical_plan(enforced.plan)
            .await
            .map_err(super::guard::query_error)?;
        let output = execute::OutputLimits {
            rows: enforced.row_limit,
            bytes: enforced.byte_limit,
        };
        let (schema, batches) =
            execute::run(df, limits, &self.inner.running, &t.query_id, output).await?;
        let batches = match self.run(&t.query_id, &t.sql, &assets, &principal) {
            Some((run, sink)) => super::lineage::observed(batches, run, sink.clone()),
            None => batches,
        };
        self.audit_query(
            &principal,
            &assets,
            &t.query_id,
            enforced.rules,
            None,
            &spent,
        )
        .await;
        tracing::info!(consumer = %principal.consumer, query = %t.query_id, ?agreements, "query started");
        Ok(encode(schema, batches))
    }

    /// Spends each private agreement's ε for one query, all or nothing per agreement
    /// (a query over one private table spends from one agreement).
    async fn spend(
        &self,
        charges: &[super::policy::Charge],
    ) -> Result<Vec<(insitu_ledger::AgreementId, u64)>> {
        let mut spent = Vec::with_capacity(charges.len());
        for c in charges {
            let outcome = self
                .inner
                .budgets
                .spend(c.agreement, c.cost, c.budget)
                .await
                .map_err(|e| FlightError::Unavailable(e.to_string()))?;
            match outcome {
                Ok(_) => spent.push((c.agreement, c.cost)),
                Err(state) => {
                    return Err(FlightError::Refused(format!(
                        "rule `{}` of table `{}`: agreement {} has {} of its privacy budget left and a query costs {}; order again for a new budget",
                        insitu_policy::constraints::rule::PRIVACY_BUDGET,
                        c.table,
                        c.agreement,
                        epsilon(state.remaining()),
                        epsilon(c.cost)
                    )));
                }
            }
        }
        Ok(spent)
    }

    /// The privacy budget of each private agreement in the caller's token, as JSON.
    pub(crate) async fn privacy_budgets<T>(&self, request: &Request<T>) -> Result<Vec<u8>> {
        let (_, assets) = self.authorized(request).await?;
        let mut out = Vec::new();
        for a in &assets {
            let Some(p) = &a.constraints.privacy else {
                continue;
            };
            let state = self
                .inner
                .budgets
                .state(a.agreement, p.budget_nano())
                .await
                .map_err(|e| FlightError::Unavailable(e.to_string()))?;
            out.push(serde_json::json!({
                "agreement": a.agreement.to_string(),
                "did": a.did.to_string(),
                "table": a.name,
                "epsilon_budget": epsilon(state.budget),
                "epsilon_spent": epsilon(state.spent),
                "epsilon_remaining": epsilon(state.remaining()),
                "epsilon_per_query": p.epsilon_per_query,
                "mechanism": p.mechanism,
            }));
        }
        serde_json::to_vec(&out).map_err(|e| FlightError::Internal(e.to_string()))
    }

    /// Cancels the query behind a ticket this caller holds.
    pub(crate) fn cancel_ticket<T>(
        &self,
        request: &Request<T>,
        ticket: &[u8],
    ) -> Result<CancelOutcome> {
        let principal = Self::principal(request)?;
        let any = Any::decode(ticket)
            .map_err(|_| FlightError::InvalidTicket("not a query ticket".into()))?;
        let inner: TicketStatementQuery = any
            .unpack()
            .ok()
            .flatten()
            .ok_or_else(|| FlightError::InvalidTicket("not a query ticket".into()))?;
        let now = unix_now();
        let t = QueryTicket::open(
            &self.inner.tickets,
            &inner.statement_handle,
            principal.consumer,
            now,
        )?;
        Ok(self.inner.running.cancel(&t.query_id, t.expires_at, now))
    }

    /// Query counters since start.
    pub fn stats(&self) -> execute::QueryStats {
        self.inner.running.stats()
    }

    async fn tables_batch(
        &self,
        query: CommandGetTables,
        session: &GatedSession,
    ) -> Result<RecordBatch> {
        let mut builder = query.into_builder();
        for t in &session.tables {
            builder
                .append(CATALOG, SCHEMA, &t.name, "TABLE", &plain_schema(&t.schema))
                .map_err(|e| FlightError::Internal(e.to_string()))?;
        }
        builder
            .build()
            .map_err(|e| FlightError::Internal(e.to_string()))
    }
}

fn read_only() -> Status {
    Status::permission_denied(
        "this is a read-only query service: updates and ingestion are not allowed",
    )
}

fn no_transactions() -> Status {
    Status::unimplemented("transactions are not supported: this is a read-only query service")
}

#[tonic::async_trait]
impl FlightSqlService for SqlService {
    type FlightService = SqlService;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let info = self
            .statement_info(&query.query, None, request)
            .await
            .map_err(status)?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        self.authorized(&request).await.map_err(status)?;
        Err(Status::unimplemented(
            "Substrait plans are not supported; send SQL",
        ))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let (sql, params) = self
            .prepared(&request, &cmd.prepared_statement_handle)
            .map_err(status)?;
        let info = self
            .statement_info(&sql, params, request)
            .await
            .map_err(status)?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_response(request, query.as_any(), &schema)
            .await
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_response(request, query.as_any(), &schema)
            .await
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_response(request, query.as_any(), &schema)
            .await
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_response(request, query.as_any(), &schema)
            .await
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.inner.sql_info).schema();
        self.metadata_response(request, query.as_any(), &schema)
            .await
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        self.metadata_response(request, query.as_any(), &metadata::primary_keys_schema())
            .await
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        self.metadata_response(request, query.as_any(), &metadata::foreign_keys_schema())
            .await
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        self.metadata_response(request, query.as_any(), &metadata::foreign_keys_schema())
            .await
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        self.metadata_response(request, query.as_any(), &metadata::foreign_keys_schema())
            .await
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let data = metadata::xdbc_type_info().map_err(status)?;
        let schema = query.into_builder(data).schema();
        self.metadata_response(request, query.as_any(), &schema)
            .await
    }

    async fn get_flight_info_fallback(
        &self,
        cmd: arrow_flight::sql::Command,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        self.authorized(&request).await.map_err(status)?;
        Err(Status::invalid_argument(format!(
            "unsupported command: {}",
            cmd.type_url()
        )))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(Response::new(
            self.run_ticket(ticket, request).await.map_err(status)?,
        ))
    }

    async fn do_get_prepared_statement(
        &self,
        _query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorized(&request).await.map_err(status)?;
        Err(Status::invalid_argument(
            "call GetFlightInfo with the prepared statement and DoGet its ticket",
        ))
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorized(&request).await.map_err(status)?;
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        let batch = builder
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(one_batch(batch)))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorized(&request).await.map_err(status)?;
        let mut builder = query.into_builder();
        builder.append(CATALOG, SCHEMA);
        let batch = builder
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(one_batch(batch)))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let (_, _, session) = self.session(&request).await.map_err(status)?;
        let batch = self.tables_batch(query, &session).await.map_err(status)?;
        Ok(Response::new(one_batch(batch)))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorized(&request).await.map_err(status)?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        let batch = builder
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(one_batch(batch)))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorized(&request).await.map_err(status)?;
        let batch = query
            .into_builder(&self.inner.sql_info)
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(one_batch(batch)))
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorized(&request).await.map_err(status)?;
        Ok(Response::new(one_batch(metadata::empty(
            metadata::primary_keys_schema(),
        ))))
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorized(&request).await.map_err(status)?;
        Ok(Response::new(one_batch(metadata::empty(
            metadata::foreign_keys_schema(),
        ))))
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorized(&request).await.map_err(status)?;
        Ok(Response::new(one_batch(metadata::empty(
            metadata::foreign_keys_schema(),
        ))))
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorized(&request).await.map_err(status)?;
        Ok(Response::new(one_batch(metadata::empty(
            metadata::foreign_keys_schema(),
        ))))
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorized(&request).await.map_err(status)?;
        let data = metadata::xdbc_type_info().map_err(status)?;
        let batch = query
            .into_builder(data)
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(one_batch(batch)))
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorized(&request).await.map_err(status)?;
        Err(Status::invalid_argument(format!(
            "unsupported ticket: {}",
            message.type_url
        )))
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<i64, Status> {
        self.authorized(&request).await.map_err(status)?;
        Err(read_only())
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<i64, Status> {
        self.authorized(&request).await.map_err(status)?;
        Err(read_only())
    }

    async fn do_put_substrait_plan(
        &self,
        _ticket: CommandStatementSubstraitPlan,
        request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<i64, Status> {
        self.authorized(&request).await.map_err(status)?;
        Err(read_only())
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<i64, Status> {
        self.authorized(&request).await.map_err(status)?;
        Err(read_only())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<DoPutPreparedStatementResult, Status> {
        let (principal, _) = self.authorized(&request).await.map_err(status)?;
        let handle = PreparedHandle::open(
            &self.inner.tickets,
            &query.prepared_statement_handle,
            principal.consumer,
        )
        .map_err(status)?;
        // The peekable stream still holds the first message (the schema), which the
        // router's dispatch looked at.
        let flight = request
            .into_inner()
            .map_err(arrow_flight::error::FlightError::from);
        let mut batches = FlightRecordBatchStream::new_from_flight_data(flight);
        let mut writer: Option<StreamWriter<Vec<u8>>> = None;
        while let Some(batch) = batches.next().await {
            let batch =
                batch.map_err(|e| Status::invalid_argument(format!("bad parameters: {e}")))?;
            let w = match &mut writer {
                Some(w) => w,
                None => writer.insert(
                    StreamWriter::try_new(Vec::new(), &batch.schema())
                        .map_err(|e| Status::invalid_argument(e.to_string()))?,
                ),
            };
            w.write(&batch)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            if w.get_ref().len() > MAX_PARAMS_BYTES {
                return Err(Status::invalid_argument(
                    "bound parameters are larger than 1 MiB",
                ));
            }
        }
        let Some(writer) = writer else {
            return Err(Status::invalid_argument("no parameters were sent"));
        };
        let buffer = writer
            .into_inner()
            .map_err(|e| Status::internal(e.to_string()))?;
        let params = encode_params(&buffer);
        let expires = unix_now() + 3600;
        if let Ok(mut bound) = self.inner.bound.lock() {
            let now = unix_now();
            bound.retain(|_, (_, exp)| *exp > now);
            if bound.len() < MAX_BOUND {
                bound.insert(handle.statement_id.clone(), (params.clone(), expires));
            }
        }
        let rebound = PreparedHandle {
            params: Some(params),
            ..handle
        }
        .seal(&self.inner.tickets)
        .map_err(status)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(rebound.into()),
        })
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> std::result::Result<ActionCreatePreparedStatementResult, Status> {
        let (principal, assets, session) = self.session(&request).await.map_err(status)?;
        let (plan, dataset) = self
            .planned(&principal, &assets, &session, &query.query, None)
            .await
            .map_err(status)?;
        let parameters = execute::parameter_schema(&plan).map_err(status)?;
        let handle = PreparedHandle {
            principal: principal.consumer,
            statement_id: new_id(),
            sql: query.query,
            params: None,
        }
        .seal(&self.inner.tickets)
        .map_err(status)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            dataset_schema: ipc_schema(&dataset).map_err(status)?,
            parameter_schema: ipc_schema(&parameters).map_err(status)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> std::result::Result<(), Status> {
        let (principal, _) = self.authorized(&request).await.map_err(status)?;
        let handle = PreparedHandle::open(
            &self.inner.tickets,
            &query.prepared_statement_handle,
            principal.consumer,
        )
        .map_err(status)?;
        if let Ok(mut bound) = self.inner.bound.lock() {
            bound.remove(&handle.statement_id);
        }
        Ok(())
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        request: Request<Action>,
    ) -> std::result::Result<ActionBeginTransactionResult, Status> {
        self.authorized(&request).await.map_err(status)?;
        Err(no_transactions())
    }

    async fn do_action_end_transaction(
        &self,
        _query: ActionEndTransactionRequest,
        request: Request<Action>,
    ) -> std::result::Result<(), Status> {
        self.authorized(&request).await.map_err(status)?;
        Err(no_transactions())
    }

    async fn do_action_begin_savepoint(
        &self,
        _query: ActionBeginSavepointRequest,
        request: Request<Action>,
    ) -> std::result::Result<ActionBeginSavepointResult, Status> {
        self.authorized(&request).await.map_err(status)?;
        Err(no_transactions())
    }

    async fn do_action_end_savepoint(
        &self,
        _query: ActionEndSavepointRequest,
        request: Request<Action>,
    ) -> std::result::Result<(), Status> {
        self.authorized(&request).await.map_err(status)?;
        Err(no_transactions())
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> std::result::Result<ActionCancelQueryResult, Status> {
        self.authorized(&request).await.map_err(status)?;
        let info = FlightInfo::decode(query.info.as_ref())
            .map_err(|e| Status::invalid_argument(format!("bad FlightInfo: {e}")))?;
        let ticket = info
            .endpoint
            .first()
            .and_then(|e| e.ticket.as_ref())
            .ok_or_else(|| Status::invalid_argument("the FlightInfo has no ticket"))?;
        // Either way the query will not (continue to) run.
        let (CancelOutcome::Cancelled | CancelOutcome::NotRunning) = self
            .cancel_ticket(&request, &ticket.ticket)
            .map_err(status)?;
        // `ActionCancelQueryResult.CancelResult.CANCEL_RESULT_CANCELLED` (not exported
        // by arrow-flight).
        Ok(ActionCancelQueryResult { result: 1 })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        self.authorized(&request).await.map_err(status)?;
        Err(Status::invalid_argument(format!(
            "unknown action '{}'",
            request
                .get_ref()
                .r#type
                .chars()
                .take(64)
                .collect::<String>()
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
