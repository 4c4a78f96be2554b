//! Slow and half-open clients: a request whose headers never finish is dropped, and shutdown
//! does not wait for it beyond its grace period.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with, TestApp};

/// A connection that has sent half a request line.
async fn half_open(app: &TestApp) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(b"GET /healthz HT").await.expect("write");
    stream
}

/// Reads until the server closes the connection; anything it sends first (a 408) is fine.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection was still open after {limit:?}"),
        }
    }
}

#[tokio::test]
async fn a_request_whose_headers_never_finish_is_dropped_after_the_header_timeout() {
    let app = spawn_app_with(&[("LEDGER_HEADER_TIMEOUT_SECS", "1")]).await;
    let mut stream = half_open(&app).await;
    let waited = closed_within(&mut stream, Duration::from_secs(10)).await;
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    // The service still answers others.
    app.get("/healthz").send().await.assert_status(200);
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_half_open_connection_beyond_its_grace() {
    let app = spawn_app_with(&[
        ("LEDGER_HEADER_TIMEOUT_SECS", "120"),
        ("LEDGER_SHUTDOWN_GRACE_SECS", "1"),
    ])
    .await;
    let mut stream = half_open(&app).await;
    // An idle keep-alive connection too.
    app.get("/healthz").send().await.assert_status(200);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("the server stopped");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
    closed_within(&mut stream, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn one_locked_account_fails_alone_and_fast_while_its_neighbours_are_served() {
    let app = spawn_app_with(&[
        ("LEDGER_DB_LOCK_TIMEOUT_MS", "300"),
        // One writer: the stuck account and its neighbour share every batch.
        ("LEDGER_WRITERS", "1"),
    ])
    .await;
    app.create_plan("pro", Some(1000)).await;
    app.create_account("key_stuck", "pro").await;
    app.create_account("key_ok", "pro").await;
    // Something else holds key_stuck's row.
    let mut holder = app.db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM accounts WHERE key_id = 'key_stuck' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let started = Instant::now();
    let debits = (0..40).map(|i| {
        let key = if i % 2 == 0 { "key_stuck" } else { "key_ok" };
        let app = &app;
        async move {
            (
                key,
                app.debit(key, serde_json::json!({"operation": "search"}))
                    .await,
            )
        }
    });
    let answers = futures::future::join_all(debits).await;
    let took = started.elapsed();
    for (key, response) in &answers {
        if *key == "key_ok" {
            response.assert_status(201);
        } else {
            response.assert_error(503, "database_timeout");
        }
    }
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // Readiness has its own connection: a pool busy with traffic is not a database down.
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(app.ledger.db().acquire().await.unwrap());
    }
    app.get("/readyz")
        .no_token()
        .send()
        .await
        .assert_status(200);
    drop(held);
    holder.rollback().await.unwrap();
    assert_eq!(app.available("key_ok", "credits").await, Some(980));
    assert_eq!(app.available("key_stuck", "credits").await, Some(1000));
    app.assert_audit_clean().await;
}
