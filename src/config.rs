//! Configuration, from the environment. Every setting has a documented default (README.md).

use std::net::SocketAddr;
use std::time::Duration;

use crate::unkey::UnkeySettings;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/credit_ledger";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_UNKEY_BASE_URL: &str = "https://api.unkey.com";
/// Every minute, at second 0.
pub const DEFAULT_SCHEDULE: &str = "0 * * * * *";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// `DATABASE_URL`
    pub database_url: String,
    /// `LEDGER_LISTEN`
    pub listen: SocketAddr,
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
    /// `LEDGER_PUBLIC_URL`: the base of the links the service hands out (customer portal
    /// links), without a trailing slash; default `http://` and the listen address.
    pub public_url: String,
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
            .field("schedule", &self.schedule)
            .field(
                "unkey_base_url",
                &self.unkey.as_ref().map(|u| u.base_url.clone()),
            )
            .field("unkey_root_key", &self.unkey.as_ref().map(|_| "***"))
            .field("default_plan", &self.default_plan)
            .field("public_url", &self.public_url)
            .field("key_cache", &self.key_cache)
            .field("webhook_retry", &self.webhook_retry)
            .field("webhook_poll", &self.webhook_poll)
            .field("webhook_delivery", &self.webhook_delivery)
            .field("secrets_key", &self.secrets_key)
            .field("stripe", &self.stripe)
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{name}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub reason: String,
}

/// An absolute http(s) base URL without query or fragment, with no trailing slash.
fn public_url(raw: &str) -> Option<String> {
    let url = url::Url::parse(raw.trim()).ok()?;
    let fits = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.query().is_none()
        && url.fragment().is_none();
    fits.then(|| url.as_str().trim_end_matches('/').to_owned())
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

fn number<T: std::str::FromStr>(
    name: &'static str,
    value: Option<String>,
    default: T,
    valid: impl Fn(&T) -> bool,
) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse::<T>()
            .ok()
            .filter(|v| valid(v))
            .ok_or_else(|| ConfigError {
                name,
                reason: format!("{raw:?} is not a valid value"),
            }),
    }
}

/// A boolean setting: `true`/`1` or `false`/`0`, `default` when unset.
fn flag(name: &'static str, value: Option<String>, default: bool) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::trim) {
        None => Ok(default),
        Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => Err(ConfigError {
            name,
            reason: format!("{other:?} is neither true nor false"),
        }),
    }
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

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Reads configuration through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let listen_raw = lookup("LEDGER_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_raw.parse().map_err(|_| ConfigError {
            name: "LEDGER_LISTEN",
            reason: format!("{listen_raw:?} is not an address like 127.0.0.1:8080"),
        })?;
        let log_format = match lookup("LEDGER_LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError {
                    name: "LEDGER_LOG_FORMAT",
                    reason: format!("{other:?} is neither text nor json"),
                })
            }
        };
        let config = Config {
            database_url: lookup("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            listen,
            admin_tokens: tokens(lookup("LEDGER_ADMIN_TOKENS")),
            service_tokens: tokens(lookup("LEDGER_SERVICE_TOKENS")),
            db_max_connections: number(
                "LEDGER_DB_MAX_CONNECTIONS",
                lookup("LEDGER_DB_MAX_CONNECTIONS"),
                20,
                |n| (1..=1000).contains(n),
            )?,
            db_timeouts: crate::db::Timeouts {
                lock: Duration::from_millis(number(
                    "LEDGER_DB_LOCK_TIMEOUT_MS",
                    lookup("LEDGER_DB_LOCK_TIMEOUT_MS"),
                    2000,
                    |n| (10..=600_000).contains(n),
                )?),
                statement: Duration::from_millis(number(
                    "LEDGER_DB_STATEMENT_TIMEOUT_MS",
                    lookup("LEDGER_DB_STATEMENT_TIMEOUT_MS"),
                    10_000,
                    |n| (100..=3_600_000).contains(n),
                )?),
            },
            writers: number("LEDGER_WRITERS", lookup("LEDGER_WRITERS"), 2, |n| {
                (1..=64).contains(n)
            })?,
            write_batch: number(
                "LEDGER_WRITE_BATCH",
                lookup("LEDGER_WRITE_BATCH"),
                256,
                |n| (1..=10_000).contains(n),
            )?,
            request_timeout: Duration::from_secs(number(
                "LEDGER_REQUEST_TIMEOUT_SECS",
                lookup("LEDGER_REQUEST_TIMEOUT_SECS"),
                30,
                |n| (1..=3600).contains(n),
            )?),
            header_timeout: Duration::from_secs(number(
                "LEDGER_HEADER_TIMEOUT_SECS",
                lookup("LEDGER_HEADER_TIMEOUT_SECS"),
                10,
                |n| (1..=300).contains(n),
            )?),
            shutdown_grace: Duration::from_secs(number(
                "LEDGER_SHUTDOWN_GRACE_SECS",
                lookup("LEDGER_SHUTDOWN_GRACE_SECS"),
                10,
                |n| (1..=600).contains(n),
            )?),
            log_format,
            schedule: lookup("LEDGER_SCHEDULE").unwrap_or_else(|| DEFAULT_SCHEDULE.to_owned()),
            unkey: match lookup("UNKEY_ROOT_KEY") {
                None => None,
                Some(root_key) => Some(UnkeySettings {
                    base_url: lookup("UNKEY_BASE_URL")
                        .unwrap_or_else(|| DEFAULT_UNKEY_BASE_URL.to_owned()),
                    root_key,
                    connect_timeout: Duration::from_millis(number(
                        "UNKEY_CONNECT_TIMEOUT_MS",
                        lookup("UNKEY_CONNECT_TIMEOUT_MS"),
                        1000,
                        |n| (10..=10_000).contains(n),
                    )?),
                    timeout: Duration::from_millis(number(
                        "UNKEY_TIMEOUT_MS",
                        lookup("UNKEY_TIMEOUT_MS"),
                        2000,
                        |n| (10..=10_000).contains(n),
                    )?),
                    retries: number("UNKEY_RETRIES", lookup("UNKEY_RETRIES"), 1, |n| {
                        (0..=3).contains(n)
                    })?,
                    budget: Duration::from_millis(number(
                        "UNKEY_BUDGET_MS",
                        lookup("UNKEY_BUDGET_MS"),
                        5000,
                        |n| (10..=30_000).contains(n),
                    )?),
                }),
            },
            default_plan: lookup("LEDGER_DEFAULT_PLAN"),
            public_url: match lookup("LEDGER_PUBLIC_URL") {
                None => format!("http://{listen}"),
                Some(raw) => public_url(&raw).ok_or_else(|| ConfigError {
                    name: "LEDGER_PUBLIC_URL",
                    reason: format!(
                        "must be an absolute http(s) URL without a query or fragment, such as https://ledger.example.com, got '{raw}'"
                    ),
                })?,
            },
            webhook_allow_private: flag(
                "LEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS",
                lookup("LEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS"),
                false,
            )?,
            secrets_key: lookup("LEDGER_SECRETS_KEY")
                .filter(|raw| !raw.trim().is_empty())
                .map(|raw| {
                    crate::webhooks::sealed::SecretKeys::parse(&raw).map_err(|reason| {
                        ConfigError {
                            name: "LEDGER_SECRETS_KEY",
                            reason,
                        }
                    })
                })
                .transpose()?,
            stripe: crate::stripe::StripeSettings {
                secret_key: lookup("STRIPE_SECRET_KEY").filter(|k| !k.trim().is_empty()),
                api_base: match lookup("STRIPE_API_BASE") {
                    None => crate::stripe::DEFAULT_API_BASE.to_owned(),
                    Some(raw) => reqwest::Url::parse(&raw)
                        .ok()
                        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                        .map(|_| raw.trim_end_matches('/').to_owned())
                        .ok_or_else(|| ConfigError {
                            name: "STRIPE_API_BASE",
                            reason: format!("{raw:?} is not an http(s) URL"),
                        })?,
                },
                webhook_secret: lookup("STRIPE_WEBHOOK_SECRET").filter(|k| !k.trim().is_empty()),
                timeout: Duration::from_millis(number(
                    "STRIPE_TIMEOUT_MS",
                    lookup("STRIPE_TIMEOUT_MS"),
                    20_000,
                    |n| (100..=120_000).contains(n),
                )?),
                meter_event_name: match lookup("STRIPE_METER_EVENT_NAME") {
                    None => crate::stripe::DEFAULT_METER_EVENT_NAME.to_owned(),
                    Some(name)
                        if !name.is_empty()
                            && name.len() <= 100
                            && name
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
                    {
                        name
                    }
                    Some(name) => {
                        return Err(ConfigError {
                            name: "STRIPE_METER_EVENT_NAME",
                            reason: format!(
                                "{name:?} is not 1 to 100 letters, digits, '_' or '-'"
                            ),
                        })
                    }
                },
            },
            webhook_delivery: flag(
                "LEDGER_WEBHOOK_DELIVERY",
                lookup("LEDGER_WEBHOOK_DELIVERY"),
                true,
            )?,
            webhook_retry: match lookup("LEDGER_WEBHOOK_RETRY_SECONDS") {
                None => crate::webhooks::DEFAULT_RETRY_SECONDS
                    .iter()
                    .map(|s| Duration::from_secs(*s))
                    .collect(),
                Some(raw) => raw
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<u64>()
                            .ok()
                            .filter(|n| (1..=7 * 86_400).contains(n))
                    })
                    .collect::<Option<Vec<u64>>>()
                    .filter(|list| !list.is_empty() && list.len() <= 50)
                    .ok_or_else(|| ConfigError {
                        name: "LEDGER_WEBHOOK_RETRY_SECONDS",
                        reason: format!(
                            "{raw:?} is not a comma-separated list of 1 to 50 delays of 1 to 604800 seconds"
                        ),
                    })?
                    .into_iter()
                    .map(Duration::from_secs)
                    .collect(),
            },
            webhook_poll: Duration::from_millis(number(
                "LEDGER_WEBHOOK_POLL_MS",
                lookup("LEDGER_WEBHOOK_POLL_MS"),
                1000,
                |n| (10..=60_000).contains(n),
            )?),
            key_cache: Duration::from_secs(number(
                "LEDGER_KEY_CACHE_SECS",
                lookup("LEDGER_KEY_CACHE_SECS"),
                10,
                |n| (0..=30).contains(n),
            )?),
        };
        if config.write_start_within().is_zero() {
            return Err(ConfigError {
                name: "LEDGER_REQUEST_TIMEOUT_SECS",
                reason: format!(
                    "{} s leaves no time to begin a write: it must exceed twice LEDGER_DB_STATEMENT_TIMEOUT_MS ({} ms) by more than a second",
                    config.request_timeout.as_secs(),
                    config.db_timeouts.statement.as_millis()
                ),
            });
        }
        Ok(config)
    }
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
    fn the_public_url_defaults_to_the_listen_address_and_must_be_a_plain_base_url() {
        assert_eq!(parse(&[]).unwrap().public_url, "http://127.0.0.1:8080");
        let set = parse(&[("LEDGER_PUBLIC_URL", "https://ledger.example.com/base/")]).unwrap();
        assert_eq!(set.public_url, "https://ledger.example.com/base");
        for bad in [
            "ledger.example.com",
            "ftp://x.example",
            "https://x.example/?a=1",
            "https://x.example/#f",
        ] {
            let err = parse(&[("LEDGER_PUBLIC_URL", bad)]).unwrap_err();
            assert_eq!(err.name, "LEDGER_PUBLIC_URL", "{bad}");
        }
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
        assert_eq!(config.schedule, DEFAULT_SCHEDULE);
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
        assert_eq!(err.name, "LEDGER_WEBHOOK_DELIVERY");
        assert!(
            err.reason.contains("neither true nor false"),
            "{}",
            err.reason
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
