//! Query policy end to end, beyond the attack suite: legitimate analytics under an
//! aggregate-only policy, the privacy budget across a provider restart, and provider
//! rules in Cedar.

use std::sync::Arc;

use arrow::array::RecordBatch;
use futures::TryStreamExt;
use insitu_flight::query_client::QueryClient;
use insitu_integration_tests::data::{people_batch, write_parquet};
use insitu_integration_tests::{
    CONSUMER, OTHER_CONSUMER, Provider, ProviderOptions, World, account, token_with_scope,
};
use insitu_ledger::{AgreementId, Did, Ledger};

use super::query_offer;
use crate::common::rows_of;

pub async fn query(
    provider: &Provider,
    world: &World,
    who: u32,
    agreements: &[AgreementId],
    sql: &str,
) -> Result<Vec<Vec<String>>, String> {
    let token = token_with_scope(
        world,
        &account(who),
        provider.address,
        &insitu_flight::query_scope(agreements),
    )
    .expect("token");
    let mut client = QueryClient::connect(&provider.endpoint, &token, None)
        .await
        .map_err(|e| e.to_string())?;
    let stream = client.query(sql).await.map_err(|e| e.to_string())?;
    let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(|e| e.to_string())?;
    Ok(rows_of(&batches))
}

pub async fn order(world: &World, who: u32, did: Did) -> AgreementId {
    world
        .ledger(who)
        .await
        .expect("ledger")
        .order(did, 0)
        .await
        .expect("order")
        .agreement_id
}

/// Numbers within a relative 1e-9 (sums may add in another order), text exactly.
fn same(a: &[String], b: &[String]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| match (x.parse::<f64>(), y.parse::<f64>()) {
                (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
                _ => x == y,
            })
}

const LINEITEM_POLICY: &str = r#"
    blocked_columns = ["l_comment"]
    [aggregate]
    functions = ["count", "sum", "avg"]
    dimensions = ["l_returnflag", "l_linestatus", "l_shipdate", "l_shipmode"]
    entity = "l_orderkey"
    min_entities = 5
"#;

/// TPC-H-style aggregates on an aggregate-only lineitem return what the same SQL
/// returns on an unconstrained copy, except the groups with fewer than 5 orders, which
/// are exactly the ones missing.
#[tokio::test]
async fn tpch_aggregates_match_except_suppressed_groups() {
    use tpchgen::generators::LineItemGenerator;
    use tpchgen_arrow::LineItemArrow;
    let world = World::start().await.expect("world");
    let provider = Provider::start(&world, ProviderOptions::default())
        .await
        .expect("provider");
    let batches: Vec<RecordBatch> =
        LineItemArrow::new(LineItemGenerator::new(0.01, 1, 1)).collect();
    let file = provider.path("lineitem.parquet");
    write_parquet(&file, &batches).expect("parquet");
    let guarded = provider
        .publish_constrained(
            &file,
            "lineitem",
            query_offer(0, None),
            Some(LINEITEM_POLICY),
        )
        .await
        .expect("publish");
    let plain = provider
        .publish(&file, "lineitem_plain", query_offer(0, None))
        .await
        .expect("publish");
    let agreements = [
        order(&world, CONSUMER, guarded).await,
        order(&world, CONSUMER, plain).await,
    ];
    let q1 = "SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty,
            sum(l_extendedprice) AS sum_base_price,
            sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
            sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
            avg(l_quantity) AS avg_qty, avg(l_extendedprice) AS avg_price,
            avg(l_discount) AS avg_disc, count(*) AS count_order
        FROM {t} WHERE l_shipdate <= date '1998-12-01' - interval '90' day
        GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus";
    let by_mode = "SELECT l_shipmode, extract(year FROM l_shipdate) AS y,
            sum(l_extendedprice * (1 - l_discount)) AS revenue, count(*) AS n
        FROM {t} WHERE l_shipdate >= date '1995-01-01'
        GROUP BY l_shipmode, extract(year FROM l_shipdate) ORDER BY l_shipmode, y";
    let daily = "SELECT l_shipdate, count(*) AS n, sum(l_quantity) AS q
        FROM {t} WHERE l_shipmode = 'AIR' GROUP BY l_shipdate ORDER BY l_shipdate";
    let mut suppressed_total = 0;
    for sql in [q1, by_mode, daily] {
        let got = query(
            &provider,
            &world,
            CONSUMER,
            &agreements,
            &sql.replace("{t}", "lineitem"),
        )
        .await
        .expect("guarded query");
        let all = query(
            &provider,
            &world,
            CONSUMER,
            &agreements,
            &sql.replace("{t}", "lineitem_plain"),
        )
        .await
        .expect("plain query");
        // Which groups have fewer than 5 distinct orders, from the unconstrained copy.
        let group_width = match sql {
            s if s == q1 || s == by_mode => 2,
            _ => 1,
        };
        let keys: Vec<&str> = match group_width {
            2 if sql == q1 => vec!["l_returnflag", "l_linestatus"],
            2 => vec!["l_shipmode", "extract(year FROM l_shipdate)"],
            _ => vec!["l_shipdate"],
        };
        let where_ = sql
            .split("WHERE")
            .nth(1)
            .and_then(|w| w.split("GROUP BY").next())
            .expect("where");
        let small_sql = format!(
            "SELECT {k} FROM lineitem_plain WHERE {where_} GROUP BY {k} HAVING count(DISTINCT l_orderkey) < 5",
            k = keys.join(", ")
        );
        let small = query(&provider, &world, CONSUMER, &agreements, &small_sql)
            .await
            .expect("small groups");
        let mut expected = Vec::new();
        for row in &all {
            if small.iter().any(|s| s[..] == row[..group_width]) {
                suppressed_total += 1;
            } else {
                expected.push(row.clone());
            }
        }
        assert_eq!(got.len(), expected.len(), "{sql}");
        for (g, e) in got.iter().zip(&expected) {
            assert!(same(g, e), "{sql}: {g:?} != {e:?}");
        }
    }
    assert!(
        suppressed_total > 0,
        "the daily query has small groups to suppress"
    );
}

const PRIVATE: &str = r#"
    [aggregate]
    dimensions = ["region"]
    entity = "id"
    min_entities = 10
    [privacy]
    epsilon_per_query = 0.1
    budget = 0.3
    bounds = { income = [0.0, 200000.0] }
"#;

/// 0.1 + 0.1 + 0.1 is 0.30000000000000004 in floating point: a float budget would refuse
/// the third query. Spent in nano-ε, exactly three run, the fourth is refused, and a
/// restarted provider still refuses it.
#[tokio::test]
async fn privacy_budget_is_spent_exactly_and_survives_a_restart() {
    let world = World::start().await.expect("world");
    let dir = tempfile::tempdir().expect("dir");
    let opts = ProviderOptions {
        catalog_url: Some(format!(
            "sqlite://{}",
            dir.path().join("catalog.db").display()
        )),
        ..ProviderOptions::default()
    };
    let provider = Provider::start(&world, opts.clone())
        .await
        .expect("provider");
    // Outside the provider's scratch directory, which goes with it.
    let file = dir.path().join("people.parquet");
    write_parquet(&file, &[people_batch().expect("batch")]).expect("parquet");
    let did = provider
        .publish_constrained(&file, "survey", query_offer(0, None), Some(PRIVATE))
        .await
        .expect("publish");
    let agreement = order(&world, CONSUMER, did).await;
    let sql = "SELECT region, avg(income) AS income FROM survey GROUP BY region";
    for _ in 0..3 {
        let rows = query(&provider, &world, CONSUMER, &[agreement], sql)
            .await
            .expect("within budget");
        assert_eq!(rows.len(), 3);
    }
    let refused = query(&provider, &world, CONSUMER, &[agreement], sql)
        .await
        .expect_err("over budget");
    assert!(refused.contains("rule `privacy.budget`"), "{refused}");
    let spent: Vec<u64> = provider
        .audit
        .records()
        .into_iter()
        .filter_map(|r| r.query.and_then(|q| q.epsilon_nano))
        .collect();
    assert_eq!(
        spent,
        vec![100_000_000; 3],
        "the audit log records each spend"
    );
    drop(provider);

    let restarted = Provider::start(&world, opts).await.expect("restart");
    let refused = query(&restarted, &world, CONSUMER, &[agreement], sql)
        .await
        .expect_err("still over budget");
    assert!(refused.contains("rule `privacy.budget`"), "{refused}");
    let token = token_with_scope(
        &world,
        &account(CONSUMER),
        restarted.address,
        &insitu_flight::query_scope(&[agreement]),
    )
    .expect("token");
    let mut client = QueryClient::connect(&restarted.endpoint, &token, None)
        .await
        .expect("connect");
    let budgets = client.privacy_budgets().await.expect("budget");
    assert_eq!(budgets[0]["epsilon_remaining"], 0.0);
    assert_eq!(budgets[0]["epsilon_spent"], 0.3);
}

/// Cedar rules after the chain's grant: a deny-listed consumer is refused although it
/// ordered, a partner group sees a column others cannot, and a rate limit holds.
#[tokio::test]
async fn provider_rules_deny_widen_and_rate_limit() {
    const STRANGER: u32 = 3;
    let world = World::start().await.expect("world");
    let partner = format!("{:#x}", account(CONSUMER).address());
    let denied = format!("{:#x}", account(OTHER_CONSUMER).address());
    let policies = format!(
        r#"
        @id("serve-consumers")
        permit(principal, action in [Insitu::Action::"query", Insitu::Action::"download"], resource);
        @id("deny-list")
        forbid(principal == Insitu::Consumer::"{denied}", action, resource);
        @id("rate-limit")
        forbid(principal, action, resource) when {{ context.requests_last_minute > 6 }};
        @id("partners-see-income")
        permit(principal in Insitu::Group::"partners", action == Insitu::Action::"read_column", resource)
        when {{ resource.name == "income" }};
        "#
    );
    let entities = format!(
        r#"[{{"uid": {{"type": "Insitu::Consumer", "id": "{partner}"}}, "attrs": {{}},
             "parents": [{{"type": "Insitu::Group", "id": "partners"}}]}},
            {{"uid": {{"type": "Insitu::Group", "id": "partners"}}, "attrs": {{}}, "parents": []}}]"#
    );
    let rules = insitu_policy::ProviderRules::from_text(&policies, Some(&entities)).expect("rules");
    let provider = Provider::start(
        &world,
        ProviderOptions {
            rules: Some(Arc::new(rules)),
            ..ProviderOptions::default()
        },
    )
    .await
    .expect("provider");
    let file = provider.path("people.parquet");
    write_parquet(&file, &[people_batch().expect("batch")]).expect("parquet");
    let did = provider
        .publish_constrained(
            &file,
            "roster",
            query_offer(0, None),
            Some(r#"allowed_columns = ["id", "region"]"#),
        )
        .await
        .expect("publish");
    let mut agreements = Vec::new();
    for who in [CONSUMER, OTHER_CONSUMER, STRANGER] {
        agreements.push(order(&world, who, did).await);
    }
    let sql = "SELECT id, income FROM roster ORDER BY id LIMIT 2";
    let rows = query(&provider, &world, CONSUMER, &agreements[..1], sql)
        .await
        .expect("a partner sees income");
    assert_eq!(rows, vec![vec!["0", "0.0"], vec!["1", "1000.0"]]);
    let e = query(&provider, &world, STRANGER, &agreements[2..], sql)
        .await
        .expect_err("others do not");
    assert!(e.contains("rule `allowed_columns`"), "{e}");
    let e = query(
        &provider,
        &world,
        OTHER_CONSUMER,
        &agreements[1..2],
        "SELECT id FROM roster LIMIT 1",
    )
    .await
    .expect_err("deny-listed");
    assert!(e.contains("rule `deny-list`"), "{e}");
    // Each query is two decisions (plan, fetch); the stranger has made one so far.
    let mut limited = None;
    for _ in 0..5 {
        if let Err(e) = query(
            &provider,
            &world,
            STRANGER,
            &agreements[2..],
            "SELECT id FROM roster LIMIT 1",
        )
        .await
        {
            limited = Some(e);
            break;
        }
    }
    let e = limited.expect("the rate limit fires");
    assert!(e.contains("rule `rate-limit`"), "{e}");
}
