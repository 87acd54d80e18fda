//! A consumer without a query agreement gets `Unauthenticated` or `PermissionDenied` on
//! every RPC, metadata listings included: with no token, with a token that carries no
//! query scope, with a download agreement, and with another consumer's agreement.

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandStatementUpdate, ProstMessageExt,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, Criteria, FlightClient, FlightDescriptor, Ticket,
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use insitu_integration_tests::CONSUMER;
use prost::Message;
use tonic::{Code, Status};

use super::{QueryScene, statement};
use crate::common::{raw_client, status};

fn cmd(any: arrow_flight::sql::Any) -> FlightDescriptor {
    FlightDescriptor::new_cmd(any.encode_to_vec())
}

fn action(kind: &str, body: Vec<u8>) -> Action {
    Action::new(kind, Bytes::from(body))
}

/// What a legitimate consumer obtained, for others to try to reuse.
struct Loot {
    ticket: Ticket,
    metadata_ticket: Ticket,
    handle: Bytes,
    info: arrow_flight::FlightInfo,
}

async fn loot(s: &QueryScene) -> Loot {
    let mut client = s.client(&s.consumer_token()).await;
    let info = client
        .get_flight_info(statement("SELECT count(*) FROM sales"))
        .await
        .expect("the owner plans");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let tables = client
        .get_flight_info(cmd(CommandGetTables::default().as_any()))
        .await
        .expect("the owner lists");
    let metadata_ticket = tables.endpoint[0].ticket.clone().expect("ticket");
    let body = ActionCreatePreparedStatementRequest {
        query: "SELECT * FROM sales WHERE id = ?".into(),
        transaction_id: None,
    }
    .as_any()
    .encode_to_vec();
    let mut results = client
        .do_action(action("CreatePreparedStatement", body))
        .await
        .expect("the owner prepares");
    let result = results.next().await.expect("one result").expect("ok");
    let any = arrow_flight::sql::Any::decode(result).expect("any");
    let prepared: ActionCreatePreparedStatementResult =
        any.unpack().expect("unpack").expect("result");
    Loot {
        ticket,
        metadata_ticket,
        handle: prepared.prepared_statement_handle,
        info,
    }
}

type Outcome = std::result::Result<(), Status>;

fn outcome<T>(r: Result<T, FlightError>) -> Outcome {
    r.map(|_| ()).map_err(status)
}

async fn drained<T>(
    r: Result<futures::stream::BoxStream<'static, Result<T, FlightError>>, FlightError>,
) -> Outcome {
    let stream = r.map_err(status)?;
    stream
        .try_collect::<Vec<T>>()
        .await
        .map(|_| ())
        .map_err(status)
}

/// Every RPC, as `client` (the names say which).
async fn every_rpc(client: &mut FlightClient, loot: &Loot) -> Vec<(&'static str, Outcome)> {
    let mut out = Vec::new();
    out.push((
        "GetFlightInfo(statement)",
        outcome(client.get_flight_info(statement("SELECT 1")).await),
    ));
    let metadata: Vec<(&'static str, arrow_flight::sql::Any)> = vec![
        ("GetCatalogs", CommandGetCatalogs {}.as_any()),
        ("GetDbSchemas", CommandGetDbSchemas::default().as_any()),
        ("GetTables", CommandGetTables::default().as_any()),
        ("GetTableTypes", CommandGetTableTypes {}.as_any()),
        ("GetSqlInfo", CommandGetSqlInfo::default().as_any()),
        (
            "GetXdbcTypeInfo",
            CommandGetXdbcTypeInfo::default().as_any(),
        ),
        ("GetPrimaryKeys", CommandGetPrimaryKeys::default().as_any()),
        (
            "GetExportedKeys",
            CommandGetExportedKeys::default().as_any(),
        ),
        (
            "GetImportedKeys",
            CommandGetImportedKeys::default().as_any(),
        ),
        (
            "GetCrossReference",
            CommandGetCrossReference::default().as_any(),
        ),
        (
            "GetFlightInfo(prepared)",
            CommandPreparedStatementQuery {
                prepared_statement_handle: loot.handle.clone(),
            }
            .as_any(),
        ),
    ];
    for (name, any) in metadata {
        out.push((name, outcome(client.get_flight_info(cmd(any)).await)));
    }
    out.push((
        "PollFlightInfo",
        outcome(client.poll_flight_info(statement("SELECT 1")).await),
    ));
    out.push((
        "GetSchema",
        outcome(client.get_schema(statement("SELECT 1")).await),
    ));
    let get = client.do_get(loot.ticket.clone()).await;
    out.push((
        "DoGet(query ticket)",
        match get {
            Ok(s) => s.try_collect::<Vec<_>>().await.map(|_| ()).map_err(status),
            Err(e) => Err(status(e)),
        },
    ));
    let get = client.do_get(loot.metadata_ticket.clone()).await;
    out.push((
        "DoGet(GetTables ticket)",
        match get {
            Ok(s) => s.try_collect::<Vec<_>>().await.map(|_| ()).map_err(status),
            Err(e) => Err(status(e)),
        },
    ));
    for (name, descriptor) in [
        (
            "DoPut(bind parameters)",
            cmd(CommandPreparedStatementQuery {
                prepared_statement_handle: loot.handle.clone(),
            }
            .as_any()),
        ),
        (
            "DoPut(update)",
            cmd(CommandStatementUpdate {
                query: "DELETE FROM sales".into(),
                transaction_id: None,
            }
            .as_any()),
        ),
    ] {
        let batch = arrow::array::RecordBatch::try_from_iter([(
            "$1",
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![1])) as arrow::array::ArrayRef,
        )])
        .expect("batch");
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(descriptor))
            .build(futures::stream::iter([Ok(batch)]));
        out.push((
            name,
            drained(client.do_put(data).await.map(|s| s.boxed())).await,
        ));
    }
    let actions = vec![
        (
            "CreatePreparedStatement",
            action(
                "CreatePreparedStatement",
                ActionCreatePreparedStatementRequest {
                    query: "SELECT 1".into(),
                    transaction_id: None,
                }
                .as_any()
                .encode_to_vec(),
            ),
        ),
        (
            "ClosePreparedStatement",
            action(
                "ClosePreparedStatement",
                ActionClosePreparedStatementRequest {
                    prepared_statement_handle: loot.handle.clone(),
                }
                .as_any()
                .encode_to_vec(),
            ),
        ),
        (
            "CancelFlightInfo",
            action(
                "CancelFlightInfo",
                CancelFlightInfoRequest::new(loot.info.clone()).encode_to_vec(),
            ),
        ),
        ("SetSessionOptions", action("SetSessionOptions", Vec::new())),
        ("GetSessionOptions", action("GetSessionOptions", Vec::new())),
        ("CloseSession", action("CloseSession", Vec::new())),
        ("BeginTransaction", action("BeginTransaction", Vec::new())),
        ("an unknown action", action("Shutdown", Vec::new())),
    ];
    for (name, a) in actions {
        out.push((name, drained(client.do_action(a).await).await));
    }
    out.push(("ListActions", drained(client.list_actions().await).await));
    out.push((
        "ListFlights",
        drained(client.list_flights(Criteria::default().expression).await).await,
    ));
    let exchange = client
        .do_exchange(futures::stream::iter(Vec::<
            Result<arrow_flight::FlightData, FlightError>,
        >::new()))
        .await;
    out.push((
        "DoExchange",
        match exchange {
            Ok(s) => s.try_collect::<Vec<_>>().await.map(|_| ()).map_err(status),
            Err(e) => Err(status(e)),
        },
    ));
    out
}

fn assert_all_refused(who: &str, results: Vec<(&'static str, Outcome)>) {
    assert!(results.len() >= 29, "{} RPCs tried", results.len());
    for (rpc, result) in results {
        match result {
            Ok(()) => panic!("{who}: {rpc} succeeded"),
            Err(s) => assert!(
                matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied),
                "{who}: {rpc} answered {:?}: {}",
                s.code(),
                s.message()
            ),
        }
    }
}

#[tokio::test]
async fn every_rpc_is_refused_without_a_query_agreement() {
    let s = QueryScene::start().await.expect("scene");
    let loot = loot(&s).await;

    let mut anonymous = raw_client(&s.provider.endpoint, None)
        .await
        .expect("client");
    assert_all_refused("no token", every_rpc(&mut anonymous, &loot).await);

    let access = insitu_integration_tests::token_for(
        &s.world,
        &insitu_integration_tests::account(CONSUMER),
        s.provider.address,
    )
    .expect("token");
    let mut client = s.client(&access).await;
    assert_all_refused(
        "a token without a query scope",
        every_rpc(&mut client, &loot).await,
    );

    let mut client = s.client(&s.token(CONSUMER, &[s.download_agreement])).await;
    assert_all_refused("a download agreement", every_rpc(&mut client, &loot).await);

    let mut client = s.client(&s.token(CONSUMER, &[s.others_agreement])).await;
    assert_all_refused(
        "another consumer's agreement",
        every_rpc(&mut client, &loot).await,
    );

    // The legitimate consumer still works afterwards.
    let mut client = s.client(&s.consumer_token()).await;
    let batches = super::run_sql(&mut client, "SELECT count(*) FROM sales")
        .await
        .expect("the owner queries");
    assert_eq!(batches[0].num_rows(), 1);
}
