//! Application state, the router and the server loop.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, auth::Tokens};
use crate::config::Config;
use crate::ledger::ops::Ledger;
use crate::ledger::Clock;

#[derive(Clone)]
pub struct AppState {
    pub ledger: Ledger,
    pub tokens: Arc<Tokens>,
    pub request_timeout: Duration,
}

impl AppState {
    pub fn new(config: &Config, db: sqlx::PgPool, clock: Clock) -> Self {
        AppState {
            ledger: Ledger::new(db, clock),
            tokens: Arc::new(Tokens::new(&config.admin_tokens, &config.service_tokens)),
            request_timeout: config.request_timeout,
        }
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
