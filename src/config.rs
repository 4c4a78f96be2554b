//! Configuration: every setting is an environment variable (or the command-line flag beside
//! it), with a documented default. `credit-ledger serve --help` lists them all; so does
//! README.md's settings table, and a test keeps the two in agreement.
//!
//! clap gathers the raw text of each setting (flag, else environment, else default); the
//! checks that turn it into a [`Config`] are ours, so an error names the environment variable
//! and says what it must be.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use clap::{Args, FromArgMatches};

use crate::unkey::UnkeySettings;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/credit_ledger";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_UNKEY_BASE_URL: &str = "https://api.unkey.com";
/// Every minute, at second 0.
pub const DEFAULT_SCHEDULE: &str = "0 * * * * *";
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,tower_http=info,tokio_cron_scheduler=warn";
/// `LEDGER_WEBHOOK_RETRY_SECONDS` when unset: [`crate::webhooks::DEFAULT_RETRY_SECONDS`] as text
/// (a test keeps the two equal).
const DEFAULT_WEBHOOK_RETRY_SECONDS: &str = "5,30,120,600,1800,7200,18000,36000,50400";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The settings as given: the text of each flag or environment variable, or its default. Read
/// by clap (`serve`, `migrate` and `audit` take them), checked by [`Config::from_settings`].
/// Secrets are never shown by `--help` (`hide_env_values`), and this type has no `Debug`.
#[derive(Args, Clone)]
pub struct Settings {
    /// PostgreSQL database; created if missing, migrated at start
    #[arg(long, env = "DATABASE_URL", value_name = "URL", default_value = DEFAULT_DATABASE_URL,
          hide_env_values = true, help_heading = "Database")]
    pub database_url: String,
    /// Size of the database connection pool (1-1000)
    #[arg(
        long,
        env = "LEDGER_DB_MAX_CONNECTIONS",
        value_name = "N",
        default_value = "20",
        help_heading = "Database"
    )]
    pub db_max_connections: String,
    /// How long a write waits for an account's row lock before 503 database_timeout (10-600000)
    #[arg(
        long,
        env = "LEDGER_DB_LOCK_TIMEOUT_MS",
        value_name = "MS",
        default_value = "2000",
        help_heading = "Database"
    )]
    pub db_lock_timeout_ms: String,
    /// The serving pool's statement_timeout (100-3600000); migrate and audit run without it
    #[arg(
        long,
        env = "LEDGER_DB_STATEMENT_TIMEOUT_MS",
        value_name = "MS",
        default_value = "10000",
        help_heading = "Database"
    )]
    pub db_statement_timeout_ms: String,
    /// Writer tasks, each with its share of the accounts and up to two transactions (1-64)
    #[arg(
        long,
        env = "LEDGER_WRITERS",
        value_name = "N",
        default_value = "2",
        help_heading = "Database"
    )]
    pub writers: String,
    /// The most writes one writer transaction takes (1-10000)
    #[arg(
        long,
        env = "LEDGER_WRITE_BATCH",
        value_name = "N",
        default_value = "256",
        help_heading = "Database"
    )]
    pub write_batch: String,

    /// Address the HTTP API listens on
    #[arg(long, env = "LEDGER_LISTEN", value_name = "ADDR", default_value = DEFAULT_LISTEN,
          help_heading = "HTTP")]
    pub listen: String,
    /// Base URL of the links the service hands out (default: http:// and LEDGER_LISTEN)
    #[arg(
        long,
        env = "LEDGER_PUBLIC_URL",
        value_name = "URL",
        help_heading = "HTTP"
    )]
    pub public_url: Option<String>,
    /// Where a customer out of credits can buy more, given in 402 credits_exhausted as
    /// top_up_url ({key_id} in it is replaced)
    #[arg(
        long,
        env = "LEDGER_TOP_UP_URL",
        value_name = "URL",
        help_heading = "HTTP"
    )]
    pub top_up_url: Option<String>,
    /// Comma-separated bearer tokens that may do everything
    #[arg(
        long,
        env = "LEDGER_ADMIN_TOKENS",
        value_name = "TOKENS",
        hide_env_values = true,
        help_heading = "HTTP"
    )]
    pub admin_tokens: Option<String>,
    /// Comma-separated bearer tokens that may debit, reserve, verify and read
    #[arg(
        long,
        env = "LEDGER_SERVICE_TOKENS",
        value_name = "TOKENS",
        hide_env_values = true,
        help_heading = "HTTP"
    )]
    pub service_tokens: Option<String>,
    /// A request that takes longer is answered 503 (1-3600; over twice the statement timeout plus 1 s)
    #[arg(
        long,
        env = "LEDGER_REQUEST_TIMEOUT_SECS",
        value_name = "SECS",
        default_value = "30",
        help_heading = "HTTP"
    )]
    pub request_timeout_secs: String,
    /// A client slower than this to send a request's headers is disconnected (1-300)
    #[arg(
        long,
        env = "LEDGER_HEADER_TIMEOUT_SECS",
        value_name = "SECS",
        default_value = "10",
        help_heading = "HTTP"
    )]
    pub header_timeout_secs: String,
    /// On SIGTERM or Ctrl-C, how long requests in flight may take before connections close (1-600)
    #[arg(
        long,
        env = "LEDGER_SHUTDOWN_GRACE_SECS",
        value_name = "SECS",
        default_value = "10",
        help_heading = "HTTP"
    )]
    pub shutdown_grace_secs: String,

    /// text (for people; coloured only on a terminal) or json (for log pipelines)
    #[arg(
        long,
        env = "LEDGER_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text",
        help_heading = "Logs and jobs"
    )]
    pub log_format: String,
    /// Log filter, in tracing's EnvFilter syntax
    #[arg(long, env = "RUST_LOG", value_name = "FILTER", default_value = DEFAULT_LOG_FILTER,
          help_heading = "Logs and jobs")]
    pub log_filter: String,
    /// When the maintenance job runs (cron with seconds): period rolls, expiries, old idempotency keys
    #[arg(long, env = "LEDGER_SCHEDULE", value_name = "CRON", default_value = DEFAULT_SCHEDULE,
          help_heading = "Logs and jobs")]
    pub schedule: String,

    /// Unkey root key for /v1/verify and /v1/me/*; without it they answer 503 auth_unavailable
    #[arg(
        long,
        env = "UNKEY_ROOT_KEY",
        value_name = "KEY",
        hide_env_values = true,
        help_heading = "Unkey"
    )]
    pub unkey_root_key: Option<String>,
    /// Unkey's API
    #[arg(long, env = "UNKEY_BASE_URL", value_name = "URL", default_value = DEFAULT_UNKEY_BASE_URL,
          help_heading = "Unkey")]
    pub unkey_base_url: String,
    /// Connect timeout for Unkey (10-10000)
    #[arg(
        long,
        env = "UNKEY_CONNECT_TIMEOUT_MS",
        value_name = "MS",
        default_value = "1000",
        help_heading = "Unkey"
    )]
    pub unkey_connect_timeout_ms: String,
    /// Timeout of one call to Unkey (10-10000)
    #[arg(
        long,
        env = "UNKEY_TIMEOUT_MS",
        value_name = "MS",
        default_value = "2000",
        help_heading = "Unkey"
    )]
    pub unkey_timeout_ms: String,
    /// Retries of a call that met a 429, a 5xx, a timeout or a connection error (0-3)
    #[arg(
        long,
        env = "UNKEY_RETRIES",
        value_name = "N",
        default_value = "1",
        help_heading = "Unkey"
    )]
    pub unkey_retries: String,
    /// The most one request waits on Unkey, all calls and retries together (10-30000)
    #[arg(
        long,
        env = "UNKEY_BUDGET_MS",
        value_name = "MS",
        default_value = "5000",
        help_heading = "Unkey"
    )]
    pub unkey_budget_ms: String,
    /// Plan of an auto-provisioned key whose Unkey meta.plan names none
    #[arg(
        long,
        env = "LEDGER_DEFAULT_PLAN",
        value_name = "PLAN",
        help_heading = "Unkey"
    )]
    pub default_plan: Option<String>,
    /// How long /v1/me/* reuse a positive verification of a customer key (0-30)
    #[arg(
        long,
        env = "LEDGER_KEY_CACHE_SECS",
        value_name = "SECS",
        default_value = "10",
        help_heading = "Unkey"
    )]
    pub key_cache_secs: String,

    /// Delays before each retry of a failed webhook delivery (1 to 50 of 1-604800 seconds)
    #[arg(long, env = "LEDGER_WEBHOOK_RETRY_SECONDS", value_name = "SECS,...",
          default_value = DEFAULT_WEBHOOK_RETRY_SECONDS, help_heading = "Webhooks")]
    pub webhook_retry_seconds: String,
    /// How often the delivery worker looks for due deliveries (10-60000)
    #[arg(
        long,
        env = "LEDGER_WEBHOOK_POLL_MS",
        value_name = "MS",
        default_value = "1000",
        help_heading = "Webhooks"
    )]
    pub webhook_poll_ms: String,
    /// Let webhook endpoints be on loopback, private, link-local or reserved addresses (true or false)
    #[arg(
        long,
        env = "LEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS",
        value_name = "BOOL",
        default_value = "false",
        help_heading = "Webhooks"
    )]
    pub webhook_allow_private_networks: String,
    /// Keys sealing webhook secrets at rest: 32 bytes as base64 or 64 hex digits, comma-separated
    #[arg(
        long,
        env = "LEDGER_SECRETS_KEY",
        value_name = "KEYS",
        hide_env_values = true,
        help_heading = "Webhooks"
    )]
    pub secrets_key: Option<String>,
    /// Send webhooks from this process; false records deliveries for another process to send
    #[arg(
        long,
        env = "LEDGER_WEBHOOK_DELIVERY",
        value_name = "BOOL",
        default_value = "true",
        help_heading = "Webhooks"
    )]
    pub webhook_delivery: String,

    /// Stripe secret key (sk_...): lets checkout sessions sell packs
    #[arg(
        long,
        env = "STRIPE_SECRET_KEY",
        value_name = "KEY",
        hide_env_values = true,
        help_heading = "Stripe"
    )]
    pub stripe_secret_key: Option<String>,
    /// Signing secret (whsec_...) of the Stripe webhook endpoint at POST /v1/stripe/webhook
    #[arg(
        long,
        env = "STRIPE_WEBHOOK_SECRET",
        value_name = "SECRET",
        hide_env_values = true,
        help_heading = "Stripe"
    )]
    pub stripe_webhook_secret: Option<String>,
    /// Stripe's API
    #[arg(long, env = "STRIPE_API_BASE", value_name = "URL",
          default_value = crate::stripe::DEFAULT_API_BASE, help_heading = "Stripe")]
    pub stripe_api_base: String,
    /// The event_name of the Stripe meter that overage is reported to
    #[arg(long, env = "STRIPE_METER_EVENT_NAME", value_name = "NAME",
          default_value = crate::stripe::DEFAULT_METER_EVENT_NAME, help_heading = "Stripe")]
    pub stripe_meter_event_name: String,
    /// The most one call to Stripe may take (100-120000)
    #[arg(
        long,
        env = "STRIPE_TIMEOUT_MS",
        value_name = "MS",
        default_value = "20000",
        help_heading = "Stripe"
    )]
    pub stripe_timeout_ms: String,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// `DATABASE_URL`
    pub database_url: String,
    /// `LEDGER_LISTEN`
    pub listen: SocketAddr,
    /// `LEDGER_PUBLIC_URL`: the base of the links the service hands out, an absolute http(s)
    /// URL without a trailing slash, query or fragment; `http://` and the listen address by
    /// default.
    pub public_url: String,
    /// `LEDGER_TOP_UP_URL`: where a customer out of credits can buy more (`{key_id}` in it is
    /// replaced by the account's key); the 402 `credits_exhausted` gives it as `top_up_url`.
    pub top_up_url: Option<String>,
    /// `LEDGER_ADMIN_TOKENS`, comma-separated
    pub admin_tokens: Vec<String>,
    /// `LEDGER_SERVICE_TOKENS`, comma-separated
    pub service_tokens: Vec<String>,
    /// `LEDGER_DB_MAX_CONNECTIONS`
    pub db_max_connections: u32,
    /// `LEDGER_DB_LOCK_TIMEOUT_MS` and `LEDGER_DB_STATEMENT_TIMEOUT_MS`: the serving pool's
    /// `lock_timeout` and `statement_timeout`.
    pub db_timeouts: crate::db::Timeouts,
    /// `LEDGER_WRITERS`: writer tasks, each with its shard of the accounts (1 to 64).
    pub writers: usize,
    /// `LEDGER_WRITE_BATCH`: the most commands one writer transaction takes (1 to 10000).
    pub write_batch: usize,
    /// `LEDGER_REQUEST_TIMEOUT_SECS`
    pub request_timeout: Duration,
    /// `LEDGER_HEADER_TIMEOUT_SECS`: how long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// `LEDGER_SHUTDOWN_GRACE_SECS`: after a shutdown signal, how long requests in flight may
    /// take before the connections still open are closed.
    pub shutdown_grace: Duration,
    /// `LEDGER_LOG_FORMAT`: `text` or `json`
    pub log_format: LogFormat,
    /// `RUST_LOG`: the log filter.
    pub log_filter: String,
    /// `LEDGER_SCHEDULE`: when the maintenance job runs (cron with seconds)
    pub schedule: String,
    /// `UNKEY_ROOT_KEY` and friends; `None` when no root key is set (the Unkey routes then
    /// answer 503 naming the setting).
    pub unkey: Option<UnkeySettings>,
    /// `LEDGER_DEFAULT_PLAN`: the plan of an auto-provisioned key whose Unkey meta names none.
    pub default_plan: Option<String>,
    /// `LEDGER_KEY_CACHE_SECS`: how long a positive verification of a customer key is reused by
    /// `/v1/me/*` (0 to 30).
    pub key_cache: Duration,
    /// `LEDGER_WEBHOOK_RETRY_SECONDS`: the delays before each retry of a failed webhook delivery.
    pub webhook_retry: Vec<Duration>,
    /// `LEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS`: webhook endpoints may be on loopback, private or
    /// link-local addresses (default false).
    pub webhook_allow_private: bool,
    /// `LEDGER_WEBHOOK_POLL_MS`: how often the delivery worker looks for due deliveries.
    pub webhook_poll: Duration,
    /// `LEDGER_SECRETS_KEY`: the keys that seal webhook signing secrets at rest (the first seals,
    /// all open); `None` when unset, and then no webhook endpoint can be created.
    pub secrets_key: Option<crate::webhooks::sealed::SecretKeys>,
    /// `STRIPE_SECRET_KEY`, `STRIPE_API_BASE`, `STRIPE_WEBHOOK_SECRET`, `STRIPE_METER_EVENT_NAME`:
    /// all optional; without them the Stripe routes answer `503 billing_unavailable`.
    pub stripe: crate::stripe::StripeSettings,
    /// `LEDGER_WEBHOOK_DELIVERY`: whether this process runs the delivery worker (default true).
    /// Off, events and their deliveries are still recorded and wait for a process that delivers.
    pub webhook_delivery: bool,
}

impl std::fmt::Debug for Config {
    // Tokens and the database password never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &crate::db::redact_url(&self.database_url))
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("top_up_url", &self.top_up_url)
            .field("admin_tokens", &self.admin_tokens.len())
            .field("service_tokens", &self.service_tokens.len())
            .field("db_max_connections", &self.db_max_connections)
            .field("db_timeouts", &self.db_timeouts)
            .field("writers", &self.writers)
            .field("write_batch", &self.write_batch)
            .field("request_timeout", &self.request_timeout)
            .field("header_timeout", &self.header_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .field("schedule", &self.schedule)
            .field(
                "unkey_base_url",
                &self.unkey.as_ref().map(|u| u.base_url.clone()),
            )
            .field("unkey_root_key", &self.unkey.as_ref().map(|_| "***"))
            .field("default_plan", &self.default_plan)
            .field("key_cache", &self.key_cache)
            .field("webhook_retry", &self.webhook_retry)
            .field("webhook_poll", &self.webhook_poll)
            .field("webhook_delivery", &self.webhook_delivery)
            .field("secrets_key", &self.secrets_key)
            .field("stripe", &self.stripe)
            .finish()
    }
}

/// A setting that does not hold: `name` is its environment variable. Displayed as one line,
/// e.g. `LEDGER_WRITERS must be a whole number from 1 to 64, got 'x'`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{name} {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub reason: String,
}

impl ConfigError {
    fn new(name: &'static str, reason: impl Into<String>) -> Self {
        Self {
            name,
            reason: reason.into(),
        }
    }
}

fn tokens(value: Option<String>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An optional setting given as blank is not given.
fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// A whole number within `range`.
fn whole<T>(name: &'static str, raw: &str, range: RangeInclusive<T>) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    raw.trim()
        .parse::<T>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ConfigError::new(
                name,
                format!(
                    "must be a whole number from {} to {}, got '{raw}'",
                    range.start(),
                    range.end()
                ),
            )
        })
}

fn millis(
    name: &'static str,
    raw: &str,
    range: RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    whole(name, raw, range).map(Duration::from_millis)
}

fn seconds(
    name: &'static str,
    raw: &str,
    range: RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    whole(name, raw, range).map(Duration::from_secs)
}

/// A boolean setting: `true`/`1` or `false`/`0`.
fn flag(name: &'static str, raw: &str) -> Result<bool, ConfigError> {
    match raw.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(ConfigError::new(
            name,
            format!("must be true or false, got '{other}'"),
        )),
    }
}

/// An absolute http(s) URL with a host, as text without a trailing slash.
fn http_url(raw: &str) -> Option<url::Url> {
    url::Url::parse(raw.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// `LEDGER_TOP_UP_URL`: an absolute http(s) URL, shown to customers, so without credentials.
fn top_up_url(raw: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(raw) = present(raw) else {
        return Ok(None);
    };
    // `{key_id}` is not valid in every part of a URL: check the URL with a key in its place.
    let probe = raw.trim().replace("{key_id}", "key_123");
    match http_url(&probe) {
        Some(url) if url.username().is_empty() && url.password().is_none() => {
            Ok(Some(raw.trim().to_owned()))
        }
        _ => Err(ConfigError::new(
            "LEDGER_TOP_UP_URL",
            format!(
                "must be an absolute http(s) URL without credentials, such as https://app.example.com/billing?key={{key_id}}, got '{raw}'"
            ),
        )),
    }
}

/// `LEDGER_PUBLIC_URL`: links are made by appending paths to it, so it has no query, fragment
/// or credentials, and no trailing slash.
fn public_url(raw: Option<String>, listen: SocketAddr) -> Result<String, ConfigError> {
    const NAME: &str = "LEDGER_PUBLIC_URL";
    let Some(raw) = present(raw) else {
        return Ok(format!("http://{listen}"));
    };
    let url = http_url(&raw).ok_or_else(|| {
        ConfigError::new(
            NAME,
            format!(
                "must be an absolute http(s) URL such as https://ledger.example.com, got '{raw}'"
            ),
        )
    })?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            NAME,
            format!("must have no query (?) or fragment (#): links are made by appending paths to it, got '{raw}'"),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(
            NAME,
            "must not carry credentials: it is shown to customers in links",
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Time kept, beyond two statement timeouts, between a write's batch beginning and the request's
/// own timeout.
const WRITE_SLACK: Duration = Duration::from_secs(1);

impl Config {
    /// How soon a write's batch must begin for it to finish before the request times out: a
    /// batch is two statements, each bounded by the statement timeout. A write not begun by then
    /// is answered `503 database_timeout`, unapplied, rather than cut off by the request's
    /// timeout and committed after its caller was told it failed.
    pub fn write_start_within(&self) -> Duration {
        self.request_timeout
            .saturating_sub(self.db_timeouts.statement * 2 + WRITE_SLACK)
    }

    /// Reads configuration through `lookup` (environment variable name → value) and nothing
    /// else, so tests need not touch the process environment: the values found become the
    /// command line clap reads, with its reading of the environment turned off.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let command = Settings::augment_args(clap::Command::new("credit-ledger"))
            .no_binary_name(true)
            .mut_args(|arg| arg.env(None::<&'static str>));
        let mut args = Vec::new();
        for (long, env) in setting_names() {
            if let Some(value) = lookup(&env).filter(|v| !v.is_empty()) {
                args.push(format!("--{long}={value}"));
            }
        }
        let settings = command
            .try_get_matches_from(args)
            .and_then(|matches| Settings::from_arg_matches(&matches))
            .map_err(|e| ConfigError::new("settings", e.to_string()))?;
        Self::from_settings(settings)
    }

    /// Checks the settings as given and makes them a configuration.
    pub fn from_settings(s: Settings) -> Result<Self, ConfigError> {
        let listen: SocketAddr = s.listen.trim().parse().map_err(|_| {
            ConfigError::new(
                "LEDGER_LISTEN",
                format!(
                    "must be an address such as 127.0.0.1:8080, got '{}'",
                    s.listen
                ),
            )
        })?;
        let log_format = match s.log_format.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::new(
                    "LEDGER_LOG_FORMAT",
                    format!("must be text or json, got '{other}'"),
                ))
            }
        };
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&s.log_filter) {
            return Err(ConfigError::new(
                "RUST_LOG",
                format!(
                    "must be a log filter such as info,sqlx=warn ({err}), got '{}'",
                    s.log_filter
                ),
            ));
        }
        let config = Config {
            database_url: s.database_url,
            public_url: public_url(s.public_url, listen)?,
            top_up_url: top_up_url(s.top_up_url)?,
            listen,
            admin_tokens: tokens(s.admin_tokens),
            service_tokens: tokens(s.service_tokens),
            db_max_connections: whole("LEDGER_DB_MAX_CONNECTIONS", &s.db_max_connections, 1..=1000)?,
            db_timeouts: crate::db::Timeouts {
                lock: millis("LEDGER_DB_LOCK_TIMEOUT_MS", &s.db_lock_timeout_ms, 10..=600_000)?,
                statement: millis(
                    "LEDGER_DB_STATEMENT_TIMEOUT_MS",
                    &s.db_statement_timeout_ms,
                    100..=3_600_000,
                )?,
            },
            writers: whole("LEDGER_WRITERS", &s.writers, 1..=64)?,
            write_batch: whole("LEDGER_WRITE_BATCH", &s.write_batch, 1..=10_000)?,
            request_timeout: seconds("LEDGER_REQUEST_TIMEOUT_SECS", &s.request_timeout_secs, 1..=3600)?,
            header_timeout: seconds("LEDGER_HEADER_TIMEOUT_SECS", &s.header_timeout_secs, 1..=300)?,
            shutdown_grace: seconds("LEDGER_SHUTDOWN_GRACE_SECS", &s.shutdown_grace_secs, 1..=600)?,
            log_format,
            log_filter: s.log_filter,
            schedule: s.schedule,
            unkey: match present(s.unkey_root_key) {
                None => None,
                Some(root_key) => Some(UnkeySettings {
                    base_url: s.unkey_base_url,
                    root_key,
                    connect_timeout: millis(
                        "UNKEY_CONNECT_TIMEOUT_MS",
                        &s.unkey_connect_timeout_ms,
                        10..=10_000,
                    )?,
                    timeout: millis("UNKEY_TIMEOUT_MS", &s.unkey_timeout_ms, 10..=10_000)?,
                    retries: whole("UNKEY_RETRIES", &s.unkey_retries, 0..=3)?,
                    budget: millis("UNKEY_BUDGET_MS", &s.unkey_budget_ms, 10..=30_000)?,
                }),
            },
            default_plan: present(s.default_plan),
            webhook_allow_private: flag(
                "LEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS",
                &s.webhook_allow_private_networks,
            )?,
            secrets_key: present(s.secrets_key)
                .map(|raw| {
                    crate::webhooks::sealed::SecretKeys::parse(&raw)
                        .map_err(|reason| ConfigError::new("LEDGER_SECRETS_KEY", format!("is not usable: {reason}")))
                })
                .transpose()?,
            stripe: crate::stripe::StripeSettings {
                secret_key: present(s.stripe_secret_key),
                api_base: http_url(&s.stripe_api_base)
                    .map(|_| s.stripe_api_base.trim().trim_end_matches('/').to_owned())
                    .ok_or_else(|| {
                        ConfigError::new(
                            "STRIPE_API_BASE",
                            format!("must be an absolute http(s) URL, got '{}'", s.stripe_api_base),
                        )
                    })?,
                webhook_secret: present(s.stripe_webhook_secret),
                timeout: millis("STRIPE_TIMEOUT_MS", &s.stripe_timeout_ms, 100..=120_000)?,
                meter_event_name: {
                    let name = s.stripe_meter_event_name;
                    if !name.is_empty()
                        && name.len() <= 100
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        name
                    } else {
                        return Err(ConfigError::new(
                            "STRIPE_METER_EVENT_NAME",
                            format!("must be 1 to 100 letters, digits, '_' or '-', got '{name}'"),
                        ));
                    }
                },
            },
            webhook_delivery: flag("LEDGER_WEBHOOK_DELIVERY", &s.webhook_delivery)?,
            webhook_retry: s
                .webhook_retry_seconds
                .split(',')
                .map(|n| n.trim().parse::<u64>().ok().filter(|n| (1..=7 * 86_400).contains(n)))
                .collect::<Option<Vec<u64>>>()
                .filter(|list| !list.is_empty() && list.len() <= 50)
                .ok_or_else(|| {
                    ConfigError::new(
                        "LEDGER_WEBHOOK_RETRY_SECONDS",
                        format!(
                            "must be a comma-separated list of 1 to 50 delays of 1 to 604800 seconds, got '{}'",
                            s.webhook_retry_seconds
                        ),
                    )
                })?
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            webhook_poll: millis("LEDGER_WEBHOOK_POLL_MS", &s.webhook_poll_ms, 10..=60_000)?,
            key_cache: seconds("LEDGER_KEY_CACHE_SECS", &s.key_cache_secs, 0..=30)?,
        };
        if config.write_start_within().is_zero() {
            return Err(ConfigError::new(
                "LEDGER_REQUEST_TIMEOUT_SECS",
                format!(
                    "({} s) leaves no time to begin a write: it must exceed twice LEDGER_DB_STATEMENT_TIMEOUT_MS ({} ms) by more than a second",
                    config.request_timeout.as_secs(),
                    config.db_timeouts.statement.as_millis()
                ),
            ));
        }
        Ok(config)
    }
}

/// Every setting as (flag without `--`, environment variable), in the order `--help` lists them.
pub fn setting_names() -> Vec<(String, String)> {
    Settings::augment_args(clap::Command::new("credit-ledger"))
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_owned();
            Some((arg.get_long()?.to_owned(), env))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(config.admin_tokens.is_empty());
        assert_eq!(config.db_max_connections, 20);
        assert_eq!((config.writers, config.write_batch), (2, 256));
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        assert_eq!(
            config.db_timeouts,
            crate::db::Timeouts {
                lock: Duration::from_millis(2000),
                statement: Duration::from_secs(10)
            }
        );
        assert_eq!(
            (config.header_timeout, config.shutdown_grace),
            (Duration::from_secs(10), Duration::from_secs(10))
        );
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.log_filter, DEFAULT_LOG_FILTER);
        assert_eq!(config.schedule, DEFAULT_SCHEDULE);
        assert_eq!(config.public_url, "http://127.0.0.1:8080");
        assert!(config.unkey.is_none());
        assert_eq!(config.key_cache, Duration::from_secs(10));
        assert_eq!(config.webhook_retry.len(), 9);
        assert_eq!(config.webhook_retry[0], Duration::from_secs(5));
        let total: Duration = config.webhook_retry.iter().sum();
        assert!(total >= Duration::from_secs(86_400), "retries span a day");
        assert!(config.webhook_delivery && !config.webhook_allow_private);
        assert!(config.stripe.secret_key.is_none() && config.stripe.webhook_secret.is_none());
        assert_eq!(config.stripe.api_base, "https://api.stripe.com");
        assert_eq!(config.stripe.meter_event_name, "credit_overage");
    }

    #[test]
    fn stripe_settings_are_checked_and_their_secrets_never_printed() {
        let config = parse(&[
            ("STRIPE_SECRET_KEY", "sk_test_hidden"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_hidden"),
            ("STRIPE_API_BASE", "http://127.0.0.1:9/"),
        ])
        .unwrap();
        assert_eq!(config.stripe.api_base, "http://127.0.0.1:9");
        let printed = format!("{config:?}");
        assert!(!printed.contains("hidden"), "{printed}");
        assert_eq!(
            parse(&[("STRIPE_API_BASE", "stripe")]).unwrap_err().name,
            "STRIPE_API_BASE"
        );
        assert_eq!(
            parse(&[("STRIPE_METER_EVENT_NAME", "bad name")])
                .unwrap_err()
                .name,
            "STRIPE_METER_EVENT_NAME"
        );
    }

    #[test]
    fn boolean_settings_take_true_or_false_and_name_themselves_otherwise() {
        assert!(
            !parse(&[("LEDGER_WEBHOOK_DELIVERY", "false")])
                .unwrap()
                .webhook_delivery
        );
        assert!(
            parse(&[("LEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "1")])
                .unwrap()
                .webhook_allow_private
        );
        let err = parse(&[("LEDGER_WEBHOOK_DELIVERY", "off")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "LEDGER_WEBHOOK_DELIVERY must be true or false, got 'off'"
        );
    }

    #[test]
    fn a_write_must_have_time_to_begin_and_finish_within_the_request_timeout() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.write_start_within(), Duration::from_secs(9));
        let err = parse(&[
            ("LEDGER_REQUEST_TIMEOUT_SECS", "5"),
            ("LEDGER_DB_STATEMENT_TIMEOUT_MS", "2000"),
        ])
        .unwrap_err();
        assert_eq!(err.name, "LEDGER_REQUEST_TIMEOUT_SECS");
        assert!(parse(&[
            ("LEDGER_REQUEST_TIMEOUT_SECS", "5"),
            ("LEDGER_DB_STATEMENT_TIMEOUT_MS", "1000"),
        ])
        .is_ok());
    }

    #[test]
    fn tokens_are_comma_separated_and_trimmed() {
        let config = parse(&[
            ("LEDGER_ADMIN_TOKENS", " a1 ,a2,,"),
            ("LEDGER_SERVICE_TOKENS", "s1"),
        ])
        .unwrap();
        assert_eq!(config.admin_tokens, vec!["a1", "a2"]);
        assert_eq!(config.service_tokens, vec!["s1"]);
    }

    #[test]
    fn bad_values_name_the_setting() {
        assert_eq!(
            parse(&[("LEDGER_LISTEN", "nowhere")]).unwrap_err().name,
            "LEDGER_LISTEN"
        );
        assert_eq!(
            parse(&[("LEDGER_DB_MAX_CONNECTIONS", "0")])
                .unwrap_err()
                .name,
            "LEDGER_DB_MAX_CONNECTIONS"
        );
        assert_eq!(
            parse(&[("LEDGER_LOG_FORMAT", "xml")]).unwrap_err().name,
            "LEDGER_LOG_FORMAT"
        );
        assert_eq!(
            parse(&[("RUST_LOG", "info,[")]).unwrap_err().name,
            "RUST_LOG"
        );
    }

    #[test]
    fn an_error_says_what_the_setting_must_be_and_what_it_got() {
        assert_eq!(
            parse(&[("LEDGER_WRITERS", "x")]).unwrap_err().to_string(),
            "LEDGER_WRITERS must be a whole number from 1 to 64, got 'x'"
        );
        assert_eq!(
            parse(&[("LEDGER_WRITERS", "65")]).unwrap_err().to_string(),
            "LEDGER_WRITERS must be a whole number from 1 to 64, got '65'"
        );
        assert_eq!(
            parse(&[("LEDGER_LISTEN", "nowhere")])
                .unwrap_err()
                .to_string(),
            "LEDGER_LISTEN must be an address such as 127.0.0.1:8080, got 'nowhere'"
        );
    }

    #[test]
    fn the_top_up_url_is_optional_and_must_be_an_http_url() {
        assert_eq!(parse(&[]).unwrap().top_up_url, None);
        let set = parse(&[(
            "LEDGER_TOP_UP_URL",
            "https://app.example.com/buy?key={key_id}",
        )]);
        assert_eq!(
            set.unwrap().top_up_url.as_deref(),
            Some("https://app.example.com/buy?key={key_id}")
        );
        for bad in ["/buy", "ftp://x.example/{key_id}", "https://u:p@x.example/"] {
            let err = parse(&[("LEDGER_TOP_UP_URL", bad)]).unwrap_err();
            assert_eq!(err.name, "LEDGER_TOP_UP_URL", "{bad}");
        }
    }

    #[test]
    fn the_public_url_defaults_to_the_listen_address_and_must_be_a_plain_http_url() {
        assert_eq!(
            parse(&[("LEDGER_LISTEN", "0.0.0.0:9000")])
                .unwrap()
                .public_url,
            "http://0.0.0.0:9000"
        );
        for (given, kept) in [
            ("https://ledger.example.com/", "https://ledger.example.com"),
            ("https://example.com/ledger/", "https://example.com/ledger"),
            ("http://10.0.0.5:8080", "http://10.0.0.5:8080"),
        ] {
            assert_eq!(
                parse(&[("LEDGER_PUBLIC_URL", given)]).unwrap().public_url,
                kept
            );
        }
        for bad in [
            "ledger.example.com",
            "/portal",
            "ftp://example.com",
            "https://example.com/?a=1",
            "https://example.com/#top",
            "https://user:pw@example.com",
        ] {
            let err = parse(&[("LEDGER_PUBLIC_URL", bad)]).unwrap_err();
            assert_eq!(err.name, "LEDGER_PUBLIC_URL", "{bad}");
        }
    }

    #[test]
    fn the_default_retry_delays_are_the_webhook_workers_own() {
        let config = parse(&[]).unwrap();
        let seconds: Vec<u64> = config.webhook_retry.iter().map(Duration::as_secs).collect();
        assert_eq!(seconds, crate::webhooks::DEFAULT_RETRY_SECONDS);
    }

    /// The rows of README.md's settings table: (variable, default as written).
    fn readme_settings() -> Vec<(String, String)> {
        let readme = include_str!("../README.md");
        let table = readme
            .split("## Configuration")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("README has a Configuration section");
        table
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split(" | ").collect();
                let name = cells.first()?.strip_prefix("| `")?.strip_suffix('`')?;
                let default = cells.get(1)?.trim();
                let default = default
                    .strip_prefix('`')
                    .and_then(|d| d.strip_suffix('`'))
                    .unwrap_or(default);
                Some((name.to_owned(), default.to_owned()))
            })
            .collect()
    }

    #[test]
    fn the_readme_lists_every_setting_with_its_default_and_nothing_else() {
        let command = Settings::augment_args(clap::Command::new("credit-ledger"));
        let settings: Vec<(String, String)> = command
            .get_arguments()
            .filter_map(|arg| {
                let env = arg.get_env()?.to_str()?.to_owned();
                let default = match arg.get_default_values() {
                    [] => "(none)".to_owned(),
                    [one] => one.to_str()?.to_owned(),
                    _ => return None,
                };
                Some((env, default))
            })
            .collect();
        let mut readme = readme_settings();
        readme.sort();
        let mut ours = settings.clone();
        ours.sort();
        // LEDGER_PUBLIC_URL's default is derived from LEDGER_LISTEN; the README says how.
        for (name, default) in &mut readme {
            if name == "LEDGER_PUBLIC_URL" {
                assert!(default.contains("LEDGER_LISTEN"), "{default}");
                *default = "(none)".to_owned();
            }
        }
        assert_eq!(readme, ours);
    }

    #[test]
    fn unkey_settings_come_with_the_root_key() {
        let config = parse(&[
            ("UNKEY_ROOT_KEY", "unkey_root"),
            ("UNKEY_TIMEOUT_MS", "1500"),
        ])
        .unwrap();
        let unkey = config.unkey.unwrap();
        assert_eq!(unkey.base_url, DEFAULT_UNKEY_BASE_URL);
        assert_eq!(unkey.timeout, Duration::from_millis(1500));
        assert_eq!(unkey.retries, 1);
        assert_eq!(
            parse(&[("UNKEY_ROOT_KEY", "k"), ("UNKEY_RETRIES", "9")])
                .unwrap_err()
                .name,
            "UNKEY_RETRIES"
        );
        assert_eq!(
            parse(&[("LEDGER_KEY_CACHE_SECS", "31")]).unwrap_err().name,
            "LEDGER_KEY_CACHE_SECS"
        );
        assert_eq!(
            parse(&[("LEDGER_WEBHOOK_RETRY_SECONDS", "5,0,60")])
                .unwrap_err()
                .name,
            "LEDGER_WEBHOOK_RETRY_SECONDS"
        );
        assert_eq!(
            parse(&[("LEDGER_WEBHOOK_RETRY_SECONDS", "1, 2,3")])
                .unwrap()
                .webhook_retry
                .len(),
            3
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = parse(&[
            ("DATABASE_URL", "postgres://u:hunter2@db/x"),
            ("LEDGER_ADMIN_TOKENS", "topsecret"),
            ("UNKEY_ROOT_KEY", "unkey_root_secret"),
        ])
        .unwrap();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("topsecret"),
            "{shown}"
        );
    }
}
