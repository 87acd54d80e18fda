//! The admin endpoint of `insitu serve`, on its own port so it can stay private while
//! Flight is public: `/health` for load balancers (503 while the chain cannot be asked,
//! because a provider that cannot check agreements serves nothing) and `/metrics` in the
//! Prometheus text format.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use insitu_ledger::Ledger;
use insitu_policy::PolicyEngine;

#[derive(Clone)]
struct Admin {
    engine: Arc<PolicyEngine>,
    ledger: Arc<dyn Ledger>,
    outbox: insitu_catalog::lineage::Outbox,
    started: Instant,
}

pub fn router(
    engine: Arc<PolicyEngine>,
    ledger: Arc<dyn Ledger>,
    outbox: insitu_catalog::lineage::Outbox,
) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(Admin {
            engine,
            ledger,
            outbox,
            started: Instant::now(),
        })
}

async fn health(State(a): State<Admin>) -> impl IntoResponse {
    match a.ledger.chain_time().await {
        Ok(_) => (StatusCode::OK, "ok\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("chain unavailable: {e}\n"),
        ),
    }
}

async fn metrics(State(a): State<Admin>) -> impl IntoResponse {
    let s = a.engine.stats();
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, labels: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name}{labels} {value}");
    };
    counter(
        "insitu_decisions_allowed_total",
        "Access decisions that granted.",
        "",
        s.allowed,
    );
    counter(
        "insitu_decisions_denied_total",
        "Access decisions refused because of the request.",
        "",
        s.denied,
    );
    counter(
        "insitu_decisions_unavailable_total",
        "Access decisions refused because the chain or audit log could not answer.",
        "",
        s.unavailable,
    );
    counter(
        "insitu_fulfilments_total",
        "fulfill transactions sent by this provider.",
        "",
        s.fulfilments,
    );
    let _ = writeln!(
        out,
        "# HELP insitu_uptime_seconds Seconds since the provider started."
    );
    let _ = writeln!(out, "# TYPE insitu_uptime_seconds gauge");
    let _ = writeln!(
        out,
        "insitu_uptime_seconds {}",
        a.started.elapsed().as_secs()
    );
    // A growing backlog means a lineage receiver is down or refusing events.
    if let Ok(pending) = a.outbox.pending().await {
        let _ = writeln!(
            out,
            "# HELP insitu_lineage_pending Lineage events waiting for delivery, over all receivers."
        );
        let _ = writeln!(out, "# TYPE insitu_lineage_pending gauge");
        let _ = writeln!(out, "insitu_lineage_pending {pending}");
    }
    let _ = writeln!(out, "# HELP insitu_build_info Build information.");
    let _ = writeln!(out, "# TYPE insitu_build_info gauge");
    let _ = writeln!(
        out,
        "insitu_build_info{{version=\"{}\",chain_id=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        a.ledger.chain_id()
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
