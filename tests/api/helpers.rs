//! `spawn_app()`: the real service on port 0 with a fresh PostgreSQL database, and a client whose
//! every response is checked against `openapi.yaml`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use credit_ledger::ledger::order::OrderKey;

use credit_ledger::app::{self, AppState};
use credit_ledger::config::Config;
use credit_ledger::ledger::Clock;

pub const ADMIN: &str = "test-admin-token";
pub const SERVICE: &str = "test-service-token";

/// The PostgreSQL server the tests use; `TEST_DATABASE_URL` overrides it.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let name = format!("cl_test_{}", uuid::Uuid::new_v4().simple());
        let server = PgConnectOptions::from_str(&server_url()).expect("TEST_DATABASE_URL");
        let mut conn = PgConnection::connect_with(&server)
            .await
            .expect("PostgreSQL must run at TEST_DATABASE_URL (default 127.0.0.1:5432)");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        let options = server.clone().database(&name);
        let url = options.to_url_lossy().to_string();
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect_with(options)
            .await
            .expect("connect to test database");
        credit_ledger::db::MIGRATOR
            .run(&pool)
            .await
            .expect("migrations apply");
        TestDb { name, url, pool }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; drop the database from a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                if let Ok(server) = PgConnectOptions::from_str(&server_url()) {
                    if let Ok(mut conn) = PgConnection::connect_with(&server).await {
                        let _ = sqlx::query(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .execute(&mut conn)
                        .await;
                    }
                }
            });
        })
        .join();
    }
}

/// A clock the test moves or freezes; the service under test reads it, no HTTP caller can.
#[derive(Clone, Default)]
pub struct TestClock {
    offset_micros: Arc<AtomicI64>,
    frozen: Arc<Mutex<Option<DateTime<Utc>>>>,
}

#[allow(dead_code)]
impl TestClock {
    pub fn advance(&self, by: chrono::Duration) {
        self.offset_micros.fetch_add(
            by.num_microseconds().expect("small duration"),
            Ordering::SeqCst,
        );
    }

    /// Stops the clock at `at` until `unfreeze`.
    pub fn freeze_at(&self, at: DateTime<Utc>) {
        *self.frozen.lock().unwrap() = Some(at);
    }

    pub fn unfreeze(&self) {
        *self.frozen.lock().unwrap() = None;
    }

    pub fn now(&self) -> DateTime<Utc> {
        if let Some(at) = *self.frozen.lock().unwrap() {
            return at;
        }
        Utc::now() + chrono::Duration::microseconds(self.offset_micros.load(Ordering::SeqCst))
    }

    fn as_clock(&self) -> Clock {
        let me = self.clone();
        Clock::from_fn(move || me.now())
    }
}

pub struct TestApp {
    pub address: String,
    /// The instance's ledger, for driving the scheduler's jobs directly.
    pub ledger: credit_ledger::service::Ledger,
    webhooks: credit_ledger::webhooks::Webhooks,
    /// The Stripe meter reporter, with Stripe configured.
    pub meter: Option<credit_ledger::stripe::meter::MeterReporter>,
    /// The auto top-up charger, with Stripe configured.
    pub charger: Option<credit_ledger::stripe::top_up::TopUpCharger>,
    pub client: reqwest::Client,
    pub db: Arc<TestDb>,
    pub clock: TestClock,
    shutdown: CancellationToken,
    server: Mutex<Option<tokio::task::JoinHandle<std::io::Result<()>>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The key that seals webhook secrets in tests (`LEDGER_SECRETS_KEY`).
pub const SECRETS_KEY: &str = "c2VhbGluZyBrZXkgZm9yIHRoZSB0ZXN0IHN1aXRlISE=";

pub async fn spawn_app() -> TestApp {
    let db = Arc::new(TestDb::new().await);
    spawn_app_on(db).await
}

/// Another service instance on the same database (several replicas, one PostgreSQL).
pub async fn spawn_app_on(db: Arc<TestDb>) -> TestApp {
    spawn_configured(db, &[]).await
}

/// Another instance on the same database, with settings of its own.
pub async fn spawn_app_on_with(db: Arc<TestDb>, settings: &[(&str, &str)]) -> TestApp {
    spawn_configured(db, settings).await
}

/// The service with settings of the test's own (e.g. `UNKEY_BASE_URL`).
pub async fn spawn_app_with(settings: &[(&str, &str)]) -> TestApp {
    let db = Arc::new(TestDb::new().await);
    spawn_configured(db, settings).await
}

async fn spawn_configured(db: Arc<TestDb>, settings: &[(&str, &str)]) -> TestApp {
    // The service's warnings and errors show in a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = format!("http://{}", listener.local_addr().unwrap());
    let config = Config::from_lookup(|name| {
        if let Some((_, value)) = settings.iter().find(|(n, _)| *n == name) {
            return Some((*value).to_owned());
        }
        match name {
            "DATABASE_URL" => Some(db.url.clone()),
            "LEDGER_ADMIN_TOKENS" => Some(ADMIN.to_owned()),
            "LEDGER_SERVICE_TOKENS" => Some(SERVICE.to_owned()),
            // Tests' webhook receivers listen on loopback.
            "LEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS" => Some("true".to_owned()),
            "LEDGER_SECRETS_KEY" => Some(SECRETS_KEY.to_owned()),
            // Links the service hands out (portal links) point at this instance.
            "LEDGER_PUBLIC_URL" => Some(address.clone()),
            _ => None,
        }
    })
    .expect("test config");
    // Each instance has its own pool, as a separate process would.
    let pool = credit_ledger::db::open_pool(&db.url, 10, Some(config.db_timeouts))
        .await
        .expect("instance pool");
    let clock = TestClock::default();
    let state = AppState::new(&config, pool, clock.as_clock()).expect("state");
    let ledger = state.ledger.clone();
    let webhooks = state.webhooks.clone();
    let meter = state.meter.clone();
    let charger = state.top_up_charger.clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app::serve(listener, state, shutdown.clone()));
    TestApp {
        server: Mutex::new(Some(server)),
        address,
        ledger,
        webhooks,
        meter,
        charger,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        db,
        clock,
        shutdown,
    }
}

#[derive(Debug, Clone)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn assert_status(&self, expected: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            expected,
            "unexpected status; body: {}",
            self.body
        );
        self
    }

    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> &Self {
        self.assert_status(status);
        assert_eq!(self.error_code(), code, "body: {}", self.body);
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "an error carries a message: {}",
            self.body
        );
        self
    }
}

/// A request being built.
pub struct Call<'a> {
    app: &'a TestApp,
    method: Method,
    path: String,
    token: Option<String>,
    body: Option<Vec<u8>>,
    headers: Vec<(String, String)>,
    check_spec: bool,
}

impl<'a> Call<'a> {
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    pub fn no_token(mut self) -> Self {
        self.token = None;
        self
    }

    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(serde_json::to_vec(&body).unwrap());
        self
    }

    pub fn raw_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn idempotency_key(self, key: &str) -> Self {
        self.header("Idempotency-Key", key)
    }

    /// For requests outside the documented API (unknown routes, wrong methods).
    pub fn unchecked(mut self) -> Self {
        self.check_spec = false;
        self
    }

    pub async fn send(self) -> TestResponse {
        let url = format!("{}{}", self.app.address, self.path);
        let mut request = self.app.client.request(self.method.clone(), url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        if let Some(body) = self.body {
            let typed = self
                .headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
            if !typed {
                request = request.header("content-type", "application/json");
            }
            request = request.body(body);
        }
        let response = request.send().await.expect("request reaches the service");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let is_text = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/"));
        let body = if bytes.is_empty() {
            Value::Null
        } else if is_text {
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "{} {} answered {status} with a body that is not JSON: {}",
                    self.method,
                    self.path,
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        assert!(
            headers.contains_key("x-request-id"),
            "every response carries x-request-id"
        );
        let response = TestResponse {
            status,
            headers,
            body,
        };
        if self.check_spec {
            spec().check(&self.method, &self.path, &response);
        }
        response
    }
}

impl TestApp {
    /// Begins shutdown, as SIGTERM does, and waits until the server loop has ended.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            server.await.expect("server task").expect("server loop");
        }
    }

    /// The instance's webhook worker, for driving delivery passes directly.
    pub fn webhooks(&self) -> &credit_ledger::webhooks::Webhooks {
        &self.webhooks
    }

    pub fn call(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            app: self,
            method,
            path: path.to_owned(),
            token: Some(ADMIN.to_owned()),
            body: None,
            headers: Vec::new(),
            check_spec: true,
        }
    }

    pub fn get(&self, path: &str) -> Call<'_> {
        self.call(Method::GET, path)
    }

    pub fn put(&self, path: &str) -> Call<'_> {
        self.call(Method::PUT, path)
    }

    pub fn post(&self, path: &str) -> Call<'_> {
        self.call(Method::POST, path)
    }

    /// PUT a plan with one `credits` pool and the usual prices; returns the plan.
    pub async fn create_plan(&self, plan_id: &str, allowance: Option<i64>) -> Value {
        let response = self
            .put(&format!("/v1/plans/{plan_id}"))
            .json(json!({
                "name": format!("Plan {plan_id}"),
                "interval": "month",
                "pools": {"credits": {"allowance": allowance, "rollover_cap": null}},
                "operations": {"image.generate": {"pool": "credits", "cost": 10}, "search": {"cost": 1}},
            }))
            .send()
            .await;
        response.assert_status(200);
        response.body
    }

    pub async fn put_plan(&self, plan_id: &str, body: Value) -> Value {
        let response = self
            .put(&format!("/v1/plans/{plan_id}"))
            .json(body)
            .send()
            .await;
        response.assert_status(200);
        response.body
    }

    /// PUT an account on a plan, anchored at the start of the current month.
    pub async fn create_account(&self, key_id: &str, plan_id: &str) -> Value {
        let response = self
            .put(&format!("/v1/accounts/{key_id}"))
            .json(json!({"plan": plan_id}))
            .send()
            .await;
        response.assert_status(201);
        response.body
    }

    pub async fn debit(&self, key_id: &str, body: Value) -> TestResponse {
        self.post(&format!("/v1/accounts/{key_id}/debits"))
            .token(SERVICE)
            .json(body)
            .send()
            .await
    }

    pub async fn available(&self, key_id: &str, pool: &str) -> Option<i64> {
        let balance = self
            .get(&format!("/v1/accounts/{key_id}/balance"))
            .send()
            .await;
        balance.assert_status(200);
        let pools = balance.body["pools"].as_array().unwrap().clone();
        let pool = pools
            .iter()
            .find(|p| p["pool"] == pool)
            .unwrap_or_else(|| panic!("pool {pool} in balance"));
        pool["available"].as_i64()
    }

    /// Every journal entry of an account, oldest first, read straight from the database.
    pub async fn all_entries(&self, key_id: &str) -> Vec<(String, i64, Option<uuid::Uuid>)> {
        sqlx::query_as(
            "SELECT kind::text, amount, grant_id FROM entries WHERE key_id = $1 ORDER BY id",
        )
        .bind(key_id)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// Puts a grant straight into the database with its `grant` journal entry, effective and
    /// created at `created_at`: the grant routes cannot backdate a grant, and consumption order
    /// and the audit are tested over grants of many ages and kinds.
    pub async fn insert_grant(
        &self,
        key_id: &str,
        kind: &str,
        amount: i64,
        expires_at: Option<DateTime<Utc>>,
        priority: i32,
        created_at: DateTime<Utc>,
    ) -> OrderKey {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO grants (key_id, id, pool, kind, amount, remaining, effective_at, expires_at,
                                 priority, created_at)
             VALUES ($1, $2, 'credits', $3::grant_kind, $4, $4, $5, $6, $7, $5)",
        )
        .bind(key_id)
        .bind(id)
        .bind(kind)
        .bind(amount)
        .bind(created_at)
        .bind(expires_at)
        .bind(priority)
        .execute(&self.db.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO entries (key_id, pool, kind, amount, grant_id, created_at)
             VALUES ($1, 'credits', 'grant', $2, $3, $4)",
        )
        .bind(key_id)
        .bind(amount)
        .bind(id)
        .bind(created_at)
        .execute(&self.db.pool)
        .await
        .unwrap();
        OrderKey {
            expires_at,
            priority,
            created_at,
            id,
        }
    }

    /// Fails the test when `credit-ledger audit` would report anything (at the app's clock).
    pub async fn assert_audit_clean(&self) {
        let mut conn = self.db.pool.acquire().await.unwrap();
        let violations = credit_ledger::audit::run(&mut conn, self.clock.now())
            .await
            .expect("audit runs");
        assert!(
            violations.is_empty(),
            "audit found violations:\n{}",
            violations
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// A fingerprint of every ledger table, to prove a refused request changed nothing.
    pub async fn snapshot(&self) -> Value {
        let mut out = serde_json::Map::new();
        for table in [
            "plans",
            "accounts",
            "account_pools",
            "grants",
            "entries",
            "debits",
            "idempotency_keys",
        ] {
            let rows: Vec<Value> = sqlx::query_scalar(&format!(
                "SELECT to_jsonb(t) FROM {table} t ORDER BY to_jsonb(t)::text"
            ))
            .fetch_all(&self.db.pool)
            .await
            .unwrap();
            out.insert(table.to_owned(), Value::Array(rows));
        }
        Value::Object(out)
    }
}

/// `openapi.yaml`, with compiled validators for its response schemas.
pub struct Spec {
    document: Value,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let document: Value =
            serde_yaml::from_str(credit_ledger::OPENAPI_YAML).expect("openapi.yaml parses");
        Spec {
            document,
            validators: Mutex::new(HashMap::new()),
        }
    })
}

/// A JSON pointer segment as it may stand in a `$ref` URI fragment.
fn pointer_escape(segment: &str) -> String {
    segment
        .replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D")
}

impl Spec {
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// The documented path template that a concrete path matches.
    pub fn template_for(&self, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap_or(path);
        let actual: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let paths = self.document["paths"].as_object()?;
        let mut best: Option<(usize, &String)> = None;
        for template in paths.keys() {
            let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
            if parts.len() != actual.len() {
                continue;
            }
            let mut literal = 0;
            let matches = parts.iter().zip(&actual).all(|(t, a)| {
                if t.starts_with('{') && t.ends_with('}') {
                    !a.is_empty()
                } else if t == a {
                    literal += 1;
                    true
                } else {
                    false
                }
            });
            if matches && best.is_none_or(|(n, _)| literal > n) {
                best = Some((literal, template));
            }
        }
        best.map(|(_, t)| t.clone())
    }

    /// Fails the test when the response is not what the spec says for this route and status.
    #[track_caller]
    pub fn check(&self, method: &Method, path: &str, response: &TestResponse) {
        let template = self
            .template_for(path)
            .unwrap_or_else(|| panic!("{method} {path} is not documented in openapi.yaml"));
        let method_key = method.as_str().to_lowercase();
        let operation = &self.document["paths"][&template][&method_key];
        assert!(
            operation.is_object(),
            "{method} {template} is not documented in openapi.yaml"
        );
        let status = response.status.as_u16().to_string();
        let documented = &operation["responses"][&status];
        assert!(
            documented.is_object(),
            "{method} {template} answered {status}, which openapi.yaml does not list; body: {}",
            response.body
        );
        let documented = self.resolve(documented);
        // The schema of the media type the response came as (JSON unless it says otherwise).
        let media = response
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_else(|| "application/json".into());
        if let Some(content) = documented.get("content").and_then(Value::as_object) {
            assert!(
                content.contains_key(&media),
                "{method} {path} answered {status} as {media}, which openapi.yaml does not list"
            );
        }
        if media != "application/json" {
            return;
        }
        let Some(schema) = documented.pointer("/content/application~1json/schema") else {
            return;
        };
        let pointer = if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            reference.to_owned()
        } else {
            format!(
                "#/paths/{}/{method_key}/responses/{status}/content/application~1json/schema",
                pointer_escape(&template)
            )
        };
        let validator = self.validator(&pointer);
        let errors: Vec<String> = validator
            .iter_errors(&response.body)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} → {status} does not match openapi.yaml ({pointer}):\n{}\nbody: {}",
            errors.join("\n"),
            response.body
        );
    }

    fn resolve<'v>(&'v self, value: &'v Value) -> &'v Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => self
                .document
                .pointer(reference.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling $ref {reference}")),
            None => value,
        }
    }

    fn validator(&self, pointer: &str) -> Arc<jsonschema::Validator> {
        // A failed test elsewhere must not poison the cache for the rest.
        let mut cache = self
            .validators
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(v) = cache.get(pointer) {
            return v.clone();
        }
        // The whole document is the schema resource, so every `#/components/...` $ref resolves;
        // the root `$ref` selects the schema to apply. Other top-level keys are not keywords.
        let mut root = self.document.clone();
        root["$ref"] = Value::String(pointer.to_owned());
        root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        let validator = Arc::new(
            jsonschema::options()
                .should_validate_formats(true)
                .build(&root)
                .unwrap_or_else(|e| panic!("schema {pointer} compiles: {e}")),
        );
        cache.insert(pointer.to_owned(), validator.clone());
        validator
    }
}

/// The service's binary, with an empty environment but `PATH`.
pub fn binary() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_credit-ledger"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

/// A loopback port nothing listens on (at the moment of asking).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Whether the service on `port` answers `/readyz` with 200 within about ten seconds.
pub async fn ready_within_10s(port: u16) -> bool {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            if r.status() == 200 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A fresh, empty database for a real binary to create and migrate; dropped by `drop_it`.
pub struct ScratchDatabase {
    pub name: String,
    pub url: String,
}

impl ScratchDatabase {
    pub fn new(prefix: &str) -> ScratchDatabase {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let server = PgConnectOptions::from_str(&server_url()).unwrap();
        let url = server.database(&name).to_url_lossy().to_string();
        ScratchDatabase { name, url }
    }

    pub async fn drop_it(self) {
        let server = PgConnectOptions::from_str(&server_url()).unwrap();
        let mut conn = PgConnection::connect_with(&server).await.unwrap();
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
}

/// Serves a test double's router on a loopback port until the returned token is cancelled;
/// returns its base URL.
pub async fn serve_double(app: axum::Router) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .unwrap();
    });
    (base_url, shutdown)
}
