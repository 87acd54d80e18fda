//! The checker and rewriter on an in-memory table, without a chain or a server.

use std::sync::Arc;

use alloy::primitives::{Address, B256};
use arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use insitu_ledger::{AgreementId, Did};
use insitu_policy::QueryConstraints;

use super::*;

/// 100 people: north 40, south 40, east 17, west 3.
fn people() -> RecordBatch {
    let ids: Vec<i64> = (0..100).collect();
    let region = |i: i64| match i {
        0..40 => "north",
        40..80 => "south",
        80..97 => "east",
        _ => "west",
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("age", DataType::Int64, false),
        Field::new("income", DataType::Float64, false),
        Field::new("email", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("person-{i}")),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| region(*i)),
            )),
            Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|i| 20 + i % 50),
            )),
            Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|i| 1000.0 * *i as f64),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("p{i}@x.org")),
            )),
        ],
    )
    .expect("batch")
}

struct Scene {
    ctx: SessionContext,
    tables: Vec<TablePolicy>,
}

fn scene(constraints: &str) -> Scene {
    let batch = people();
    let ctx = SessionContext::new();
    let schema = batch.schema();
    let mem = MemTable::try_new(schema.clone(), vec![vec![batch.clone()]]).expect("mem");
    ctx.register_table("people", Arc::new(mem))
        .expect("register");
    let mine = MemTable::try_new(schema.clone(), vec![vec![batch]]).expect("mem");
    ctx.register_table("mine", Arc::new(mine))
        .expect("register");
    let c = QueryConstraints::parse(constraints).expect("constraints");
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    c.validate(&columns).expect("valid");
    let policy = |name: &str, constraints: QueryConstraints| TablePolicy {
        name: name.into(),
        did: Did(B256::repeat_byte(1)),
        agreement: AgreementId(B256::repeat_byte(2)),
        columns: columns.clone(),
        schema: schema.clone(),
        constraints: Arc::new(constraints),
    };
    Scene {
        ctx,
        tables: vec![
            policy("people", c),
            policy("mine", QueryConstraints::default()),
        ],
    }
}

impl Scene {
    async fn run(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let plan = self
            .ctx
            .state()
            .create_logical_plan(sql)
            .await
            .map_err(|e| FlightError::InvalidRequest(e.to_string()))?;
        check_templates(sql, &plan, &self.tables)?;
        let enforced = enforce(
            plan,
            &self.tables,
            &self.ctx.state(),
            Address::repeat_byte(0xab),
            &[9; 32],
        )?;
        let df = self
            .ctx
            .execute_logical_plan(enforced.plan)
            .await
            .map_err(|e| FlightError::InvalidRequest(e.to_string()))?;
        df.collect()
            .await
            .map_err(|e| FlightError::InvalidRequest(e.to_string()))
    }

    async fn refused(&self, sql: &str, rule: &str) {
        match self.run(sql).await {
            Err(FlightError::Refused(m)) => {
                assert!(m.contains(&format!("`{rule}`")), "{sql}: wrong rule: {m}")
            }
            other => panic!("{sql}: expected a refusal by {rule}, got {other:?}"),
        }
    }
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

const AGG: &str = r#"
    blocked_columns = ["name"]
    join_only_columns = ["email"]
    [aggregate]
    functions = ["count", "sum", "avg", "max"]
    dimensions = ["region", "age"]
    entity = "id"
    min_entities = 5
"#;

#[tokio::test]
async fn aggregates_answer_and_small_groups_vanish() {
    let s = scene(AGG);
    let out = s
        .run("SELECT region, count(*) AS n, sum(income) AS total FROM people GROUP BY region ORDER BY region")
        .await
        .expect("aggregate");
    assert_eq!(rows(&out), 3, "west (3 people) is suppressed");
    let b = &out[0];
    let regions: Vec<&str> = b.column(0).as_string::<i32>().iter().flatten().collect();
    assert_eq!(regions, vec!["east", "north", "south"]);
    let n = b.column(1).as_primitive::<Int64Type>();
    assert_eq!((n.value(0), n.value(1), n.value(2)), (17, 40, 40));
    let total = b.column(2).as_primitive::<Float64Type>();
    assert_eq!(
        total.value(1),
        (0..40).map(|i| 1000.0 * i as f64).sum::<f64>()
    );
}

#[tokio::test]
async fn laundering_is_refused() {
    let s = scene(AGG);
    s.refused("SELECT * FROM people", "blocked_columns").await;
    s.refused("SELECT region FROM people", "aggregate_only")
        .await;
    s.refused(
        "SELECT n FROM (SELECT name AS n FROM people) t",
        "blocked_columns",
    )
    .await;
    s.refused(
        "WITH c AS (SELECT name AS who FROM people) SELECT count(*) FROM c GROUP BY who",
        "blocked_columns",
    )
    .await;
    s.refused(
        "SELECT count(*) FROM people WHERE income > 50000",
        "aggregate_only.dimensions",
    )
    .await;
    s.refused(
        "SELECT id, count(*) FROM people GROUP BY id",
        "aggregate_only.dimensions",
    )
    .await;
    s.refused(
        "SELECT region, array_agg(income) FROM people GROUP BY region",
        "aggregate_only.functions",
    )
    .await;
    s.refused(
        "SELECT region, max(id) FROM people GROUP BY region",
        "aggregate_only.functions",
    )
    .await;
    s.refused(
        "SELECT region, sum(CASE WHEN age = 33 THEN income ELSE 0 END) FROM people GROUP BY region",
        "aggregate_only.arguments",
    )
    .await;
    s.refused(
        "SELECT count(*) OVER (PARTITION BY region) FROM people",
        "aggregate_only",
    )
    .await;
    s.refused(
        "SELECT region FROM people UNION SELECT 'x'",
        "aggregate_only",
    )
    .await;
    s.refused("SELECT DISTINCT region FROM people", "aggregate_only")
        .await;
    s.refused("SELECT email FROM people", "join_only_columns")
        .await;
    s.refused(
        "SELECT count(*) FROM people p JOIN (VALUES ('p1@x.org')) v(e) ON p.email = v.e",
        "join_only_columns",
    )
    .await;
    s.refused(
        "SELECT count(*) FROM people a JOIN people b ON a.email = b.email",
        "join_only_columns",
    )
    .await;
    s.refused(
        "SELECT count(*) FROM mine m WHERE m.region IN (SELECT region FROM people)",
        "aggregate_only",
    )
    .await;
}

#[tokio::test]
async fn threshold_tricks_return_nothing() {
    let s = scene(AGG);
    let out = s
        .run("SELECT region, count(*) FROM people GROUP BY region HAVING count(*) = 1")
        .await
        .expect("runs");
    assert_eq!(rows(&out), 0);
    let out = s
        .run(
            "SELECT sum(income) FROM (SELECT income, region FROM people ORDER BY region LIMIT 1) t",
        )
        .await
        .expect("runs");
    assert_eq!(rows(&out), 0, "one entity is below the threshold");
    let out = s
        .run("SELECT age, count(*) FROM people WHERE region = 'west' GROUP BY age")
        .await
        .expect("runs");
    assert_eq!(rows(&out), 0);
    // A join on the join-only column with an unconstrained table is answered, in groups.
    let out = s
        .run("SELECT p.region, count(*) FROM mine m JOIN people p ON m.email = p.email GROUP BY p.region")
        .await
        .expect("join");
    assert_eq!(rows(&out), 3);
}

#[tokio::test]
async fn masks_and_row_filters_apply_at_the_source() {
    let s = scene(
        r#"
        row_filter = "region = 'north' OR email = $consumer"
        [masked_columns]
        name = "hash"
        income = "redact"
        "#,
    );
    let out = s
        .run("SELECT id, name, income FROM people")
        .await
        .expect("rows");
    assert_eq!(rows(&out), 40, "only the north");
    let b = &out[0];
    let names = b.column(1).as_string::<i32>();
    assert_eq!(names.value(0).len(), 32);
    assert!(!names.value(0).contains("person"));
    assert!(b.column(2).is_null(0));
    let n = s
        .run("SELECT count(*) FROM people WHERE region = 'south'")
        .await
        .expect("count");
    assert_eq!(n[0].column(0).as_primitive::<Int64Type>().value(0), 0);
}

#[tokio::test]
async fn templates_admit_only_their_shape() {
    let s = scene(
        r#"templates = ["SELECT region, count(*) FROM people WHERE age > ? GROUP BY region"]"#,
    );
    s.run("select region, count(*) from people where age > 30 group by region")
        .await
        .expect("matches");
    s.refused(
        "SELECT region, count(*) FROM people WHERE age > 30 OR true GROUP BY region",
        "templates",
    )
    .await;
}

#[tokio::test]
async fn private_aggregates_are_noised_and_keep_their_types() {
    let s = scene(
        r#"
        [aggregate]
        dimensions = ["region"]
        entity = "id"
        min_entities = 5
        [privacy]
        epsilon_per_query = 1.0
        budget = 10.0
        bounds = { income = [0.0, 100000.0] }
        "#,
    );
    let out = s
        .run("SELECT region, count(*) AS n, avg(income) AS a FROM people GROUP BY region ORDER BY region")
        .await
        .expect("private");
    assert_eq!(rows(&out), 3);
    let b = &out[0];
    assert_eq!(b.schema().field(1).data_type(), &DataType::Int64);
    let n = b.column(1).as_primitive::<Int64Type>();
    // Laplace with b = 1 / 0.5 (two releases... three with avg): within 60 of the truth.
    assert!((n.value(1) - 40).abs() < 60, "noisy count {}", n.value(1));
    s.refused(
        "SELECT region, max(income) FROM people GROUP BY region",
        "aggregate_only.functions",
    )
    .await;
    s.refused(
        "SELECT region, sum(age) FROM people GROUP BY region",
        "privacy",
    )
    .await;
    let enforced = enforce(
        s.ctx
            .state()
            .create_logical_plan("SELECT count(*) FROM people")
            .await
            .expect("plan"),
        &s.tables,
        &s.ctx.state(),
        Address::ZERO,
        &[0; 32],
    )
    .expect("enforce");
    assert_eq!(enforced.charges.len(), 1);
    assert_eq!(enforced.charges[0].cost, 1_000_000_000);
}
