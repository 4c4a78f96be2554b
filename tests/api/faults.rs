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

use crate::helpers::{binary, free_port, ready_within_10s, ScratchDatabase};

const ADMIN: &str = "fault-admin";
const SERVICE: &str = "fault-service";

async fn start(db: &ScratchDatabase, port: u16) -> Child {
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
async fn assert_nothing_acknowledged_was_lost(db: &ScratchDatabase, acknowledged: &[String]) {
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
    let db = ScratchDatabase::new("cl_fault");
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
    let db = ScratchDatabase::new("cl_fault");
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

/// A TCP proxy in front of PostgreSQL that can play a database restart: `down` cuts every open
/// connection and refuses new ones, as a restarting server does, without touching the server the
/// rest of the suite uses; `up` lets connections through again.
struct DatabaseProxy {
    port: u16,
    down: Arc<std::sync::atomic::AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl DatabaseProxy {
    async fn start(target: u16) -> DatabaseProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accepting = tokio::spawn({
            let down = Arc::clone(&down);
            let connections = Arc::clone(&connections);
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if down.load(std::sync::atomic::Ordering::SeqCst) {
                        continue; // dropped: the connection is refused
                    }
                    let relay = tokio::spawn(async move {
                        if let Ok(mut outbound) =
                            tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                        {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().unwrap().push(relay);
                }
            }
        });
        DatabaseProxy {
            port,
            down,
            connections,
            accepting,
        }
    }

    fn down(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for relay in self.connections.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    fn up(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for DatabaseProxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.down();
    }
}

/// One answer seen by the load: when it was asked (since the start), how long it took, status.
#[derive(Debug, Clone, Copy)]
struct Answer {
    asked: Duration,
    took: Duration,
    status: u16,
}

#[tokio::test]
async fn a_database_restart_under_load_gives_fast_503s_heals_itself_and_loses_nothing() {
    let db = ScratchDatabase::new("cl_fault");
    let proxy = DatabaseProxy::start(5432).await;
    let mut proxied = PgConnectOptions::from_str(&db.url).unwrap();
    proxied = proxied.port(proxy.port);
    let port = free_port();
    let mut child = binary()
        .arg("serve")
        .env("DATABASE_URL", proxied.to_url_lossy().to_string())
        .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
        .env("LEDGER_ADMIN_TOKENS", ADMIN)
        .env("LEDGER_SERVICE_TOKENS", SERVICE)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(ready_within_10s(port).await, "the service did not start");
    seed(port).await;

    let started = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|c| {
            let (client, stop, answers, acknowledged) = (
                client.clone(),
                Arc::clone(&stop),
                Arc::clone(&answers),
                Arc::clone(&acknowledged),
            );
            tokio::spawn(async move {
                let key = ["key_a", "key_b", "key_c"][c % 3];
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    i += 1;
                    let asked = started.elapsed();
                    let response = client
                        .post(format!("http://127.0.0.1:{port}/v1/accounts/{key}/debits"))
                        .bearer_auth(SERVICE)
                        .header("Idempotency-Key", format!("r{c}-{i}"))
                        .json(&json!({"operation": "op"}))
                        .send()
                        .await
                        .expect("the service answers throughout");
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    if status == 201 {
                        acknowledged
                            .lock()
                            .unwrap()
                            .push(body["id"].as_str().unwrap().to_owned());
                    } else {
                        assert_eq!(status, 503, "{body}");
                        assert!(
                            body["error"]["code"]
                                .as_str()
                                .is_some_and(|code| code.starts_with("database_")),
                            "{body}"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    let took = started.elapsed() - asked;
                    answers.lock().unwrap().push(Answer {
                        asked,
                        took,
                        status,
                    });
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let outage_began = started.elapsed();
    proxy.down();
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.up();
    let outage_ended = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }

    let answers = answers.lock().unwrap().clone();
    let during: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.asked >= outage_began + Duration::from_millis(100) && a.asked < outage_ended)
        .collect();
    let slowest = during.iter().map(|a| a.took).max().unwrap_or_default();
    assert!(
        during.iter().any(|a| a.status == 503),
        "the outage was seen"
    );
    assert!(
        slowest < Duration::from_secs(6),
        "a request during the outage took {slowest:?}"
    );
    // Healed by itself: debits succeed again within 2 s of the database's return.
    let healed = answers
        .iter()
        .filter(|a| a.status == 201 && a.asked >= outage_ended)
        .map(|a| a.asked - outage_ended)
        .min();
    assert!(
        healed.is_some_and(|after| after < Duration::from_secs(2)),
        "first success after the outage: {healed:?}"
    );
    eprintln!(
        "database outage: {} answers during it (slowest {slowest:?}), first 201 {healed:?} after",
        during.len()
    );

    let _ = child.kill();
    let _ = child.wait();
    drop(proxy);
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_nothing_acknowledged_was_lost(&db, &acknowledged).await;
    db.drop_it().await;
}
