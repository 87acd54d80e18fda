//! Attacks on a query service's constraints: a consumer with a query-only grant tries
//! to read protected rows or columns. Each technique is one test, and each test sends
//! the attack twice, through the Rust client and through ADBC in a Python process, to a
//! provider on anvil with real agreements. Every attempt must be refused with the rule
//! that fired, or answered safely (suppressed, masked, filtered).
//!
//! The provider sells four views of the same 200 people (`people_batch`):
//! - `people`: aggregate-only (dimensions region and age, entity id, at least 10 people
//!   per group), `name` blocked, `email` join-only;
//! - `roster`: rows, but only some columns, `name` hash-masked, only the north region,
//!   at most 50 rows and 1,500 bytes per answer;
//! - `reports`: one approved query template over an aggregate-only view;
//! - `survey`: aggregate-only with differential privacy (ε 0.5 per query, 2.0 in all).
//!
//! `mine` is the attacker's own unconstrained table with the same identities: what an
//! attacker who already knows the e-mail addresses brings to a join.

mod techniques;

use std::collections::HashSet;

use alloy::primitives::U256;
use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use insitu_flight::query_client::QueryClient;
use insitu_integration_tests::data::{people_batch, write_parquet};
use insitu_integration_tests::{
    CONSUMER, Provider, ProviderOptions, World, account, python, token_with_scope, workspace_root,
};
use insitu_ledger::{AgreementId, Ledger};
use serde_json::Value;

use crate::common::rows_of;
use crate::flight_sql::query_offer;

pub const PEOPLE: &str = r#"
    blocked_columns = ["name"]
    join_only_columns = ["email"]
    [aggregate]
    functions = ["count", "sum", "avg", "max"]
    dimensions = ["region", "age"]
    entity = "id"
    min_entities = 10
"#;

pub const ROSTER: &str = r#"
    allowed_columns = ["id", "region", "age", "name"]
    row_filter = "region = 'north'"
    row_limit = 50
    byte_limit = 1500
    [masked_columns]
    name = "hash"
"#;

pub const REPORTS: &str = r#"
    templates = ["SELECT region, count(*) FROM reports WHERE age > ? GROUP BY region"]
    [aggregate]
    dimensions = ["region", "age"]
    entity = "id"
    min_entities = 10
"#;

pub const SURVEY: &str = r#"
    [aggregate]
    dimensions = ["region"]
    entity = "id"
    min_entities = 10
    [privacy]
    epsilon_per_query = 0.5
    budget = 2.0
    bounds = { income = [0.0, 200000.0] }
"#;

/// A provider selling the four constrained views, and CONSUMER's agreements on them
/// plus on its own `mine`.
pub struct PolicyScene {
    pub world: World,
    pub provider: Provider,
    pub agreements: Vec<AgreementId>,
}

impl PolicyScene {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(ProviderOptions::default()).await
    }

    pub async fn start_with(opts: ProviderOptions) -> anyhow::Result<Self> {
        let world = World::start().await?;
        let provider = Provider::start(&world, opts).await?;
        let file = provider.path("people.parquet");
        write_parquet(&file, &[people_batch()?])?;
        let mut dids = Vec::new();
        for (name, constraints) in [
            ("people", Some(PEOPLE)),
            ("roster", Some(ROSTER)),
            ("reports", Some(REPORTS)),
            ("survey", Some(SURVEY)),
            ("mine", None),
        ] {
            dids.push(
                provider
                    .publish_constrained(&file, name, query_offer(0, None), constraints)
                    .await?,
            );
        }
        world
            .mint(account(CONSUMER).address(), U256::from(1_000_000u64))
            .await?;
        let ledger = world.ledger(CONSUMER).await?;
        let mut agreements = Vec::new();
        for did in &dids {
            agreements.push(ledger.order(*did, 0).await?.agreement_id);
        }
        Ok(PolicyScene {
            world,
            provider,
            agreements,
        })
    }

    /// CONSUMER's token over all five agreements.
    pub fn token(&self) -> String {
        token_with_scope(
            &self.world,
            &account(CONSUMER),
            self.provider.address,
            &insitu_flight::query_scope(&self.agreements),
        )
        .expect("token")
    }
}

/// What a client saw: a refusal's message, or the rows (as display strings).
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Refused(String),
    Rows(Vec<Vec<String>>),
}

/// The attack through the Rust clients: `QueryClient` for statements, arrow-flight's
/// `FlightSqlServiceClient` for prepared statements with bound values.
async fn through_rust(s: &PolicyScene, sql: &str, params: Option<&[Value]>) -> Seen {
    let token = s.token();
    match params {
        None => {
            let mut client = QueryClient::connect(&s.provider.endpoint, &token, None)
                .await
                .expect("connect");
            let batches = async {
                let stream = client.query(sql).await?;
                stream
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|e| insitu_flight::FlightError::InvalidRequest(e.to_string()))
            }
            .await;
            match batches {
                Ok(b) => Seen::Rows(rows_of(&b)),
                Err(e) => Seen::Refused(e.to_string()),
            }
        }
        Some(values) => {
            let channel = tonic::transport::Endpoint::from_shared(s.provider.endpoint.clone())
                .expect("endpoint")
                .connect()
                .await
                .expect("channel");
            let mut client = FlightSqlServiceClient::new(channel);
            client.set_token(token);
            let text = |e: &dyn std::fmt::Display| e.to_string();
            let result: Result<Vec<RecordBatch>, String> = async {
                let mut prepared = client
                    .prepare(sql.to_string(), None)
                    .await
                    .map_err(|e| text(&e))?;
                prepared
                    .set_parameters(param_batch(values))
                    .map_err(|e| text(&e))?;
                let info = prepared.execute().await.map_err(|e| text(&e))?;
                let ticket = info
                    .endpoint
                    .first()
                    .and_then(|e| e.ticket.clone())
                    .ok_or_else(|| "no ticket".to_string())?;
                let stream = client.do_get(ticket).await.map_err(|e| text(&e))?;
                stream.try_collect::<Vec<_>>().await.map_err(|e| text(&e))
            }
            .await;
            match result {
                Ok(b) => Seen::Rows(rows_of(&b)),
                Err(e) => Seen::Refused(e),
            }
        }
    }
}

/// One row of parameters: integers, floats or strings, as the JSON gives them.
fn param_batch(values: &[Value]) -> RecordBatch {
    use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let name = format!("${}", i + 1);
        match v {
            Value::Number(n) if n.is_i64() => {
                fields.push(Field::new(name, DataType::Int64, false));
                columns.push(Arc::new(Int64Array::from(vec![n.as_i64().unwrap_or(0)])));
            }
            Value::Number(n) => {
                fields.push(Field::new(name, DataType::Float64, false));
                columns.push(Arc::new(Float64Array::from(vec![
                    n.as_f64().unwrap_or(0.0),
                ])));
            }
            other => {
                fields.push(Field::new(name, DataType::Utf8, false));
                let text = other
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or(other.to_string());
                columns.push(Arc::new(StringArray::from(vec![text])));
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("params")
}

/// The attack through ADBC in a separate Python process.
async fn through_adbc(s: &PolicyScene, sql: &str, params: Option<&[Value]>) -> Seen {
    let mut cmd = tokio::process::Command::new(python().expect("python venv"));
    cmd.arg(workspace_root().join("integration-tests/python/policy_attack.py"))
        .args([&s.provider.endpoint, &s.token(), sql]);
    if let Some(p) = params {
        cmd.arg(serde_json::to_string(p).expect("json"));
    }
    let out = cmd.output().await.expect("python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json from python");
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Seen::Refused(e.to_string());
    }
    let rows = v["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    Value::Null => "null".into(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect();
    Seen::Rows(rows)
}

/// What an attack must produce.
pub enum Expect {
    /// Refused, naming this rule.
    Refused(&'static str),
    /// Answered; the rows must pass this check.
    Answered(fn(&[Vec<String>])),
}

/// Runs one attack through both clients against a fresh scene and checks both.
pub async fn attack(sql: &str, params: Option<Vec<Value>>, expect: Expect) {
    let s = PolicyScene::start().await.expect("scene");
    let params = params.as_deref();
    let rust = through_rust(&s, sql, params).await;
    let adbc = through_adbc(&s, sql, params).await;
    for (client, seen) in [("rust", &rust), ("adbc", &adbc)] {
        match (&expect, seen) {
            (Expect::Refused(rule), Seen::Refused(msg)) => assert!(
                msg.contains(&format!("rule `{rule}`")),
                "{client}: {sql}: refused, but not by `{rule}`: {msg}"
            ),
            (Expect::Answered(check), Seen::Rows(rows)) => check(rows),
            (Expect::Refused(rule), Seen::Rows(rows)) => {
                panic!("{client}: {sql}: answered {rows:?}, expected a refusal by `{rule}`")
            }
            (Expect::Answered(_), Seen::Refused(msg)) => {
                panic!("{client}: {sql}: refused ({msg}), expected an answer")
            }
        }
    }
    // The audit log names the rule for every refusal at planning (row and byte limits
    // fire on the stream, after the query was audited as answered).
    if let Expect::Refused(rule) = expect
        && rule != "row_limit"
        && rule != "byte_limit"
    {
        let audited: HashSet<String> = s
            .provider
            .audit
            .records()
            .into_iter()
            .filter_map(|r| r.query.and_then(|q| q.refused_by))
            .collect();
        assert!(
            audited.iter().any(|m| m.contains(&format!("`{rule}`"))),
            "the audit log should record the refusal by `{rule}`: {audited:?}"
        );
    }
}
