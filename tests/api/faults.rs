//! Faults under load, against the real binary: kill -9 and SIGTERM (with a half-open connection)
//! while debits are in flight. Every debit answered 201 is in the journal after a restart, and
//! `credit-ledger audit` finds nothing wrong.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::str::FromStr;
use tokio::io::AsyncWriteExt;

use crate::helpers::{binary, free_port, ready_within_10s, server_url};

const ADMIN: &str = "fault-admin";
const SERVICE: &str = "fault-service";

/// A fresh database, dropped afterwards.
struct Database {
    name: String,
    url: String,
}

impl Database {
    fn new() -> Database {
        let name = format!("cl_fault_{}", uuid::Uuid::new_v4().simple());
        let server = PgConnectOptions::from_str(&server_url()).unwrap();
        let url = server.database(&name).to_url_lossy().to_string();
        Database { name, url }
    }

    async fn drop_it(self) {
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

async fn start(db: &Database, port: u16) -> Child {
    let mut child = binary()
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
        .env("LEDGER_ADMIN_TOKENS", ADMIN)
        .env("LEDGER_SERVICE_TOKENS", SERVICE)
        .env("LEDGER_SHUTDOWN_GRACE_SECS", "2")
        .env("LEDGER_HEADER_TIMEOUT_SECS", "120")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    if ready_within_10s(port).await {
        return child;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the service did not become ready");
}

async fn seed(port: u16) {
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let plan = client
        .put(format!("{base}/v1/plans/pro"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "Pro", "interval": "month",
                      "pools": {"credits": {"allowance": 1_000_000}},
                      "operations": {"op": {"cost": 1}}}))
        .send()
        .await
        .unwrap();
    assert!(plan.status().is_success());
    for key in ["key_a", "key_b", "key_c"] {
        let account = client
            .put(format!("{base}/v1/accounts/{key}"))
            .bearer_auth(ADMIN)
            .json(&json!({"plan": "pro"}))
            .send()
            .await
            .unwrap();
        assert_eq!(account.status(), 201);
    }
}

/// Clients debiting until the service stops answering; returns the ids of the debits answered 201.
fn debit_until_down(
    port: u16,
    clients: usize,
) -> (Arc<Mutex<Vec<String>>>, Vec<tokio::task::JoinHandle<()>>) {
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let tasks = (0..clients)
        .map(|c| {
            let client = client.clone();
            let acknowledged = Arc::clone(&acknowledged);
            tokio::spawn(async move {
                let key = ["key_a", "key_b", "key_c"][c % 3];
                for i in 0.. {
                    let response = client
                        .post(format!("http://127.0.0.1:{port}/v1/accounts/{key}/debits"))
                        .bearer_auth(SERVICE)
                        .header("Idempotency-Key", format!("c{c}-{i}"))
                        .json(&json!({"operation": "op"}))
                        .send()
                        .await;
                    let Ok(response) = response else { break };
                    if response.status() == 201 {
                        let body: Value = response.json().await.unwrap_or(Value::Null);
                        if let Some(id) = body["id"].as_str() {
                            acknowledged.lock().unwrap().push(id.to_owned());
                        }
                    }
                }
            })
        })
        .collect();
    (acknowledged, tasks)
}

/// Every acknowledged debit is stored with its journal entry, and the audit is clean.
async fn assert_nothing_acknowledged_was_lost(db: &Database, acknowledged: &[String]) {
    assert!(
        acknowledged.len() > 50,
        "only {} debits were acknowledged",
        acknowledged.len()
    );
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    let ids: Vec<uuid::Uuid> = acknowledged.iter().map(|id| id.parse().unwrap()).collect();
    let found: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT d.id) FROM debits d JOIN entries e ON e.debit_id = d.id WHERE d.id = ANY ($1)",
    )
    .bind(&ids)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        found as usize,
        ids.len(),
        "every acknowledged debit is journaled"
    );
    conn.close().await.ok();
    let audit = binary()
        .arg("audit")
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        audit.status.success(),
        "audit: {}",
        String::from_utf8_lossy(&audit.stdout)
    );
}

#[tokio::test]
async fn kill_9_under_load_loses_no_acknowledged_debit() {
    let db = Database::new();
    let port = free_port();
    let mut child = start(&db, port).await;
    seed(port).await;
    let (acknowledged, tasks) = debit_until_down(port, 16);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    // After a restart the service answers again, and nothing acknowledged is missing.
    let mut again = start(&db, port).await;
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_nothing_acknowledged_was_lost(&db, &acknowledged).await;
    again.kill().unwrap();
    again.wait().unwrap();
    db.drop_it().await;
}

#[tokio::test]
async fn sigterm_under_load_with_a_half_open_connection_stops_within_the_grace() {
    let db = Database::new();
    let port = free_port();
    let mut child = start(&db, port).await;
    seed(port).await;
    // A client that sent half a request line and went quiet.
    let mut half_open = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    half_open
        .write_all(b"POST /v1/accounts/key_a/deb")
        .await
        .unwrap();
    let (acknowledged, tasks) = debit_until_down(port, 16);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut status = None;
    while started.elapsed() < Duration::from_secs(15) {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("the service did not stop within 15 s of SIGTERM");
    };
    let took = started.elapsed();
    // The grace is 2 s; the rest is closing the pool and the scheduler.
    assert!(took < Duration::from_secs(6), "stopped after {took:?}");
    assert!(status.success(), "exit status {status}");
    for task in tasks {
        task.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_nothing_acknowledged_was_lost(&db, &acknowledged).await;
    db.drop_it().await;
}
