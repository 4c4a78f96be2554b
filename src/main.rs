use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use credit_ledger::app::{self, AppState};
use credit_ledger::config::{Config, LogFormat};
use credit_ledger::{db, ledger::Clock};

/// credit-ledger: credits, allowances and packs for API keys, on PostgreSQL.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the database if missing, apply migrations and serve the HTTP API.
    Serve,
    /// Apply migrations and exit.
    Migrate,
    /// Print the OpenAPI description of the HTTP API.
    Openapi,
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        print!("{}", credit_ledger::OPENAPI_YAML);
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(config.log_format);
    match run(cli.command, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> Result<(), String> {
    let pool = db::connect(&config.database_url, config.db_max_connections)
        .await
        .map_err(|e| e.to_string())?;
    db::migrate(&config.database_url, &pool)
        .await
        .map_err(|e| e.to_string())?;
    match command {
        Command::Migrate => {
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve => serve(config, pool).await,
        Command::Openapi => Ok(()),
    }
}

async fn serve(config: Config, pool: sqlx::PgPool) -> Result<(), String> {
    if config.admin_tokens.is_empty() && config.service_tokens.is_empty() {
        tracing::warn!(
            "neither LEDGER_ADMIN_TOKENS nor LEDGER_SERVICE_TOKENS is set: every /v1 route will answer 401"
        );
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on LEDGER_LISTEN={}: {e}", config.listen))?;
    tracing::info!(listen = %config.listen, "credit-ledger serving");
    let state = AppState::new(&config, pool.clone(), Clock::system());
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(shutdown.clone()));
    app::serve(listener, state, shutdown)
        .await
        .map_err(|e| format!("server error: {e}"))?;
    pool.close().await;
    tracing::info!("credit-ledger stopped");
    Ok(())
}

async fn shutdown_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing requests in flight");
    token.cancel();
}
