//! Prometheus metrics: one recorder per process, rendered at `/metrics`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::app::AppState;

/// The process's recorder (installed on first use; tests run many apps in one process).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    ],
                )
                .expect("static buckets")
                .install_recorder()
                .expect("one metrics recorder per process");
            describe();
            // Histogram samples pile up until drained; a scrape drains them, but nothing
            // promises a scrape, so a thread of the recorder's own does it.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .expect("a thread for metrics upkeep");
            handle
        })
        .clone()
}

/// The `# HELP` text of every metric the service records.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by route, method and status"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by route and method"
    );
    describe_counter!(
        "debits_total",
        "Debits (direct, verifications and reservation commits) by pool and outcome (accepted, refused); dry runs not counted"
    );
    describe_counter!(
        "credits_debited_total",
        "Credits taken by accepted debits, verifications and reservation commits, by pool"
    );
    describe_counter!("period_rolls_total", "Billing periods rolled");
    describe_histogram!(
        "write_batch_size",
        Unit::Count,
        "Commands written in one database transaction"
    );
    describe_gauge!(
        "db_pool_connections",
        Unit::Count,
        "Open connections of the database pool"
    );
    describe_gauge!(
        "db_pool_idle_connections",
        Unit::Count,
        "Idle connections of the database pool"
    );
    describe_counter!("unkey_errors_total", "Calls to Unkey that failed, by path");
    describe_histogram!(
        "unkey_request_duration_seconds",
        Unit::Seconds,
        "Time of one call to Unkey, by path"
    );
    describe_counter!(
        "webhook_deliveries_total",
        "Webhook delivery attempts, by outcome (delivered, pending, failed)"
    );
    describe_counter!(
        "webhook_delivery_failures_total",
        "Webhook delivery attempts that failed"
    );
    describe_counter!(
        "stripe_meter_events_total",
        "Overage meter events sent to Stripe, by outcome (sent, pending, failed)"
    );
    describe_counter!(
        "auto_top_ups_total",
        "Auto top-ups charged through Stripe, by outcome (succeeded, failed)"
    );
}

/// Counts requests by route, method and status, and times them.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "route" => route.clone(), "method" => method.clone(),
                      "status" => status)
    .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

/// GET /metrics: Prometheus text format.
pub async fn render(State(state): State<AppState>) -> ([(&'static str, &'static str); 1], String) {
    let pool = state.ledger.db();
    metrics::gauge!("db_pool_connections").set(f64::from(pool.size()));
    metrics::gauge!("db_pool_idle_connections").set(pool.num_idle() as f64);
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
