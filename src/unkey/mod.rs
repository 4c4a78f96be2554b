//! The Unkey client: `keys.verifyKey` and `ratelimit.limit`, typed as Unkey's published contract
//! describes them (../shared/unkey/CONTRACT.md). One reqwest client (connection reuse), connect
//! and per-attempt timeouts, a bounded retry of 429, 5xx, timeouts and connection errors, and no
//! secret in any log line: neither the root key nor a customer key is ever logged.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The rate-limit namespace credit-ledger uses for plans' burst limits.
pub const NAMESPACE: &str = "credit-ledger";

#[derive(Clone, PartialEq, Eq)]
pub struct UnkeySettings {
    pub base_url: String,
    pub root_key: String,
    pub connect_timeout: Duration,
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts after the first, for 429, 5xx, timeouts and connection errors.
    pub retries: u32,
    /// The most one request may spend waiting on Unkey, all calls and retries together.
    pub budget: Duration,
}

impl std::fmt::Debug for UnkeySettings {
    // The root key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnkeySettings")
            .field("base_url", &self.base_url)
            .field("root_key", &"***")
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("budget", &self.budget)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Credits {
    pub cost: i64,
}

/// A rate limit checked inline by `keys.verifyKey`.
#[derive(Debug, Clone, Serialize)]
pub struct InlineRatelimit {
    pub name: String,
    pub limit: i64,
    pub duration: i64,
}

/// `POST /v2/keys.verifyKey`. Unknown fields are rejected by Unkey, so only these are sent.
#[derive(Clone, Serialize)]
pub struct VerifyKeyRequest {
    pub key: String,
    pub credits: Credits,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratelimits: Option<Vec<InlineRatelimit>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Meta {
    #[serde(rename = "requestId")]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Identity {
    pub id: Option<String>,
    #[serde(rename = "externalId")]
    pub external_id: Option<String>,
    pub meta: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KeyRatelimit {
    pub id: Option<String>,
    pub name: Option<String>,
    pub limit: Option<i64>,
    pub duration: Option<i64>,
    /// Absolute time in epoch milliseconds (whatever the spec's description says).
    pub reset: Option<i64>,
    pub remaining: Option<i64>,
    pub exceeded: Option<bool>,
    #[serde(rename = "autoApply")]
    pub auto_apply: Option<bool>,
}

/// The verdict on a key. Unkey answers HTTP 200 for every verdict, valid or not.
#[derive(Debug, Clone, Deserialize)]
pub struct VerifyKeyData {
    pub valid: bool,
    /// VALID, NOT_FOUND, FORBIDDEN, INSUFFICIENT_PERMISSIONS, USAGE_EXCEEDED, RATE_LIMITED,
    /// DISABLED, EXPIRED — an open set: anything else is a refusal too.
    pub code: String,
    #[serde(rename = "keyId")]
    pub key_id: Option<String>,
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub meta: Option<serde_json::Value>,
    pub expires: Option<i64>,
    pub credits: Option<i64>,
    pub identity: Option<Identity>,
    pub ratelimits: Option<Vec<KeyRatelimit>>,
}

#[derive(Debug, Clone, Deserialize)]
struct Envelope<T> {
    #[allow(dead_code)]
    meta: Option<Meta>,
    data: T,
}

/// `POST /v2/ratelimit.limit`.
#[derive(Debug, Clone, Serialize)]
pub struct RatelimitRequest {
    pub namespace: String,
    pub identifier: String,
    pub limit: i64,
    pub duration: i64,
    pub cost: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RatelimitData {
    pub limit: i64,
    pub remaining: i64,
    /// Epoch milliseconds when the window resets.
    pub reset: i64,
    pub success: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum UnkeyError {
    /// Unkey could not be reached, was too slow, or kept failing (after retries).
    #[error("Unkey is unavailable: {0}")]
    Unavailable(String),
    /// Unkey refused our request: our configuration or request is wrong (400, 401, 403, 412).
    #[error("Unkey refused the request with HTTP {status}: {detail}")]
    Refused { status: u16, detail: String },
}

#[derive(Clone)]
pub struct UnkeyClient {
    http: reqwest::Client,
    base_url: String,
    root_key: String,
    retries: u32,
}

impl std::fmt::Debug for VerifyKeyRequest {
    // The customer's key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKeyRequest")
            .field("key", &"***")
            .field("credits", &self.credits)
            .field("ratelimits", &self.ratelimits)
            .finish()
    }
}

impl std::fmt::Debug for UnkeyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnkeyClient")
            .field("base_url", &self.base_url)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl UnkeyClient {
    pub fn new(settings: &UnkeySettings) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("credit-ledger/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(UnkeyClient {
            http,
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            root_key: settings.root_key.clone(),
            retries: settings.retries,
        })
    }

    pub async fn verify_key(
        &self,
        request: &VerifyKeyRequest,
    ) -> Result<VerifyKeyData, UnkeyError> {
        self.post("/v2/keys.verifyKey", request, true).await
    }

    /// Not retried after a timeout: the first attempt may have counted against the limit.
    pub async fn ratelimit(&self, request: &RatelimitRequest) -> Result<RatelimitData, UnkeyError> {
        self.post("/v2/ratelimit.limit", request, false).await
    }

    async fn post<B: Serialize, T: for<'de> Deserialize<'de>>(
        &self,
        path: &'static str,
        body: &B,
        retry_timeouts: bool,
    ) -> Result<T, UnkeyError> {
        let url = format!("{}{path}", self.base_url);
        let mut attempt = 0;
        loop {
            let started = std::time::Instant::now();
            let result = self
                .http
                .post(&url)
                .bearer_auth(&self.root_key)
                .json(body)
                .send()
                .await;
            let reason: String = match result {
                Ok(response) => {
                    let status = response.status();
                    metrics::histogram!("unkey_request_duration_seconds", "path" => path)
                        .record(started.elapsed().as_secs_f64());
                    if status.is_success() {
                        let parsed = response.json::<Envelope<T>>().await.map_err(|e| {
                            UnkeyError::Unavailable(format!("unreadable answer from {path}: {e}"))
                        });
                        tracing::debug!(
                            path,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "unkey answered"
                        );
                        return parsed.map(|envelope| envelope.data);
                    }
                    let detail = response
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| {
                            v.pointer("/error/detail")
                                .or_else(|| v.pointer("/error/title"))
                                .and_then(|d| d.as_str())
                                .map(str::to_owned)
                        })
                        .unwrap_or_default();
                    if status.as_u16() == 429 || status.is_server_error() {
                        format!("{path} answered HTTP {status}: {detail}")
                    } else {
                        tracing::error!(path, status = status.as_u16(), %detail, "unkey refused our request");
                        return Err(UnkeyError::Refused {
                            status: status.as_u16(),
                            detail,
                        });
                    }
                }
                Err(err) if err.is_timeout() && !retry_timeouts => {
                    metrics::counter!("unkey_errors_total", "path" => path).increment(1);
                    return Err(UnkeyError::Unavailable(format!("{path} timed out")));
                }
                Err(err) if err.is_timeout() => format!("{path} timed out"),
                Err(err) => format!("{path} could not be reached: {}", error_chain(&err)),
            };
            metrics::counter!("unkey_errors_total", "path" => path).increment(1);
            if attempt >= self.retries {
                tracing::warn!(path, attempts = attempt + 1, %reason, "unkey unavailable");
                return Err(UnkeyError::Unavailable(reason));
            }
            attempt += 1;
            tracing::debug!(path, attempt, %reason, "retrying unkey");
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
        }
    }
}

/// The error and its causes in one line, without the URL's secrets (there are none: the root key
/// travels in a header, never in the URL).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
