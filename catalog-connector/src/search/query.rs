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

/// One filter, as the set of asset ids it admits and as a test of one candidate row
/// `s` of `asset_search`.
struct Filter {
    set: String,
    test: String,
}

/// The filters of `q`, their values bound in `sql`.
fn filters(q: &SearchQuery, sql: &mut Sql) -> Vec<Filter> {
    let mut out = Vec::new();
    if let Some(owner) = q.owner {
        let p = sql.bind(Param::Text(format!("{owner:#x}")));
        out.push(Filter {
            set: format!("SELECT id FROM asset_search WHERE owner = {p}"),
            test: format!("s.owner = {p}"),
        });
    }
    let mut tags: Vec<String> = q.tags.iter().map(|t| t.to_lowercase()).collect();
    tags.sort();
    tags.dedup();
    for tag in tags {
        let p = sql.bind(Param::Text(tag));
        out.push(Filter {
            set: format!("SELECT id FROM asset_tags WHERE tag = {p}"),
            test: format!("EXISTS (SELECT 1 FROM asset_tags t WHERE t.tag = {p} AND t.id = s.id)"),
        });
    }
    if q.service.is_some() || q.min_price.is_some() || q.max_price.is_some() {
        // One service must satisfy every service condition together.
        let mut on = Vec::new();
        if let Some(t) = q.service {
            on.push(format!(
                "v.service_type = {}",
                sql.bind(Param::Text(t.to_string()))
            ));
        }
        if let Some(min) = q.min_price {
            on.push(format!(
                "v.price >= {}",
                sql.bind(Param::Text(price_key(min)))
            ));
        }
        if let Some(max) = q.max_price {
            on.push(format!(
                "v.price <= {}",
                sql.bind(Param::Text(price_key(max)))
            ));
        }
        let on = on.join(" AND ");
        out.push(Filter {
            set: format!("SELECT v.id FROM asset_services v WHERE {on}"),
            test: format!("EXISTS (SELECT 1 FROM asset_services v WHERE v.id = s.id AND {on})"),
        });
    }
    out
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

    let filters = filters(q, &mut sql);
    let fts = !words.is_empty() && backend == Backend::Sqlite;

    // Where candidates come from: FROM, the expression of an asset's id there, the
    // conditions, the score, the time, and the order.
    let (from, id, mut conditions, score, updated) = if words.is_empty() {
        (
            "asset_search s",
            "s.id",
            Vec::new(),
            "NULL".to_string(),
            "s.updated_at",
        )
    } else if fts {
        // Everything happens inside the FTS5 query, ranked and cut to the page there;
        // documents are joined for the page only.
        let m = sql.bind(Param::Text(text::fts5_match(&words)));
        (
            "asset_fts",
            "asset_fts.rowid",
            vec![format!("asset_fts MATCH {m}")],
            format!("-{SQLITE_BM25}"),
            "0",
        )
    } else {
        let m = sql.bind(Param::Text(text::tsquery(&words)));
        (
            "asset_search s",
            "s.id",
            vec![format!("s.doc @@ to_tsquery('english', {m})")],
            format!("ts_rank_cd(s.doc, to_tsquery('english', {m}))::float8"),
            "s.updated_at",
        )
    };
    let (order, outer_order) = if words.is_empty() {
        ("updated_at DESC, id DESC", "p.updated_at DESC, p.id DESC")
    } else {
        ("score DESC, id DESC", "p.score DESC, p.id DESC")
    };
    let where_of = |conditions: &[String]| {
        if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        }
    };

    let total: i64 = if words.is_empty() {
        // Filters alone: count the intersection of their id sets, driven by the first
        // (an index range), without touching the assets.
        let count_sql = match filters.split_first() {
            None => "SELECT count(*) AS n FROM asset_search".to_string(),
            Some((first, rest)) => {
                let others: Vec<String> = rest
                    .iter()
                    .map(|f| format!("f.id IN ({})", f.set))
                    .collect();
                format!(
                    "SELECT count(*) AS n FROM (SELECT DISTINCT id FROM ({}) f0) f {}",
                    first.set,
                    where_of(&others)
                )
            }
        };
        sql.query(&count_sql)
            .fetch_one(store.pool())
            .await
            .map_err(db("counting search results"))?
            .get("n")
    } else {
        // With text, filters test the text matches' ids. On FTS5 the id carries a
        // unary `+`, so SQLite applies the filter to the matches instead of running
        // the MATCH once per id in the filter's list.
        let key = if fts { "+asset_fts.rowid" } else { "s.id" };
        conditions.extend(filters.iter().map(|f| format!("{key} IN ({})", f.set)));
        let count_sql = format!("SELECT count(*) AS n FROM {from} {}", where_of(&conditions));
        sql.query(&count_sql)
            .fetch_one(store.pool())
            .await
            .map_err(db("counting search results"))?
            .get("n")
    };
    let total = u64::try_from(total).unwrap_or(0);
    let limit = q.page_size();
    if total <= q.offset {
        return Ok(SearchPage {
            hits: Vec::new(),
            total,
            offset: q.offset,
            next_offset: None,
        });
    }

    if words.is_empty() && !filters.is_empty() {
        // Two ways to the newest matches: walk all assets newest first, testing each,
        // until the page is full (cost grows with how rare matches are), or gather
        // every match and sort (cost grows with how many there are). The count just
        // taken says which is cheaper.
        let max_id: Option<i64> = sqlx::query("SELECT max(id) AS n FROM asset_search")
            .fetch_one(store.pool())
            .await
            .map_err(db("sizing the catalog"))?
            .get("n");
        let assets = u128::try_from(max_id.unwrap_or(0)).unwrap_or(0);
        let walk = (u128::from(q.offset) + u128::from(limit)) * assets
            < u128::from(total) * u128::from(total);
        conditions.extend(filters.iter().map(|f| {
            if walk {
                f.test.clone()
            } else {
                format!("s.id IN ({})", f.set)
            }
        }));
    }
    let filter = where_of(&conditions);

    let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
    let lim = sql.bind(Param::Int(i64::from(limit)));
    let off = sql.bind(Param::Int(offset));
    // The page's ids first, then their documents: sorting carries ids, not DDOs.
    let page_sql = format!(
        "SELECT p.score AS score, a.ddo AS ddo, a.version AS version, a.did AS did
         FROM (SELECT {id} AS id, {score} AS score, {updated} AS updated_at
               FROM {from} {filter}
               ORDER BY {order} LIMIT {lim} OFFSET {off}) p
         JOIN asset_search h ON h.id = p.id
         JOIN assets a ON a.did = h.did
         ORDER BY {outer_order}"
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
