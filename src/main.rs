use std::collections::BTreeSet;
use std::process::ExitCode;

use chrono::Utc;
use clap::{CommandFactory, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use credit_ledger::app::{self, AppState};
use credit_ledger::config::{Config, LogFormat, Settings};
use credit_ledger::{audit, db, ledger::Clock, scheduler};

/// credit-ledger: credits, allowances and packs for API keys, on PostgreSQL.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Settings are environment variables, or flags of serve, migrate and audit: \
                  `credit-ledger serve --help` lists them with their defaults."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Each command that touches the database takes every setting, as a flag or its environment
/// variable (`--help` lists them with their defaults).
#[derive(Subcommand)]
enum Command {
    /// Create the database if missing, apply migrations and serve the HTTP API.
    Serve(Box<Settings>),
    /// Apply migrations and exit.
    Migrate(Box<Settings>),
    /// Check every ledger invariant on the live database; exit 1 on any violation.
    Audit(Box<Settings>),
    /// Print the OpenAPI description of the HTTP API.
    Openapi,
    /// Print a shell completion script for bash, zsh, fish, powershell or elvish.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

/// What a command that touches the database does once its settings are checked.
enum Task {
    Serve,
    Migrate,
    Audit,
}

fn init_logging(format: LogFormat, filter: &str) {
    // The filter was checked with the rest of the configuration.
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr: stdout carries command output (audit, openapi). Colours only for a
    // terminal: a file or a pipe gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let (task, settings) = match Cli::parse().command {
        Command::Openapi => {
            write_stdout(credit_ledger::OPENAPI_YAML);
            return ExitCode::SUCCESS;
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "credit-ledger", &mut script);
            write_stdout(&String::from_utf8_lossy(&script));
            return ExitCode::SUCCESS;
        }
        Command::Serve(settings) => (Task::Serve, settings),
        Command::Migrate(settings) => (Task::Migrate, settings),
        Command::Audit(settings) => (Task::Audit, settings),
    };
    let config = match Config::from_settings(*settings) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(config.log_format, &config.log_filter);
    match run(task, config).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(task: Task, config: Config) -> Result<ExitCode, String> {
    // Migrations and the audit run without the serving pool's statement timeout.
    let pool = db::connect(&config.database_url, config.db_max_connections, None)
        .await
        .map_err(|e| e.to_string())?;
    db::migrate(&config.database_url, &pool)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("database ready: migrations applied");
    match task {
        Task::Migrate => Ok(ExitCode::SUCCESS),
        Task::Serve => {
            pool.close().await;
            let pool = db::open_pool(
                &config.database_url,
                config.db_max_connections,
                Some(config.db_timeouts),
            )
            .await
            .map_err(|e| e.to_string())?;
            serve(config, pool).await.map(|()| ExitCode::SUCCESS)
        }
        Task::Audit => audit(pool).await,
    }
}

/// Prints each violation on a line of its own, then a summary; failure when any was found.
async fn audit(pool: sqlx::PgPool) -> Result<ExitCode, String> {
    let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
    let violations = audit::run(&mut conn, Utc::now())
        .await
        .map_err(|e| format!("audit failed: {e}"))?;
    drop(conn);
    pool.close().await;
    let checks = audit::CHECKS.len();
    if violations.is_empty() {
        write_stdout(&format!("audit: clean, {checks} checks\n"));
        return Ok(ExitCode::SUCCESS);
    }
    let mut report: String = violations.iter().map(|v| format!("{v}\n")).collect();
    let failed: BTreeSet<&str> = violations.iter().map(|v| v.check).collect();
    report.push_str(&format!(
        "audit: {} in {}\n",
        counted(violations.len(), "violation"),
        counted(failed.len(), "check")
    ));
    write_stdout(&report);
    Ok(ExitCode::FAILURE)
}

/// Writes a command's output to stdout. A reader that stopped reading (`| head`) ends the output
/// quietly instead of the panic `print!` would raise on the broken pipe.
fn write_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(err) => eprintln!("error: cannot write the output: {err}"),
    }
}

fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
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
    let state = AppState::new(&config, pool.clone(), Clock::system())?;
    if state.gate.is_none() {
        tracing::warn!("UNKEY_ROOT_KEY is not set: /v1/verify and /v1/me/* will answer 503");
    }
    match (state.webhooks.can_seal(), state.webhooks.seal_stored_secrets().await) {
        (true, Ok(0)) => {}
        (true, Ok(n)) => tracing::info!(sealed = n, "webhook secrets sealed with LEDGER_SECRETS_KEY"),
        (false, Ok(0)) => tracing::warn!(
            "LEDGER_SECRETS_KEY is not set: webhook endpoints cannot be created"
        ),
        (false, Ok(n)) => tracing::warn!(
            plain = n,
            "LEDGER_SECRETS_KEY is not set: webhook secrets stored before sealing stay readable in the database until it is"
        ),
        (_, Err(err)) => return Err(format!("cannot read the webhook secrets: {err}")),
    }
    let mut jobs = scheduler::start(state.ledger.clone(), &config.schedule)
        .await
        .map_err(|e| {
            format!(
                "LEDGER_SCHEDULE={:?} is not a usable schedule: {e}",
                config.schedule
            )
        })?;
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(shutdown.clone()));
    let worker = if config.webhook_delivery {
        Some(
            state
                .webhooks
                .clone()
                .spawn_worker(config.webhook_poll, shutdown.clone()),
        )
    } else {
        tracing::warn!(
            "LEDGER_WEBHOOK_DELIVERY=false: webhook deliveries are recorded but not sent by this process"
        );
        None
    };
    let meter = state
        .meter
        .clone()
        .map(|meter| meter.spawn(config.webhook_poll, shutdown.clone()));
    let charger = state
        .top_up_charger
        .clone()
        .map(|charger| charger.spawn(config.webhook_poll, shutdown.clone()));
    let served = app::serve(listener, state, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(worker) = worker {
        let _ = worker.await;
    }
    if let Some(meter) = meter {
        let _ = meter.await;
    }
    if let Some(charger) = charger {
        let _ = charger.await;
    }
    if let Err(err) = jobs.shutdown().await {
        tracing::warn!(error = %err, "scheduler did not stop cleanly");
    }
    served.map_err(|e| format!("server error: {e}"))?;
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
