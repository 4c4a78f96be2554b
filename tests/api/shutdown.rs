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
