//! Application state, the router and the server loop.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::api::{self, auth::Tokens};
use crate::config::Config;
use crate::gate::Gate;
use crate::ledger::types::PlanId;
use crate::ledger::Clock;
use crate::service::Ledger;
use crate::webhooks::Webhooks;
use metrics_exporter_prometheus::PrometheusHandle;

/// How long `/readyz` waits for the database before it answers not ready.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct AppState {
    pub ledger: Ledger,
    pub tokens: Arc<Tokens>,
    pub request_timeout: Duration,
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// After shutdown begins, how long requests in flight may take.
    pub shutdown_grace: Duration,
    /// The Unkey gate; `None` without `UNKEY_ROOT_KEY`.
    pub gate: Option<Arc<Gate>>,
    pub webhooks: Webhooks,
    /// The Stripe client; `None` without `STRIPE_SECRET_KEY`.
    pub stripe: Option<crate::stripe::Stripe>,
    /// Pays for auto top-up requests through Stripe; `None` without `STRIPE_SECRET_KEY`.
    pub top_up_charger: Option<crate::stripe::top_up::TopUpCharger>,
    /// Sends overage to Stripe meter events; `None` without `STRIPE_SECRET_KEY`.
    pub meter: Option<crate::stripe::meter::MeterReporter>,
    /// `STRIPE_WEBHOOK_SECRET`: verifies `POST /v1/stripe/webhook`; `None` leaves it off.
    pub stripe_webhook_secret: Option<Arc<str>>,
    pub metrics: PrometheusHandle,
    /// `LEDGER_PUBLIC_URL`: the base of the links the service hands out, no trailing slash.
    pub public_url: Arc<str>,
    /// One connection of its own for `/readyz`, so that the check never queues behind traffic.
    pub readiness: sqlx::PgPool,
}

impl AppState {
    pub fn new(config: &Config, db: sqlx::PgPool, clock: Clock) -> Result<Self, String> {
        let default_plan = config
            .default_plan
            .as_deref()
            .map(|p| PlanId::parse("LEDGER_DEFAULT_PLAN", p).map_err(|e| e.to_string()))
            .transpose()?;
        let gate = config
            .unkey
            .as_ref()
            .map(|settings| {
                Gate::new(settings, config.key_cache, default_plan)
                    .map(Arc::new)
                    .map_err(|e| format!("cannot build the Unkey client: {e}"))
            })
            .transpose()?;
        let webhooks = Webhooks::new(
            db.clone(),
            clock.clone(),
            config.webhook_retry.clone(),
            config.webhook_allow_private,
            config.secrets_key.clone(),
        )
        .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        let readiness = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(READINESS_TIMEOUT)
            .connect_lazy_with((*db.connect_options()).clone());
        let stripe = config
            .stripe
            .secret_key
            .as_deref()
            .map(|key| {
                crate::stripe::Stripe::new(&config.stripe.api_base, key, config.stripe.timeout)
            })
            .transpose()
            .map_err(|e| format!("cannot build the Stripe client: {e}"))?;
        let meter = stripe.clone().map(|client| {
            crate::stripe::meter::MeterReporter::new(
                db.clone(),
                client,
                config.stripe.meter_event_name.clone(),
                clock.clone(),
            )
        });
        let ledger = Ledger::with_writers(
            db.clone(),
            clock,
            config.writers,
            config.write_batch,
            Some(config.write_start_within()),
        )
        .with_top_up_url(config.top_up_url.as_deref());
        let top_up_charger = stripe.clone().map(|client| {
            crate::stripe::top_up::TopUpCharger::new(db.clone(), client, ledger.clone())
        });
        Ok(AppState {
            readiness,
            public_url: Arc::from(config.public_url.trim_end_matches('/')),
            top_up_charger,
            webhooks,
            meter,
            stripe,
            stripe_webhook_secret: config.stripe.webhook_secret.as_deref().map(Arc::from),
            metrics: crate::telemetry::handle(),
            ledger,
            tokens: Arc::new(Tokens::new(&config.admin_tokens, &config.service_tokens)),
            request_timeout: config.request_timeout,
            header_timeout: config.header_timeout,
            shutdown_grace: config.shutdown_grace,
            gate,
        })
    }
}

pub fn router(state: AppState) -> axum::Router {
    api::router(state)
}

/// Serves until `shutdown` is cancelled, then stops accepting connections and finishes the
/// requests in flight, for at most the state's `shutdown_grace`; connections still open then
/// (a client that never finishes its request, a slow reader) are closed. A client that takes
/// longer than `header_timeout` to send a request's headers has its connection closed, so a
/// half-sent request holds nothing open for long.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (header_timeout, grace) = (state.header_timeout, state.shutdown_grace);
    let app = router(state);
    let mut builder = conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Forget the connections that have ended.
        while connections.try_join_next().is_some() {}
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|req: axum::http::Request<Incoming>| req.map(axum::body::Body::new)),
        );
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            open = connections.len(),
            "connections still open after the shutdown grace period; closing them"
        );
        // A request cut off here may still commit if its batch had begun; retried with its
        // Idempotency-Key, it is answered from the stored result.
        connections.abort_all();
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}
