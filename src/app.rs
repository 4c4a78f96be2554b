//! Application state, the router and the server loop.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, auth::Tokens};
use crate::config::Config;
use crate::gate::Gate;
use crate::ledger::types::PlanId;
use crate::ledger::Clock;
use crate::service::Ledger;
use crate::webhooks::Webhooks;
use metrics_exporter_prometheus::PrometheusHandle;

#[derive(Clone)]
pub struct AppState {
    pub ledger: Ledger,
    pub tokens: Arc<Tokens>,
    pub request_timeout: Duration,
    /// The Unkey gate; `None` without `UNKEY_ROOT_KEY`.
    pub gate: Option<Arc<Gate>>,
    pub webhooks: Webhooks,
    pub metrics: PrometheusHandle,
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
        let webhooks = Webhooks::new(db.clone(), clock.clone(), config.webhook_retry.clone())
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        Ok(AppState {
            webhooks,
            metrics: crate::telemetry::handle(),
            ledger: Ledger::with_writers(db, clock, config.writers, config.write_batch),
            tokens: Arc::new(Tokens::new(&config.admin_tokens, &config.service_tokens)),
            request_timeout: config.request_timeout,
            gate,
        })
    }
}

pub fn router(state: AppState) -> axum::Router {
    api::router(state)
}

/// Serves until `shutdown` is cancelled, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
