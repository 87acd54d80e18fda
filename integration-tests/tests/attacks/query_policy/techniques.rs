//! One test per technique. `refused!` attacks must be refused by the named rule through
//! both clients; `answered!` attacks must be answered safely (the check says how).

use serde_json::json;

use super::{Expect, attack};

macro_rules! refused {
    ($name:ident, $sql:expr, $rule:expr) => {
        #[tokio::test]
        async fn $name() {
            attack($sql, None, Expect::Refused($rule)).await;
        }
    };
    ($name:ident, $sql:expr, params: $params:expr, $rule:expr) => {
        #[tokio::test]
        async fn $name() {
            attack($sql, Some($params), Expect::Refused($rule)).await;
        }
    };
}

macro_rules! answered {
    ($name:ident, $sql:expr, $check:expr) => {
        #[tokio::test]
        async fn $name() {
            attack($sql, None, Expect::Answered($check)).await;
        }
    };
    ($name:ident, $sql:expr, params: $params:expr, $check:expr) => {
        #[tokio::test]
        async fn $name() {
            attack($sql, Some($params), Expect::Answered($check)).await;
        }
    };
}

fn no_rows(rows: &[Vec<String>]) {
    assert!(
        rows.is_empty(),
        "expected every group suppressed, got {rows:?}"
    );
}

// ---- blocked columns: no alias, CTE, cast or function launders them ----
refused!(select_star, "SELECT * FROM people", "blocked_columns");
refused!(
    alias_of_a_blocked_column,
    "SELECT n, count(*) FROM (SELECT name AS n FROM people) t GROUP BY n",
    "blocked_columns"
);
refused!(
    cte_renaming,
    "WITH x AS (SELECT name AS who, region FROM people) SELECT who, count(*) FROM x GROUP BY who",
    "blocked_columns"
);
refused!(
    blocked_column_in_where_binary_search,
    "SELECT count(*) FROM people WHERE name < 'person-100'",
    "blocked_columns"
);
refused!(
    cast_of_a_blocked_column,
    "SELECT count(*) FROM people GROUP BY CAST(name AS VARCHAR)",
    "blocked_columns"
);
refused!(
    scalar_functions_over_a_blocked_column,
    "SELECT count(*) FROM people GROUP BY upper(substr(name, 1, 8))",
    "blocked_columns"
);
refused!(
    blocked_column_in_order_by,
    "SELECT region, count(*) FROM people GROUP BY region ORDER BY max(length(name))",
    "blocked_columns"
);

// ---- aggregate-only: dimensions, functions, arguments, thresholds ----
refused!(
    row_level_select,
    "SELECT region, age FROM people",
    "aggregate_only"
);
refused!(
    group_by_a_unique_id,
    "SELECT id, count(*) FROM people GROUP BY id",
    "aggregate_only.dimensions"
);
refused!(
    value_column_in_where_binary_search,
    "SELECT count(*) FROM people WHERE income > 150000",
    "aggregate_only.dimensions"
);
answered!(
    having_count_equals_one,
    "SELECT region, count(*) FROM people GROUP BY region HAVING count(*) = 1",
    no_rows
);
answered!(
    a_small_group_is_suppressed,
    "SELECT region, count(*) FROM people GROUP BY region ORDER BY region",
    |rows| {
        let regions: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(regions, vec!["east", "north", "south"], "west has 5 people");
        assert_eq!(rows[1][1], "80");
    }
);
answered!(
    narrowing_where_to_one_small_group,
    "SELECT age, count(*) FROM people WHERE region = 'west' GROUP BY age",
    no_rows
);
refused!(
    row_revealing_aggregate,
    "SELECT region, array_agg(income) FROM people GROUP BY region",
    "aggregate_only.functions"
);
refused!(
    first_value_of_a_group,
    "SELECT region, first_value(income) FROM people GROUP BY region",
    "aggregate_only.functions"
);
refused!(
    max_of_the_entity_column,
    "SELECT region, max(id) FROM people GROUP BY region",
    "aggregate_only.functions"
);
refused!(
    case_expression_singles_out_one_person,
    "SELECT region, sum(CASE WHEN age = 33 THEN income ELSE 0 END) FROM people GROUP BY region",
    "aggregate_only.arguments"
);
refused!(
    aggregate_filter_singles_out_one_person,
    "SELECT region, sum(income) FILTER (WHERE age = 33) FROM people GROUP BY region",
    "aggregate_only.arguments"
);
refused!(
    window_function_over_entities,
    "SELECT region, row_number() OVER (PARTITION BY region ORDER BY id) FROM people",
    "aggregate_only"
);
refused!(
    union_with_a_literal_table,
    "SELECT region FROM people UNION ALL SELECT 'x'",
    "aggregate_only"
);
refused!(
    union_inside_an_aggregate,
    "SELECT count(*) FROM (SELECT region FROM people WHERE region = 'west' UNION ALL SELECT 'x') t",
    "aggregate_only"
);
refused!(
    select_distinct_rows,
    "SELECT DISTINCT region, age FROM people",
    "aggregate_only"
);
refused!(
    order_by_limit_picks_the_richest,
    "SELECT sum(income) FROM (SELECT income FROM people ORDER BY income DESC LIMIT 1) t",
    "aggregate_only.dimensions"
);
answered!(
    limit_one_below_the_aggregate,
    "SELECT sum(income) FROM (SELECT income FROM people LIMIT 1) t",
    no_rows
);
refused!(
    scalar_subquery_picks_one_person,
    "SELECT (SELECT max(income) FROM people WHERE id = 7)",
    "aggregate_only.dimensions"
);
refused!(
    subquery_reads_rows,
    "SELECT count(*) FROM mine WHERE region IN (SELECT region FROM people)",
    "aggregate_only"
);
refused!(
    prepared_parameter_in_place_of_a_literal,
    "SELECT count(*) FROM people WHERE income > ?",
    params: vec![json!(150000)],
    "aggregate_only.dimensions"
);
answered!(
    prepared_parameter_narrows_to_a_small_group,
    "SELECT count(*) FROM people WHERE region = ?",
    params: vec![json!("west")],
    no_rows
);

// ---- join-only columns ----
refused!(
    join_then_project_the_join_column,
    "SELECT p.email FROM people p JOIN mine m ON p.email = m.email",
    "join_only_columns"
);
refused!(
    join_column_in_where,
    "SELECT count(*) FROM people WHERE email = 'p7@example.org'",
    "join_only_columns"
);
refused!(
    join_with_a_literal_table,
    "SELECT count(*) FROM people p JOIN (VALUES ('p7@example.org')) v(e) ON p.email = v.e",
    "join_only_columns"
);
refused!(
    self_join_on_the_join_column,
    "SELECT count(*) FROM people a JOIN people b ON a.email = b.email",
    "join_only_columns"
);
answered!(
    join_then_group_by_known_identity,
    "SELECT m.name, count(*) FROM mine m JOIN people p ON m.email = p.email GROUP BY m.name",
    no_rows
);

// ---- allowed columns, masks, row filter, limits (roster) ----
refused!(
    column_outside_the_allowed_list,
    "SELECT income FROM roster LIMIT 5",
    "allowed_columns"
);
answered!(
    masked_names_are_not_names,
    "SELECT name FROM roster ORDER BY id LIMIT 5",
    |rows| {
        assert_eq!(rows.len(), 5);
        for r in rows {
            assert!(!r[0].contains("person"), "unmasked: {}", r[0]);
            assert_eq!(r[0].len(), 32);
        }
    }
);
answered!(
    guessing_a_masked_value,
    "SELECT count(*) FROM roster WHERE name = 'person-3'",
    |rows| assert_eq!(rows, [vec!["0".to_string()]])
);
answered!(
    reading_around_the_row_filter,
    "SELECT count(*) FROM roster WHERE region <> 'north' OR true",
    |rows| assert_eq!(rows, [vec!["80".to_string()]], "the north only")
);
refused!(
    more_rows_than_the_row_limit,
    "SELECT id FROM roster",
    "row_limit"
);
refused!(
    more_bytes_than_the_byte_limit,
    "SELECT name, region FROM roster LIMIT 45",
    "byte_limit"
);

// ---- approved templates ----
answered!(
    the_approved_template_runs,
    "SELECT region, count(*) FROM reports WHERE age > 20 GROUP BY region",
    |rows| assert_eq!(rows.len(), 3)
);
refused!(
    template_with_an_extra_condition,
    "SELECT region, count(*) FROM reports WHERE age > 20 OR 1 = 1 GROUP BY region",
    "templates"
);
refused!(
    template_with_other_columns,
    "SELECT age, count(*) FROM reports GROUP BY age",
    "templates"
);

// ---- differential privacy (survey) ----
refused!(
    case_expression_leaks_a_bit_under_privacy,
    "SELECT region, sum(CASE WHEN income > 100000 THEN 1 ELSE 0 END) FROM survey GROUP BY region",
    "privacy"
);
refused!(
    unbounded_sum_under_privacy,
    "SELECT sum(age) FROM survey",
    "privacy"
);
answered!(
    private_counts_are_noised_but_useful,
    "SELECT region, count(*) FROM survey GROUP BY region ORDER BY region",
    |rows| {
        assert_eq!(rows.len(), 3);
        let north: i64 = rows[1][1].parse().expect("count");
        // Laplace(b = 1 / 0.5): |noise| > 40 has probability e^-20.
        assert!((north - 80).abs() < 40, "noisy count {north}");
    }
);
