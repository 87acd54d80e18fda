//! A [`SearchQuery`] as SQL for the store's backend. Every value is a bound parameter;
//! only the shape of the statement (which filters are present) varies.

use sqlx::Row;

use super::index::{SQLITE_BM25, price_key};
use super::{SearchHit, SearchPage, SearchQuery, text};
use crate::ddo::Ddo;
use crate::error::{CatalogError, Result, db};
use crate::store::{AssetStore, Backend};

enum Param {
    Text(String),
    Int(i64),
}

/// A statement under construction: its text and its parameters, in order.
#[derive(Default)]
struct Sql {
    params: Vec<Param>,
}

impl Sql {
    fn bind(&mut self, p: Param) -> String {
        self.params.push(p);
        format!("${}", self.params.len())
    }

    fn query<'q>(
        &'q self,
        sql: &'q str,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for p in &self.params {
            q = match p {
                Param::Text(s) => q.bind(s.as_str()),
                Param::Int(i) => q.bind(*i),
            };
        }
        q
    }
}

/// Runs `q` on `store`.
pub(crate) async fn run(store: &AssetStore, q: &SearchQuery) -> Result<SearchPage> {
    q.validate()?;
    let backend = store.backend();
    let mut sql = Sql::default();
    let words = match &q.text {
        Some(t) if !t.trim().is_empty() => text::words(t)?,
        _ => Vec::new(),
    };

    // The CTEs to run first (for the page, and for the count, which needs no
    // ranking), FROM, the text condition and the ranking expression.
    let (with, with_count, from, mut conditions, score, order) = if words.is_empty() {
        (
            String::new(),
            String::new(),
            "asset_search s".to_string(),
            Vec::new(),
            "NULL".to_string(),
            "s.updated_at DESC, s.id DESC".to_string(),
        )
    } else {
        match backend {
            Backend::Sqlite => {
                // The text matches first, materialised: joined with a filter, SQLite
                // would otherwise drive from the filter's index and run the MATCH once
                // per candidate row.
                let m = sql.bind(Param::Text(text::fts5_match(&words)));
                (
                    format!(
                        "WITH hits AS MATERIALIZED (SELECT rowid AS id, -{SQLITE_BM25} AS rank
                         FROM asset_fts WHERE asset_fts MATCH {m})"
                    ),
                    format!(
                        "WITH hits AS MATERIALIZED (SELECT rowid AS id
                         FROM asset_fts WHERE asset_fts MATCH {m})"
                    ),
                    "hits JOIN asset_search s ON s.id = hits.id".to_string(),
                    Vec::new(),
                    "hits.rank".to_string(),
                    "score DESC, s.id DESC".to_string(),
                )
            }
            Backend::Postgres => {
                let m = sql.bind(Param::Text(text::tsquery(&words)));
                (
                    String::new(),
                    String::new(),
                    "asset_search s".to_string(),
                    vec![format!("s.doc @@ to_tsquery('english', {m})")],
                    format!("ts_rank_cd(s.doc, to_tsquery('english', {m}))::float8"),
                    "score DESC, s.id DESC".to_string(),
                )
            }
        }
    };

    if let Some(owner) = q.owner {
        let p = sql.bind(Param::Text(format!("{owner:#x}")));
        conditions.push(format!("s.owner = {p}"));
    }
    let mut tags: Vec<String> = q.tags.iter().map(|t| t.to_lowercase()).collect();
    tags.sort();
    tags.dedup();
    for tag in tags {
        let p = sql.bind(Param::Text(tag));
        conditions.push(format!(
            "s.id IN (SELECT id FROM asset_tags WHERE tag = {p})"
        ));
    }
    if q.service.is_some() || q.min_price.is_some() || q.max_price.is_some() {
        // One service must satisfy every service condition together.
        let mut on = Vec::new();
        if let Some(t) = q.service {
            on.push(format!(
                "service_type = {}",
                sql.bind(Param::Text(t.to_string()))
            ));
        }
        if let Some(min) = q.min_price {
            on.push(format!(
                "price >= {}",
                sql.bind(Param::Text(price_key(min)))
            ));
        }
        if let Some(max) = q.max_price {
            on.push(format!(
                "price <= {}",
                sql.bind(Param::Text(price_key(max)))
            ));
        }
        conditions.push(format!(
            "s.id IN (SELECT id FROM asset_services WHERE {})",
            on.join(" AND ")
        ));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };

    let count_sql = format!("{with_count} SELECT count(*) AS n FROM {from} {filter}");
    let total: i64 = sql
        .query(&count_sql)
        .fetch_one(store.pool())
        .await
        .map_err(db("counting search results"))?
        .get("n");
    let total = u64::try_from(total).unwrap_or(0);

    let limit = q.page_size();
    let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
    let lim = sql.bind(Param::Int(i64::from(limit)));
    let off = sql.bind(Param::Int(offset));
    // The page's ids first, then their documents: sorting carries ids, not DDOs.
    let page_sql = format!(
        "{with} SELECT p.score AS score, a.ddo AS ddo, a.version AS version, a.did AS did
         FROM (SELECT s.did AS did, s.id AS id, s.updated_at AS updated_at, {score} AS score
               FROM {from} {filter}
               ORDER BY {order} LIMIT {lim} OFFSET {off}) p
         JOIN assets a ON a.did = p.did
         ORDER BY {}",
        order.replace("s.", "p."),
    );
    let rows = sql
        .query(&page_sql)
        .fetch_all(store.pool())
        .await
        .map_err(db("searching the catalog"))?;
    let mut hits = Vec::with_capacity(rows.len());
    for r in &rows {
        let json: String = r.get("ddo");
        let ddo: Ddo = serde_json::from_str(&json).map_err(|e| CatalogError::Corrupt {
            did: r.get("did"),
            detail: e.to_string(),
        })?;
        hits.push(SearchHit {
            ddo,
            version: r.get("version"),
            score: if words.is_empty() {
                None
            } else {
                Some(r.get::<f64, _>("score"))
            },
        });
    }
    let end = q.offset + hits.len() as u64;
    Ok(SearchPage {
        next_offset: (end < total && !hits.is_empty()).then_some(end),
        total,
        offset: q.offset,
        hits,
    })
}
