//! A test double of Unkey that speaks its published contract (../shared/unkey/CONTRACT.md):
//! `POST /v2/keys.verifyKey` and `POST /v2/ratelimit.limit`, HTTP 200 for every verdict, the
//! error envelope for our own mistakes (400 for a bad body or a missing auth header, 401 for an
//! unknown root key), fixed-window rate limits — and the failure modes: slow answers, 5xx. It
//! records every request it receives so tests can assert what the ledger sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub const ROOT_KEY: &str = "unkey_root_test";

/// What a customer key is, to the double.
#[derive(Debug, Clone)]
pub enum Key {
    Valid {
        key_id: String,
        meta: Value,
        external_id: Option<String>,
    },
    /// Any refusal verdict: NOT_FOUND, DISABLED, EXPIRED, USAGE_EXCEEDED, codes unknown to the
    /// ledger …
    Refused {
        code: String,
        key_id: Option<String>,
    },
    /// RATE_LIMITED by one of the key's own limits, resetting at `reset_ms`.
    RateLimited { key_id: String, reset_ms: i64 },
}

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

/// A fixed rate-limit window: namespace, identifier, limit, duration.
type WindowKey = (String, String, i64, i64);

#[derive(Default)]
pub struct DoubleState {
    keys: Mutex<HashMap<String, Key>>,
    received: Mutex<Vec<Received>>,
    windows: Mutex<HashMap<WindowKey, (i64, i64)>>,
    /// The next N requests answer with `fail_status`.
    failures_left: AtomicUsize,
    fail_status: Mutex<u16>,
    delay: Mutex<Duration>,
}

pub struct UnkeyDouble {
    pub base_url: String,
    state: Arc<DoubleState>,
    shutdown: CancellationToken,
}

impl Drop for UnkeyDouble {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl UnkeyDouble {
    pub async fn start() -> UnkeyDouble {
        let state = Arc::new(DoubleState::default());
        let app = Router::new()
            .route("/v2/keys.verifyKey", post(verify_key))
            .route("/v2/ratelimit.limit", post(ratelimit))
            .with_state(Arc::clone(&state));
        let (base_url, shutdown) = crate::helpers::serve_double(app).await;
        UnkeyDouble {
            base_url,
            state,
            shutdown,
        }
    }

    pub fn add_key(&self, key: &str, behaviour: Key) {
        self.state
            .keys
            .lock()
            .unwrap()
            .insert(key.to_owned(), behaviour);
    }

    pub fn valid(&self, key: &str, key_id: &str, meta: Value) {
        self.add_key(
            key,
            Key::Valid {
                key_id: key_id.to_owned(),
                meta,
                external_id: None,
            },
        );
    }

    pub fn fail_next(&self, count: usize, status: u16) {
        *self.state.fail_status.lock().unwrap() = status;
        self.state.failures_left.store(count, Ordering::SeqCst);
    }

    pub fn delay_answers(&self, by: Duration) {
        *self.state.delay.lock().unwrap() = by;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

fn error(status: StatusCode, detail: &str) -> Response {
    (
        status,
        Json(json!({
            "meta": {"requestId": "req_double"},
            "error": {"title": status.canonical_reason(), "detail": detail,
                      "status": status.as_u16(), "type": "https://unkey.com/docs/errors",
                      "errors": []}
        })),
    )
        .into_response()
}

/// The common front of both endpoints: record, fail or delay as told, check the root key and
/// that the body carries only the fields the contract allows.
async fn front(
    state: &DoubleState,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
    allowed: &[&str],
) -> Result<(), Response> {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.received.lock().unwrap().push(Received {
        path: path.to_owned(),
        authorization: authorization.clone(),
        body: body.clone(),
    });
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let failing = state
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        let status = StatusCode::from_u16(*state.fail_status.lock().unwrap()).unwrap();
        return Err(error(status, "the double was told to fail"));
    }
    match authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
    {
        None => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "missing Authorization header",
            ))
        }
        Some(key) if key != ROOT_KEY => {
            return Err(error(StatusCode::UNAUTHORIZED, "the root key is not valid"))
        }
        Some(_) => {}
    }
    let Some(object) = body.as_object() else {
        return Err(error(StatusCode::BAD_REQUEST, "body must be an object"));
    };
    if let Some(unknown) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("unknown field {unknown}"),
        ));
    }
    Ok(())
}

async fn verify_key(
    State(state): State<Arc<DoubleState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(response) = front(
        &state,
        "/v2/keys.verifyKey",
        &headers,
        &body,
        &[
            "key",
            "credits",
            "ratelimits",
            "tags",
            "permissions",
            "migrationId",
        ],
    )
    .await
    {
        return response;
    }
    let Some(key) = body["key"]
        .as_str()
        .filter(|k| !k.is_empty() && k.len() <= 512)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "key must be a string of 1 to 512 characters",
        );
    };
    let behaviour = state.keys.lock().unwrap().get(key).cloned();
    let data = match behaviour {
        None => json!({"valid": false, "code": "NOT_FOUND"}),
        Some(Key::Valid {
            key_id,
            meta,
            external_id,
        }) => {
            let mut data = json!({"valid": true, "code": "VALID", "keyId": key_id,
                                  "name": "test key", "enabled": true, "meta": meta,
                                  "permissions": [], "roles": []});
            if let Some(external_id) = external_id {
                data["identity"] = json!({"id": "id_1", "externalId": external_id, "meta": {}});
            }
            data
        }
        Some(Key::Refused { code, key_id }) => {
            json!({"valid": false, "code": code, "keyId": key_id, "enabled": code != "DISABLED"})
        }
        Some(Key::RateLimited { key_id, reset_ms }) => json!({
            "valid": false, "code": "RATE_LIMITED", "keyId": key_id,
            "ratelimits": [{"id": "rl_1", "name": "requests", "limit": 10, "duration": 60000,
                            "reset": reset_ms, "remaining": 0, "exceeded": true,
                            "autoApply": true}]
        }),
    };
    Json(json!({"meta": {"requestId": "req_double"}, "data": data})).into_response()
}

async fn ratelimit(
    State(state): State<Arc<DoubleState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(response) = front(
        &state,
        "/v2/ratelimit.limit",
        &headers,
        &body,
        &[
            "namespace",
            "identifier",
            "limit",
            "duration",
            "cost",
            "async",
        ],
    )
    .await
    {
        return response;
    }
    let (Some(namespace), Some(identifier), Some(limit), Some(duration)) = (
        body["namespace"].as_str(),
        body["identifier"].as_str(),
        body["limit"].as_i64(),
        body["duration"].as_i64().filter(|d| *d >= 1000),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "namespace, identifier, limit and duration are required",
        );
    };
    let cost = body["cost"].as_i64().unwrap_or(1);
    let now = chrono::Utc::now().timestamp_millis();
    let window = now / duration;
    let mut windows = state.windows.lock().unwrap();
    let entry = windows
        .entry((namespace.to_owned(), identifier.to_owned(), limit, duration))
        .or_insert((window, 0));
    if entry.0 != window {
        *entry = (window, 0);
    }
    let success = entry.1 + cost <= limit;
    if success {
        entry.1 += cost;
    }
    let remaining = (limit - entry.1).max(0);
    Json(json!({"meta": {"requestId": "req_double"},
                "data": {"limit": limit, "remaining": remaining,
                         "reset": (window + 1) * duration, "success": success}}))
    .into_response()
}
