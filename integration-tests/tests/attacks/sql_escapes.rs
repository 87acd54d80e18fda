//! SQL that tries to leave the gated session: write files, read files, change settings,
//! read tables outside the agreement, or overwhelm the parser. Each is refused with a
//! message that says why, and no message names where the provider keeps its data.

use tonic::Code;

use crate::flight_sql::{QueryScene, run_sql};

#[tokio::test]
async fn sql_escapes_are_refused_with_a_clear_error() {
    let s = QueryScene::start().await.expect("scene");
    let mut client = s.client(&s.consumer_token()).await;
    let oversized = format!("SELECT 1 -- {}", "x".repeat(70 * 1024));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "COPY to a file",
            "COPY sales TO '/tmp/stolen.csv'".into(),
            "only queries",
        ),
        (
            "an external table over a local file",
            "CREATE EXTERNAL TABLE pw STORED AS CSV LOCATION '/etc/passwd'".into(),
            "only queries",
        ),
        (
            "read_csv",
            "SELECT * FROM read_csv('/etc/passwd')".into(),
            "read_csv",
        ),
        (
            "read_parquet",
            "SELECT * FROM read_parquet('/etc/passwd')".into(),
            "read_parquet",
        ),
        (
            "a file path as a table",
            "SELECT * FROM '/etc/passwd'".into(),
            "not found",
        ),
        (
            "generate_series",
            "SELECT * FROM generate_series(1, 10)".into(),
            "generate_series",
        ),
        (
            "SET",
            "SET datafusion.execution.target_partitions = 1".into(),
            "only queries",
        ),
        (
            "another asset's table",
            "SELECT * FROM other".into(),
            "not found",
        ),
        (
            "another asset's table, qualified",
            "SELECT * FROM insitu.public.other".into(),
            "not found",
        ),
        (
            "the information schema",
            "SELECT * FROM information_schema.tables".into(),
            "not found",
        ),
        (
            "another catalog",
            "SELECT * FROM datafusion.public.sales".into(),
            "not found",
        ),
        ("an oversized SQL text", oversized, "at most"),
        ("EXPLAIN", "EXPLAIN SELECT * FROM sales".into(), "EXPLAIN"),
        (
            "INSERT",
            "INSERT INTO sales VALUES (1, 'x', 1.0)".into(),
            "only queries",
        ),
        ("DROP", "DROP TABLE sales".into(), "only queries"),
        (
            "CREATE VIEW",
            "CREATE VIEW v AS SELECT * FROM sales".into(),
            "only queries",
        ),
        (
            "CREATE TABLE AS",
            "CREATE TABLE copy AS SELECT * FROM sales".into(),
            "only queries",
        ),
        (
            "PREPARE",
            "PREPARE p AS SELECT * FROM sales".into(),
            "only queries",
        ),
        (
            "two statements",
            "SELECT 1; DROP TABLE sales".into(),
            "statement",
        ),
    ];
    let data_dir = s.provider.data_dir().display().to_string();
    for (what, sql, says) in cases {
        let err = run_sql(&mut client, &sql)
            .await
            .expect_err(&format!("{what} must be refused"));
        assert!(
            matches!(err.code(), Code::PermissionDenied | Code::InvalidArgument),
            "{what}: {:?} {}",
            err.code(),
            err.message()
        );
        assert!(
            err.message().to_lowercase().contains(&says.to_lowercase()),
            "{what}: the message should say '{says}': {}",
            err.message()
        );
        assert!(
            !err.message().contains(&data_dir) && !err.message().contains("sales.parquet"),
            "{what}: the message names the storage: {}",
            err.message()
        );
    }
    // The session is intact: the consumer's own table still answers.
    let batches = run_sql(&mut client, "SELECT count(*) FROM sales")
        .await
        .expect("still served");
    assert_eq!(batches[0].num_rows(), 1);
}
