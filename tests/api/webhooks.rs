//! Events through the outbox, webhook endpoints, signed deliveries with retries, metrics.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{Duration, Utc};
use credit_ledger::db::state::{self, Lock, Selection};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    spawn_app, spawn_app_on, spawn_app_on_with, spawn_app_with, TestApp, SERVICE,
};

/// A webhook receiver that checks every signature itself and can fail the first N calls.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
    stop: CancellationToken,
}

#[derive(Default)]
struct ReceiverState {
    secret: Mutex<String>,
    fail_first: AtomicUsize,
    calls: AtomicUsize,
    /// Accepted deliveries: (webhook-id, body).
    accepted: Mutex<Vec<(String, Value)>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn verify_signature(secret: &str, headers: &HeaderMap, body: &str) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let Ok(key) = STANDARD.decode(secret.trim_start_matches("whsec_")) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(
        format!(
            "{}.{}.{}",
            header("webhook-id"),
            header("webhook-timestamp"),
            body
        )
        .as_bytes(),
    );
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let secret = state.secret.lock().unwrap().clone();
    assert!(
        verify_signature(&secret, &headers, &body),
        "a valid Standard Webhooks signature"
    );
    if state
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let id = headers["webhook-id"].to_str().unwrap().to_owned();
    state
        .accepted
        .lock()
        .unwrap()
        .push((id, serde_json::from_str(&body).unwrap()));
    StatusCode::NO_CONTENT
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { until.cancelled().await })
                .await
                .unwrap();
        });
        Receiver { url, state, stop }
    }

    fn types(&self) -> Vec<String> {
        self.state
            .accepted
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| body["type"].as_str().unwrap().to_owned())
            .collect()
    }
}

async fn subscribe(app: &TestApp, receiver: &Receiver, events: Value) -> Value {
    let created = app
        .post("/v1/webhook-endpoints")
        .json(json!({"url": receiver.url, "events": events, "description": "billing"}))
        .send()
        .await;
    created.assert_status(201);
    *receiver.state.secret.lock().unwrap() = created.body["secret"].as_str().unwrap().to_owned();
    created.body
}

async fn event_types(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT type FROM events ORDER BY seq")
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

async fn plan_100(app: &TestApp) {
    app.put_plan(
        "pro",
        json!({"name": "Pro", "interval": "day", "pools": {"credits": {"allowance": 100}},
               "operations": {"job": {"cost": 1}}}),
    )
    .await;
    app.create_account("key_1", "pro").await;
}

#[tokio::test]
async fn endpoints_are_created_with_a_secret_shown_once_listed_and_deleted() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let created = subscribe(&app, &receiver, json!(["credits.exhausted"])).await;
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    let id = created["id"].as_str().unwrap();
    let fetched = app.get(&format!("/v1/webhook-endpoints/{id}")).send().await;
    fetched.assert_status(200);
    assert!(
        fetched.body.get("secret").is_none(),
        "the secret is shown once"
    );
    assert_eq!(fetched.body["events"], json!(["credits.exhausted"]));
    let list = app.get("/v1/webhook-endpoints").send().await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    let bad = app
        .post("/v1/webhook-endpoints")
        .json(json!({"url": "ftp://x", "events": []}))
        .send()
        .await;
    bad.assert_error(422, "invalid_request");
    let unknown = app
        .post("/v1/webhook-endpoints")
        .json(json!({"url": receiver.url, "events": ["credits.teleported"]}))
        .send()
        .await;
    assert_eq!(unknown.body["error"]["details"]["field"], "events[0]");
    app.post("/v1/webhook-endpoints")
        .token(SERVICE)
        .json(json!({"url": receiver.url}))
        .send()
        .await
        .assert_error(403, "forbidden");
    app.call(
        reqwest::Method::DELETE,
        &format!("/v1/webhook-endpoints/{id}"),
    )
    .send()
    .await
    .assert_status(204);
    app.get(&format!("/v1/webhook-endpoints/{id}"))
        .send()
        .await
        .assert_error(404, "webhook_endpoint_not_found");
}

#[tokio::test]
async fn thresholds_fire_once_each_and_resolve_after_a_top_up() {
    let app = spawn_app().await;
    plan_100(&app).await;
    app.debit("key_1", json!({"cost": 79}))
        .await
        .assert_status(201);
    assert!(event_types(&app).await.is_empty());
    app.debit("key_1", json!({"cost": 1}))
        .await
        .assert_status(201);
    app.debit("key_1", json!({"cost": 5}))
        .await
        .assert_status(201);
    assert_eq!(event_types(&app).await, ["credits.threshold_reached"]);
    app.debit("key_1", json!({"cost": 15}))
        .await
        .assert_status(201);
    for _ in 0..3 {
        app.debit("key_1", json!({"cost": 1}))
            .await
            .assert_error(402, "credits_exhausted");
    }
    assert_eq!(
        event_types(&app).await,
        [
            "credits.threshold_reached",
            "credits.threshold_reached",
            "credits.exhausted"
        ]
    );
    let thresholds: Vec<i64> = sqlx::query_scalar(
        "SELECT (payload->>'threshold')::bigint FROM events
          WHERE type = 'credits.threshold_reached' ORDER BY seq",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(thresholds, vec![80, 100]);
    app.post("/v1/accounts/key_1/grants")
        .json(json!({"kind": "pack", "amount": 50}))
        .send()
        .await
        .assert_status(201);
    let types = event_types(&app).await;
    assert_eq!(
        &types[3..],
        [
            "grant.created",
            "credits.threshold_resolved",
            "credits.threshold_resolved"
        ]
    );
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn reservations_announce_thresholds_and_the_first_refusal_too() {
    let app = spawn_app().await;
    plan_100(&app).await;
    let held = app
        .post("/v1/accounts/key_1/reservations")
        .json(json!({"cost": 90}))
        .send()
        .await;
    held.assert_status(201);
    let id = held.body["id"].as_str().unwrap();
    app.post(&format!("/v1/reservations/{id}/commit"))
        .send()
        .await
        .assert_status(200);
    assert_eq!(event_types(&app).await, ["credits.threshold_reached"]);
    for _ in 0..2 {
        app.post("/v1/accounts/key_1/reservations")
            .json(json!({"cost": 20}))
            .send()
            .await
            .assert_error(402, "credits_exhausted");
    }
    assert_eq!(
        event_types(&app).await,
        ["credits.threshold_reached", "credits.exhausted"]
    );
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_rolled_back_transaction_emits_nothing() {
    let app = spawn_app().await;
    plan_100(&app).await;
    // The outbox written by the storage of effects, inside a transaction that rolls back.
    let mut tx = app.db.pool.begin().await.unwrap();
    let selection = Selection {
        keys: vec!["key_1".into()],
        ..Selection::default()
    };
    let mut state = state::load(&mut tx, &selection, Lock::Wait)
        .await
        .unwrap()
        .pop()
        .unwrap();
    state.emit("grant.created", json!({}), Utc::now());
    state::persist(&mut tx, [&state]).await.unwrap();
    tx.rollback().await.unwrap();
    assert!(event_types(&app).await.is_empty());
    // Through the API: a plan change refused after the period rolled inside its transaction.
    app.clock.advance(Duration::days(1) + Duration::seconds(1));
    app.put_plan(
        "yearly",
        json!({"name": "Y", "interval": "year", "pools": {"credits": {"allowance": 5}}}),
    )
    .await;
    app.post("/v1/accounts/key_1/plan")
        .json(json!({"plan": "yearly", "proration": "difference"}))
        .send()
        .await
        .assert_error(422, "invalid_request");
    assert!(
        event_types(&app).await.is_empty(),
        "the roll and its event were rolled back"
    );
    app.get("/v1/accounts/key_1/balance")
        .send()
        .await
        .assert_status(200);
    assert_eq!(event_types(&app).await, ["grant.expired", "period.rolled"]);
}

#[tokio::test]
async fn deliveries_are_signed_and_a_failing_receiver_gets_the_event_after_it_recovers() {
    let app = spawn_app().await;
    plan_100(&app).await;
    let receiver = Receiver::start().await;
    let endpoint = subscribe(&app, &receiver, json!([])).await;
    receiver.state.fail_first.store(2, Ordering::SeqCst);
    app.debit("key_1", json!({"cost": 85}))
        .await
        .assert_status(201);

    assert_eq!(app.webhooks().deliver_due(10).await.unwrap(), 1);
    assert!(receiver.types().is_empty());
    // Not due again before its backoff.
    assert_eq!(app.webhooks().deliver_due(10).await.unwrap(), 0);
    app.clock.advance(Duration::seconds(6));
    assert_eq!(app.webhooks().deliver_due(10).await.unwrap(), 1);
    app.clock.advance(Duration::seconds(31));
    assert_eq!(app.webhooks().deliver_due(10).await.unwrap(), 1);
    assert_eq!(receiver.types(), ["credits.threshold_reached"]);
    assert_eq!(receiver.state.calls.load(Ordering::SeqCst), 3);
    let accepted = receiver.state.accepted.lock().unwrap().clone();
    assert_eq!(accepted[0].1["data"]["threshold"], 80);
    assert_eq!(accepted[0].1["data"]["key_id"], "key_1");

    let id = endpoint["id"].as_str().unwrap();
    let log = app
        .get(&format!("/v1/webhook-endpoints/{id}/deliveries"))
        .send()
        .await;
    log.assert_status(200);
    let delivery = &log.body["data"][0];
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["attempts"], 3);
    assert_eq!(delivery["last_status_code"], 204);
    assert_eq!(delivery["event_id"].as_str().unwrap(), accepted[0].0);
}

#[tokio::test]
async fn deliveries_go_out_in_order_per_account() {
    let app = spawn_app().await;
    plan_100(&app).await;
    let receiver = Receiver::start().await;
    subscribe(&app, &receiver, json!([])).await;
    receiver.state.fail_first.store(1, Ordering::SeqCst);
    app.debit("key_1", json!({"cost": 100}))
        .await
        .assert_status(201);
    app.debit("key_1", json!({"cost": 1}))
        .await
        .assert_error(402, "credits_exhausted");
    // The first event failed: nothing after it goes out until it does.
    app.webhooks().deliver_due(10).await.unwrap();
    assert!(receiver.types().is_empty());
    app.clock.advance(Duration::seconds(6));
    while app.webhooks().deliver_due(10).await.unwrap() > 0 {}
    assert_eq!(
        receiver.types(),
        [
            "credits.threshold_reached",
            "credits.threshold_reached",
            "credits.exhausted"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_never_make_one_attempt_twice() {
    let first = spawn_app().await;
    let second = spawn_app_on(Arc::clone(&first.db)).await;
    let receiver = Receiver::start().await;
    subscribe(&first, &receiver, json!(["grant.created"])).await;
    first
        .put_plan(
            "pro",
            json!({"name": "Pro", "interval": "day", "pools": {"credits": {"allowance": 100}}}),
        )
        .await;
    for i in 0..6 {
        first.create_account(&format!("k{i}"), "pro").await;
        for _ in 0..5 {
            first
                .post(&format!("/v1/accounts/k{i}/grants"))
                .json(json!({"kind": "pack", "amount": 1}))
                .send()
                .await
                .assert_status(201);
        }
    }
    let workers = [
        first.webhooks(),
        second.webhooks(),
        first.webhooks(),
        second.webhooks(),
    ];
    let passes = workers.iter().map(|w| async move {
        let mut made = 0;
        loop {
            let n = w.deliver_due(3).await.unwrap();
            if n == 0 {
                break made;
            }
            made += n;
        }
    });
    let made: usize = futures::future::join_all(passes).await.into_iter().sum();
    assert_eq!(made, 30);
    let mut ids: Vec<String> = receiver
        .state
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(ids.len(), 30);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30, "every event exactly once");
}

#[tokio::test]
async fn usage_sums_equal_the_debits() {
    let app = spawn_app().await;
    plan_100(&app).await;
    let mut total = 0;
    for cost in [3, 7, 11, 2] {
        app.debit("key_1", json!({"cost": cost, "operation": "job"}))
            .await
            .assert_status(201);
        total += cost;
    }
    app.debit("key_1", json!({"operation": "job", "quantity": 4}))
        .await
        .assert_status(201);
    total += 4;
    let usage = app
        .get("/v1/accounts/key_1/usage?interval=hour")
        .send()
        .await;
    usage.assert_status(200);
    let credits: i64 = usage.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["credits"].as_i64().unwrap())
        .sum();
    let count: i64 = usage.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["count"].as_i64().unwrap())
        .sum();
    assert_eq!((credits, count), (total, 5));
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_text() {
    let app = spawn_app().await;
    plan_100(&app).await;
    app.debit("key_1", json!({"cost": 1}))
        .await
        .assert_status(201);
    let response = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    for name in [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "debits_total",
        "credits_debited_total",
        "db_pool_connections",
    ] {
        assert!(text.contains(name), "{name} in:\n{text}");
    }
    // Every metric family says what it measures.
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split(' ').next().unwrap();
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP text in:\n{text}"
        );
    }
}

const NO_PRIVATE: (&str, &str) = ("LEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "false");

#[tokio::test]
async fn endpoints_inside_the_network_or_with_credentials_are_refused() {
    let app = spawn_app_with(&[NO_PRIVATE]).await;
    for url in [
        "http://127.0.0.1:5432/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:22/",
        "http://0x7f000001/",
        "http://10.1.2.3/hook",
        "http://localhost:9/hook",
        "https://user:secret@hooks.example.com/x",
    ] {
        let response = app
            .post("/v1/webhook-endpoints")
            .json(json!({"url": url}))
            .send()
            .await;
        response.assert_error(422, "invalid_request");
        assert_eq!(response.body["error"]["details"]["field"], "url", "{url}");
    }
    assert_eq!(app.count("webhook_endpoints").await, 0);
    // Credentials are refused even where private networks are allowed.
    let allowed = spawn_app().await;
    allowed
        .post("/v1/webhook-endpoints")
        .json(json!({"url": "http://u:p@127.0.0.1:9/hook"}))
        .send()
        .await
        .assert_error(422, "invalid_request");
}

#[tokio::test]
async fn an_inside_endpoint_is_not_called_where_private_networks_are_off() {
    let app = spawn_app().await;
    plan_100(&app).await;
    let receiver = Receiver::start().await;
    subscribe(&app, &receiver, json!([])).await;
    app.debit("key_1", json!({"cost": 85}))
        .await
        .assert_status(201);
    // An instance that does not allow private networks delivers.
    let strict = spawn_app_on_with(app.db.clone(), &[NO_PRIVATE]).await;
    assert_eq!(strict.webhooks().deliver_due(10).await.unwrap(), 1);
    assert_eq!(receiver.state.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let app = spawn_app().await;
    plan_100(&app).await;
    let target = Receiver::start().await;
    let location = target.url.clone();
    let redirector = Router::new().route(
        "/hook",
        post(move || {
            let location = location.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [("location", location)]) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, redirector).await });
    let created = app
        .post("/v1/webhook-endpoints")
        .json(json!({"url": url}))
        .send()
        .await;
    created.assert_status(201);
    app.debit("key_1", json!({"cost": 85}))
        .await
        .assert_status(201);
    assert_eq!(app.webhooks().deliver_due(10).await.unwrap(), 1);
    assert_eq!(target.state.calls.load(Ordering::SeqCst), 0);
    let id = created.body["id"].as_str().unwrap();
    let log = app
        .get(&format!("/v1/webhook-endpoints/{id}/deliveries"))
        .send()
        .await;
    assert_eq!(log.body["data"][0]["last_status_code"], 307);
    assert_ne!(log.body["data"][0]["status"], "delivered");
}

#[tokio::test]
async fn a_replayed_creation_shows_the_secret_only_while_the_endpoint_exists() {
    let app = spawn_app().await;
    let create = || {
        app.post("/v1/webhook-endpoints")
            .idempotency_key("endpoint-1")
            .json(json!({"url": "http://127.0.0.1:9/hook"}))
            .send()
    };
    let first = create().await;
    first.assert_status(201);
    let secret = first.body["secret"].as_str().unwrap().to_owned();
    let replay = create().await;
    replay.assert_status(201);
    assert_eq!(replay.body["secret"], secret.as_str());
    assert_eq!(replay.body["id"], first.body["id"]);
    // The stored answer keeps no copy of the secret.
    let stored: Vec<String> = sqlx::query_scalar("SELECT response::text FROM idempotency_keys")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert!(stored.iter().all(|r| !r.contains(&secret)), "{stored:?}");
    let id = first.body["id"].as_str().unwrap();
    app.call(
        reqwest::Method::DELETE,
        &format!("/v1/webhook-endpoints/{id}"),
    )
    .send()
    .await
    .assert_status(204);
    create()
        .await
        .assert_error(404, "webhook_endpoint_not_found");
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_and_still_sign() {
    let app = spawn_app().await;
    plan_100(&app).await;
    let receiver = Receiver::start().await;
    let endpoint = subscribe(&app, &receiver, json!([])).await;
    let secret = endpoint["secret"].as_str().unwrap();
    let stored: String = sqlx::query_scalar("SELECT secret FROM webhook_endpoints")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(stored.starts_with("sealed.v1."), "{stored}");
    assert!(!stored.contains(secret.trim_start_matches("whsec_")));
    // The receiver checks the signature with the secret it was shown.
    app.debit("key_1", json!({"cost": 85}))
        .await
        .assert_status(201);
    assert_eq!(app.webhooks().deliver_due(10).await.unwrap(), 1);
    assert_eq!(receiver.types(), ["credits.threshold_reached"]);
}

#[tokio::test]
async fn without_a_secrets_key_no_endpoint_is_created_and_the_setting_is_named() {
    let app = spawn_app_with(&[("LEDGER_SECRETS_KEY", "")]).await;
    let refused = app
        .post("/v1/webhook-endpoints")
        .json(json!({"url": "http://127.0.0.1:9/hook"}))
        .send()
        .await;
    refused.assert_error(503, "encryption_unavailable");
    assert_eq!(
        refused.body["error"]["details"]["setting"],
        "LEDGER_SECRETS_KEY"
    );
    assert_eq!(app.count("webhook_endpoints").await, 0);
}

#[tokio::test]
async fn plain_secrets_from_before_and_a_rotated_key_are_sealed_again_at_start() {
    let app = spawn_app().await;
    plan_100(&app).await;
    let receiver = Receiver::start().await;
    let create = json!({"url": receiver.url, "events": []});
    let endpoint = app
        .post("/v1/webhook-endpoints")
        .idempotency_key("hook-1")
        .json(create.clone())
        .send()
        .await;
    endpoint.assert_status(201);
    let endpoint = endpoint.body;
    *receiver.state.secret.lock().unwrap() = endpoint["secret"].as_str().unwrap().to_owned();
    let id: uuid::Uuid = endpoint["id"].as_str().unwrap().parse().unwrap();
    // An endpoint stored before sealing existed: its secret in plain text.
    let old_secret = "whsec_c2VjcmV0IGZyb20gYmVmb3JlIHNlYWxpbmcgZXhpc3RlZCE=";
    let old_receiver = Receiver::start().await;
    *old_receiver.state.secret.lock().unwrap() = old_secret.to_owned();
    let old_id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, url, events, secret, created_at)
         VALUES ($1, $2, '{}', $3, now())",
    )
    .bind(old_id)
    .bind(&old_receiver.url)
    .bind(old_secret)
    .execute(&app.db.pool)
    .await
    .unwrap();
    // A new key comes first; the old one stays to open what it sealed.
    let new_key = STANDARD.encode([42u8; 32]);
    let rotated = spawn_app_on_with(
        Arc::clone(&app.db),
        &[(
            "LEDGER_SECRETS_KEY",
            &format!("{new_key},{}", crate::helpers::SECRETS_KEY),
        )],
    )
    .await;
    assert_eq!(rotated.webhooks().seal_stored_secrets().await.unwrap(), 2);
    assert_eq!(rotated.webhooks().seal_stored_secrets().await.unwrap(), 0);
    let stored: Vec<String> = sqlx::query_scalar("SELECT secret FROM webhook_endpoints")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert!(
        stored.iter().all(|s| s.starts_with("sealed.v1.")),
        "{stored:?}"
    );
    // The instance that has only the new key still signs for both endpoints.
    let only_new =
        spawn_app_on_with(Arc::clone(&app.db), &[("LEDGER_SECRETS_KEY", &new_key)]).await;
    let replay = only_new
        .post("/v1/webhook-endpoints")
        .idempotency_key("hook-1")
        .json(create)
        .send()
        .await;
    replay.assert_status(201);
    assert_eq!(replay.body["id"], id.to_string());
    assert_eq!(replay.body["secret"], endpoint["secret"]);
    // And an instance without that key reports the delivery failure instead of signing wrongly.
    let stale = spawn_app_on(Arc::clone(&app.db)).await;
    only_new
        .debit("key_1", json!({"cost": 85}))
        .await
        .assert_status(201);
    assert_eq!(stale.webhooks().deliver_due(10).await.unwrap(), 2);
    assert!(receiver.types().is_empty());
    let log = only_new
        .get(&format!("/v1/webhook-endpoints/{id}/deliveries"))
        .send()
        .await;
    let delivery = &log.body["data"][0];
    let error = delivery["last_error"].as_str().unwrap();
    assert!(error.contains("LEDGER_SECRETS_KEY"), "{error}");
    // Handed back uncounted, for a process that has the key: no retry is used up.
    assert_eq!(delivery["status"], "pending");
    assert_eq!(delivery["attempts"], 0);
    only_new.clock.advance(Duration::seconds(61));
    assert_eq!(only_new.webhooks().deliver_due(10).await.unwrap(), 2);
    assert_eq!(receiver.types(), ["credits.threshold_reached"]);
    assert_eq!(old_receiver.types(), ["credits.threshold_reached"]);
}

/// The low-balance events so far: type and payload, oldest first.
async fn low(app: &TestApp) -> Vec<(String, Value)> {
    sqlx::query_as::<_, (String, Value)>(
        "SELECT type, payload FROM events
          WHERE type IN ('credits.balance_low', 'credits.balance_recovered') ORDER BY seq",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_pool_below_its_low_balance_is_announced_once_and_again_when_it_recovers() {
    let app = spawn_app().await;
    app.put_plan(
        "pro",
        json!({"name": "Pro", "interval": "month",
               "pools": {"credits": {"allowance": 500, "low_balance": 100}},
               "operations": {"job": {"cost": 1}}}),
    )
    .await;
    app.create_account("key_1", "pro").await;
    // A pack counts: the allowance alone falls to 50, but with the pack 250 are available.
    app.post("/v1/accounts/key_1/grants")
        .json(json!({"kind": "pack", "amount": 200}))
        .send()
        .await
        .assert_status(201);
    app.debit("key_1", json!({"cost": 450}))
        .await
        .assert_status(201);
    assert!(low(&app).await.is_empty(), "250 available is not below 100");

    app.debit("key_1", json!({"cost": 200}))
        .await
        .assert_status(201);
    app.debit("key_1", json!({"cost": 10}))
        .await
        .assert_status(201);
    let events = low(&app).await;
    assert_eq!(
        events.len(),
        1,
        "announced once while it stays low: {events:?}"
    );
    assert_eq!(events[0].0, "credits.balance_low");
    assert_eq!(events[0].1["available"], 50);
    assert_eq!(events[0].1["low_balance"], 100);
    assert_eq!(events[0].1["pool"], "credits");

    app.post("/v1/accounts/key_1/grants")
        .json(json!({"kind": "promotional", "amount": 60}))
        .send()
        .await
        .assert_status(201);
    let events = low(&app).await;
    assert_eq!(
        events.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        ["credits.balance_low", "credits.balance_recovered"]
    );
    assert_eq!(
        events[1].1["available"], 100,
        "back at the line is recovered"
    );

    // Low again after recovering: announced again.
    app.debit("key_1", json!({"cost": 20}))
        .await
        .assert_status(201);
    assert_eq!(low(&app).await.len(), 3);

    // The next period's allowance is its recovery.
    app.clock.advance(Duration::days(32));
    credit_ledger::scheduler::run_once(&app.ledger).await;
    let events = low(&app).await;
    assert_eq!(
        events.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        [
            "credits.balance_low",
            "credits.balance_recovered",
            "credits.balance_low",
            "credits.balance_recovered"
        ]
    );
    assert!(events[3].1["available"].as_i64().unwrap() >= 500);

    // An unlimited pool takes no low_balance.
    let refused = app
        .put("/v1/plans/free")
        .json(json!({"name": "Free", "interval": "month",
                     "pools": {"credits": {"allowance": null, "low_balance": 5}}}))
        .send()
        .await;
    refused.assert_error(422, "invalid_plan");
    app.assert_audit_clean().await;
}

/// The events of one type so far: payloads, oldest first.
async fn events_of(app: &TestApp, event_type: &str) -> Vec<Value> {
    sqlx::query_scalar::<_, Value>("SELECT payload FROM events WHERE type = $1 ORDER BY seq")
        .bind(event_type)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn thresholds_measure_the_allowance_used_not_what_packs_paid_for() {
    let app = spawn_app().await;
    app.put_plan(
        "pro",
        json!({"name": "Pro", "interval": "month",
               "pools": {"credits": {"allowance": 100}},
               "operations": {"job": {"cost": 1}}}),
    )
    .await;
    app.create_account("key_1", "pro").await;
    let now = app.clock.now();
    // A pack that expires before the period ends is spent before the allowance.
    app.post("/v1/accounts/key_1/grants")
        .json(json!({"kind": "pack", "amount": 50,
                     "expires_at": (now + Duration::days(3)).to_rfc3339()}))
        .send()
        .await
        .assert_status(201);
    app.post("/v1/accounts/key_1/grants")
        .json(json!({"kind": "pack", "amount": 500}))
        .send()
        .await
        .assert_status(201);
    app.debit("key_1", json!({"cost": 50}))
        .await
        .assert_status(201);
    assert!(
        events_of(&app, "credits.threshold_reached")
            .await
            .is_empty(),
        "the short pack paid for those 50: no allowance was used"
    );
    let debit = app.debit("key_1", json!({"cost": 120})).await;
    debit.assert_status(201);
    let reached = events_of(&app, "credits.threshold_reached").await;
    assert_eq!(reached.len(), 2, "{reached:?}");
    assert_eq!(reached[1]["threshold"], 100);
    assert_eq!(reached[1]["allowance_used"], 100);
    assert_eq!(reached[1]["used"], 170);

    let balance = app.get("/v1/accounts/key_1/balance").send().await;
    let pool = &balance.body["pools"][0];
    assert_eq!(pool["used"], 170, "every credit debited this period");
    assert_eq!(pool["allowance_used"], 100, "the allowance's share of it");
    assert_eq!(pool["allowance"], 100);

    // A refund goes back to the grants in reverse: 20 to the long pack, then 30 to the
    // allowance, which is allowance no longer used.
    let id = debit.body["id"].as_str().unwrap();
    app.post(&format!("/v1/debits/{id}/refunds"))
        .json(json!({"amount": 50}))
        .send()
        .await
        .assert_status(201);
    let balance = app.get("/v1/accounts/key_1/balance").send().await;
    let pool = &balance.body["pools"][0];
    assert_eq!(pool["used"], 120);
    assert_eq!(pool["allowance_used"], 70);

    // The next period starts with none used.
    app.clock.advance(Duration::days(32));
    let balance = app.get("/v1/accounts/key_1/balance").send().await;
    assert_eq!(balance.body["pools"][0]["allowance_used"], 0);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_grant_with_credits_left_is_announced_once_before_it_expires() {
    let app = spawn_app().await;
    let refused = app
        .put("/v1/plans/pro")
        .json(json!({"name": "Pro", "interval": "month",
                     "pools": {"credits": {"allowance": 100}}, "expiry_warning_days": 400}))
        .send()
        .await;
    refused.assert_error(422, "invalid_plan");
    assert_eq!(
        refused.body["error"]["details"]["field"], "expiry_warning_days",
        "{}",
        refused.body
    );
    let plan = app
        .put_plan(
            "pro",
            json!({"name": "Pro", "interval": "month",
                   "pools": {"credits": {"allowance": 100}}, "expiry_warning_days": 3}),
        )
        .await;
    assert_eq!(plan["expiry_warning_days"], 3);
    app.create_account("key_1", "pro").await;
    let now = app.clock.now();
    let in_days = |d: i64| (now + Duration::days(d)).to_rfc3339();
    let grant = |kind: &str, amount: i64, expires: String| {
        app.post("/v1/accounts/key_1/grants")
            .json(json!({"kind": kind, "amount": amount, "expires_at": expires}))
            .send()
    };
    let promo = grant("promotional", 40, in_days(10)).await;
    promo.assert_status(201);
    let spent = grant("pack", 5, in_days(9)).await;
    spent.assert_status(201);
    let later = grant("pack", 70, in_days(20)).await;
    later.assert_status(201);
    // The 5-credit pack expires first, so it is spent first and has nothing left to warn of.
    app.debit("key_1", json!({"cost": 5}))
        .await
        .assert_status(201);

    credit_ledger::scheduler::run_once(&app.ledger).await;
    assert!(events_of(&app, "grant.expiring").await.is_empty());

    app.clock.advance(Duration::days(8));
    credit_ledger::scheduler::run_once(&app.ledger).await;
    credit_ledger::scheduler::run_once(&app.ledger).await;
    let expiring = events_of(&app, "grant.expiring").await;
    assert_eq!(
        expiring.len(),
        1,
        "once, and only the promotion: {expiring:?}"
    );
    assert_eq!(expiring[0]["grant_id"], promo.body["id"]);
    assert_eq!(expiring[0]["kind"], "promotional");
    assert_eq!(expiring[0]["remaining"], 40);
    assert_eq!(expiring[0]["expires_at"], promo.body["expires_at"]);
    assert_eq!(expiring[0]["warning_days"], 3);

    // A change to the account announces what came due too, without the scheduler.
    app.clock.advance(Duration::days(9));
    app.debit("key_1", json!({"cost": 1}))
        .await
        .assert_status(201);
    let expiring = events_of(&app, "grant.expiring").await;
    assert_eq!(expiring.len(), 2, "{expiring:?}");
    assert_eq!(expiring[1]["grant_id"], later.body["id"]);
    assert_eq!(expiring[1]["remaining"], 70);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_hold_from_the_last_period_committed_in_this_one_is_not_this_periods_allowance() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(1000)).await;
    app.create_account("key_1", "pro").await;
    let account = app.get("/v1/accounts/key_1").send().await;
    let end: chrono::DateTime<Utc> = account.body["current_period"]["end"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    app.clock
        .advance(end - app.clock.now() - Duration::hours(1));
    let hold = app
        .post("/v1/accounts/key_1/reservations")
        .json(json!({"cost": 900, "ttl_seconds": 86400}))
        .send()
        .await;
    hold.assert_status(201);
    app.clock.advance(Duration::hours(2));
    let id = hold.body["id"].as_str().unwrap();
    app.post(&format!("/v1/reservations/{id}/commit"))
        .json(json!({}))
        .send()
        .await
        .assert_status(200);
    let balance = app.get("/v1/accounts/key_1/balance").send().await;
    assert_eq!(balance.body["pools"][0]["available"], 1000);
    assert_eq!(balance.body["pools"][0]["allowance_used"], 0);
    assert!(events_of(&app, "credits.threshold_reached")
        .await
        .is_empty());
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_grant_not_yet_in_effect_does_not_hold_up_the_scheduler() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("a_waiting", "pro").await;
    let now = app.clock.now();
    app.put("/v1/accounts/b_due")
        .json(json!({"plan": "pro",
                     "billing_anchor": (now - Duration::days(40)).to_rfc3339()}))
        .send()
        .await
        .assert_status(201);
    let account = app.get("/v1/accounts/b_due").send().await;
    let end: chrono::DateTime<Utc> = account.body["current_period"]["end"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    app.post("/v1/accounts/a_waiting/grants")
        .json(json!({"kind": "pack", "amount": 10,
                     "effective_at": (end + Duration::days(3)).to_rfc3339(),
                     "expires_at": (end + Duration::days(5)).to_rfc3339()}))
        .send()
        .await
        .assert_status(201);
    app.clock
        .advance(end - app.clock.now() + Duration::minutes(10));
    let done = app.ledger.maintain_due(1).await.unwrap();
    assert_eq!(done.rolled, 1, "{done:?}");
}
