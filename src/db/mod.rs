//! Storage. SQL lives only in this module; every function takes `&mut PgConnection` so that it
//! runs inside whatever transaction the caller holds.

pub mod accounts;
pub mod debits;
pub mod entries;
pub mod grants;
pub mod idempotency;
pub mod members;
pub mod plans;
pub mod portal;
pub mod state;
pub mod usage;
pub mod webhooks;

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(sqlx::Error),
    #[error("cannot reach PostgreSQL at DATABASE_URL={url}: {source}")]
    Unreachable { url: String, source: sqlx::Error },
    #[error("cannot create database {database} (from DATABASE_URL={url}): {source}")]
    CreateDatabase {
        url: String,
        database: String,
        source: sqlx::Error,
    },
    #[error("cannot apply migrations to DATABASE_URL={url}: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
}

/// The URL with any password replaced, fit for an error message or a log line.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparseable>".to_owned(),
    }
}

/// A pooled connection idle this long is pinged before use.
const IDLE_PING: Duration = Duration::from_secs(1);

/// Limits every statement of the serving pool is run under (`lock_timeout`,
/// `statement_timeout`), so that one locked account or one slow statement cannot hold a
/// connection, and the request waiting on it, indefinitely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub lock: Duration,
    pub statement: Duration,
}

/// Connects to the database named by `url`, creating the database first if it is missing.
pub async fn connect(
    url: &str,
    max_connections: u32,
    timeouts: Option<Timeouts>,
) -> Result<PgPool, SetupError> {
    let options = PgConnectOptions::from_str(url).map_err(SetupError::BadUrl)?;
    ensure_database(url, &options).await?;
    open_pool(url, max_connections, timeouts).await
}

/// A pool on the database named by `url`, its connections under `timeouts` if given.
pub async fn open_pool(
    url: &str,
    max_connections: u32,
    timeouts: Option<Timeouts>,
) -> Result<PgPool, SetupError> {
    let mut options = PgConnectOptions::from_str(url).map_err(SetupError::BadUrl)?;
    if let Some(t) = timeouts {
        options = options.options([
            ("lock_timeout", format!("{}ms", t.lock.as_millis())),
            (
                "statement_timeout",
                format!("{}ms", t.statement.as_millis()),
            ),
        ]);
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // sqlx pings a connection before handing it out (a round trip on every acquire) and again
        // when it comes back (which closes one an error broke). Only a connection that sat idle
        // can have been broken meanwhile (a database restart), so only that one is pinged first.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= IDLE_PING {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .map_err(|source| SetupError::Unreachable {
            url: redact_url(url),
            source,
        })
}

/// Applies the embedded migrations. Safe with several processes starting at once: sqlx holds an
/// advisory lock while it migrates.
pub async fn migrate(url: &str, pool: &PgPool) -> Result<(), SetupError> {
    MIGRATOR
        .run(pool)
        .await
        .map_err(|source| SetupError::Migrate {
            url: redact_url(url),
            source,
        })
}

async fn ensure_database(url: &str, options: &PgConnectOptions) -> Result<(), SetupError> {
    let database = options
        .get_database()
        .map(str::to_owned)
        .unwrap_or_else(|| options.get_username().to_owned());
    let maintenance = options.clone().database("postgres");
    let mut conn = tokio::time::timeout(
        Duration::from_secs(5),
        PgConnection::connect_with(&maintenance),
    )
    .await
    .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut))
    .map_err(|source| SetupError::Unreachable {
        url: redact_url(url),
        source,
    })?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&database)
            .fetch_one(&mut conn)
            .await
            .map_err(|source| SetupError::Unreachable {
                url: redact_url(url),
                source,
            })?;
    if !exists {
        let statement = format!("CREATE DATABASE \"{}\"", database.replace('"', "\"\""));
        if let Err(source) = sqlx::query(&statement).execute(&mut conn).await {
            // 42P04 duplicate_database: another process created it first.
            let raced = matches!(&source, sqlx::Error::Database(db) if db.code().as_deref() == Some("42P04"));
            if !raced {
                return Err(SetupError::CreateDatabase {
                    url: redact_url(url),
                    database,
                    source,
                });
            }
        } else {
            tracing::info!(%database, "created database");
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// Whether every embedded migration is applied (for `/readyz`).
pub async fn migrations_applied(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut *conn)
            .await?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .all(|m| applied.contains(&m.version)))
}
