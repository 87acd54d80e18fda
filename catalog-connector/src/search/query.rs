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
        self.query_first(sql, self.params.len())
    }

    /// `sql` with the first `n` parameters: a statement built before the rest were
    /// bound.
    fn query_first<'q>(
        &'q self,
        sql: &'q str,
        n: usize,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for p in self.params.iter().take(n) {
            q = match p {
                Param::Text(s) => q.bind(s.as_str()),
                Param::Int(i) => q.bind(*i),
            };
        }
        q
    }
}

/// One filter. Filters are listed most selective first by kind: an owner (one
/// organisation of many), then tags, then the service condition (a handful of types).
/// The first one present drives a filter-only search; the others are tested per
/// candidate with an indexed lookup.
enum Filter {
    /// The bound owner.
    Owner(String),
    /// A bound tag.
    Tag(String),
    /// Conditions on one service row `v`, values bound.
    Service(String),
}

impl Filter {
    /// A test that asset `id` passes, one index lookup.
    fn test(&self, id: &str) -> String {
        match self {
            Filter::Owner(p) => {
                format!("EXISTS (SELECT 1 FROM asset_search o WHERE o.id = {id} AND o.owner = {p})")
            }
            Filter::Tag(p) => {
                format!("EXISTS (SELECT 1 FROM asset_tags t WHERE t.tag = {p} AND t.id = {id})")
            }
            Filter::Service(on) => {
                format!("EXISTS (SELECT 1 FROM asset_services v WHERE v.id = {id} AND {on})")
            }
        }
    }

    /// The ids it admits, as a subquery (one index range).
    fn set(&self) -> String {
        match self {
            Filter::Owner(p) => format!("SELECT id FROM asset_search WHERE owner = {p}"),
            Filter::Tag(p) => format!("SELECT id FROM asset_tags WHERE tag = {p}"),
            Filter::Service(on) => format!("SELECT v.id FROM asset_services v WHERE {on}"),
        }
    }
}

/// The filters of `q`, most selective kind first, their values bound in `sql`.
fn filters(q: &SearchQuery, sql: &mut Sql) -> Vec<Filter> {
    let mut out = Vec::new();
    if let Some(owner) = q.owner {
        out.push(Filter::Owner(sql.bind(Param::Text(format!("{owner:#x}")))));
    }
    let mut tags: Vec<String> = q.tags.iter().map(|t| t.to_lowercase()).collect();
    tags.sort();
    tags.dedup();
    for tag in tags {
        out.push(Filter::Tag(sql.bind(Param::Text(tag))));
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
        out.push(Filter::Service(on.join(" AND ")));
    }
    out
}

/// Where a search without text finds its candidates, newest first: the table, the id
/// expression in it, and the conditions. An owner or a tag is an index range already
/// in id order, so a page is read from its end and stops when full; a service
/// condition is not (its index is by price), so the assets are walked newest first
/// and tested, which stops early because such conditions match many.
fn filtered(filters: &[Filter]) -> (&'static str, Vec<String>) {
    let Some((first, rest)) = filters.split_first() else {
        return ("asset_search d", Vec::new());
    };
    let (from, mut conditions) = match first {
        Filter::Owner(p) => ("asset_search d", vec![format!("d.owner = {p}")]),
        Filter::Tag(p) => ("asset_tags d", vec![format!("d.tag = {p}")]),
        Filter::Service(_) => ("asset_search d", vec![first.test("d.id")]),
    };
    conditions.extend(rest.iter().map(|f| f.test("d.id")));
    (from, conditions)
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
    let where_of = |conditions: &[String]| {
        if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        }
    };

    // Candidates: FROM, an asset's id there, the conditions, the score, the order,
    // and how to count them.
    let (from, id, mut conditions, score, order, count_sql) = if words.is_empty() {
        // Newest first: the most recently indexed (registered or updated) asset has
        // the highest id.
        let (from, conditions) = filtered(&filters);
        let count = match filters.as_slice() {
            // A service condition alone: its index range, each asset once.
            [Filter::Service(on)] => {
                format!("SELECT count(DISTINCT v.id) AS n FROM asset_services v WHERE {on}")
            }
            _ => format!("SELECT count(*) AS n FROM {from} {}", where_of(&conditions)),
        };
        (
            from,
            "d.id",
            conditions,
            "NULL".to_string(),
            "id DESC",
            count,
        )
    } else if backend == Backend::Sqlite {
        // Everything happens inside the FTS5 query, ranked and cut to the page there;
        // documents are joined for the page only. Each filter is an index lookup per
        // match, which is cheaper than building the filter's set of ids (a service
        // type can admit half the catalog) to intersect with.
        let m = sql.bind(Param::Text(text::fts5_match(&words)));
        let mut conditions = vec![format!("asset_fts MATCH {m}")];
        conditions.extend(filters.iter().map(|f| f.test("asset_fts.rowid")));
        let count = format!(
            "SELECT count(*) AS n FROM asset_fts {}",
            where_of(&conditions)
        );
        (
            "asset_fts",
            "asset_fts.rowid",
            conditions,
            format!("-{SQLITE_BM25}"),
            "score DESC, id DESC",
            count,
        )
    } else {
        let m = sql.bind(Param::Text(text::tsquery(&words)));
        let mut conditions = vec![format!("d.doc @@ to_tsquery('english', {m})")];
        conditions.extend(filters.iter().map(|f| f.test("d.id")));
        let count = format!(
            "SELECT count(*) AS n FROM asset_search d {}",
            where_of(&conditions)
        );
        (
            "asset_search d",
            "d.id",
            conditions,
            format!("ts_rank_cd(d.doc, to_tsquery('english', {m}))::float8"),
            "score DESC, id DESC",
            count,
        )
    };

    let counted = sql.params.len();
    let limit = q.page_size();
    let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
    let lim = sql.bind(Param::Int(i64::from(limit)));
    let off = sql.bind(Param::Int(offset));
    let count = || async {
        let n: i64 = sql
            .query_first(&count_sql, counted)
            .fetch_one(store.pool())
            .await
            .map_err(db("counting search results"))?
            .get("n");
        Ok::<u64, CatalogError>(u64::try_from(n).unwrap_or(0))
    };
    // The count and the page are independent, and each is one scan of the matches: they
    // run at once, on two connections, unless the plan of the page needs the count.
    let mut total = None;
    if let (true, [service @ Filter::Service(_)]) = (words.is_empty(), filters.as_slice()) {
        // Walking newest first costs about (offset + limit) × assets / matches tests;
        // gathering every match and sorting costs about the matches. A rare service
        // condition (a narrow price range) is gathered.
        let matches = count().await?;
        total = Some(matches);
        let max_id: Option<i64> = sqlx::query("SELECT max(id) AS n FROM asset_search")
            .fetch_one(store.pool())
            .await
            .map_err(db("sizing the catalog"))?
            .get("n");
        let assets = u128::try_from(max_id.unwrap_or(0)).unwrap_or(0);
        let walk = (u128::from(q.offset) + u128::from(limit)) * assets
            < u128::from(matches) * u128::from(matches);
        if !walk {
            conditions = vec![format!("d.id IN ({})", service.set())];
        }
    }
    let filter = where_of(&conditions);
    // The page's ids first, then their documents: sorting carries ids, not DDOs.
    let page_sql = format!(
        "SELECT p.score AS score, a.ddo AS ddo, a.version AS version, a.did AS did
         FROM (SELECT {id} AS id, {score} AS score
               FROM {from} {filter}
               ORDER BY {order} LIMIT {lim} OFFSET {off}) p
         JOIN asset_search h ON h.id = p.id
         JOIN assets a ON a.did = h.did
         ORDER BY p.{}",
        order.replace(", ", ", p.")
    );
    let page = async {
        sql.query(&page_sql)
            .fetch_all(store.pool())
            .await
            .map_err(db("searching the catalog"))
    };
    let (total, rows) = match total {
        Some(total) => (total, page.await?),
        None => tokio::try_join!(count(), page)?,
    };
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
