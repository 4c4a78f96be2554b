//! Debit throughput against a running credit-ledger (a benchmark, not a test).
//!
//! ```sh
//! LEDGER_ADMIN_TOKENS=adm LEDGER_SERVICE_TOKENS=svc cargo run --release -- serve &
//! cargo run --release --example bench_debits -- http://127.0.0.1:8080 adm svc 20000 64
//! ```
//! Arguments: base URL, admin token, service token, debits per scenario, concurrency. It runs two
//! scenarios: every debit on one hot account, and debits spread over 1000 accounts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let admin = args.get(2).cloned().unwrap_or_else(|| "adm".into());
    let service = args.get(3).cloned().unwrap_or_else(|| "svc".into());
    let total: usize = args.get(4).and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let concurrency: usize = args.get(5).and_then(|n| n.parse().ok()).unwrap_or(64);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let run = uuid::Uuid::new_v4().simple().to_string();

    let plan = format!("bench-{run}");
    let put = client
        .put(format!("{base}/v1/plans/{plan}"))
        .bearer_auth(&admin)
        .json(&json!({"name": "bench", "interval": "month",
                      "pools": {"credits": {"allowance": 1_000_000_000_000_i64}},
                      "operations": {"op": {"cost": 1}}}))
        .send()
        .await
        .expect("the service answers");
    assert!(put.status().is_success(), "plan: {}", put.status());
    let accounts: Vec<String> = (0..1000).map(|i| format!("bench-{run}-{i}")).collect();
    for key in &accounts {
        let created = client
            .put(format!("{base}/v1/accounts/{key}"))
            .bearer_auth(&admin)
            .json(&json!({"plan": plan}))
            .send()
            .await
            .unwrap();
        assert!(
            created.status().is_success(),
            "account: {}",
            created.status()
        );
    }

    for (name, spread) in [("one hot account", 1usize), ("1000 accounts", 1000)] {
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, base, service, next) = (
                    client.clone(),
                    base.clone(),
                    service.clone(),
                    Arc::clone(&next),
                );
                let accounts = accounts[..spread].to_vec();
                tokio::spawn(async move {
                    let mut failed = 0usize;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            break failed;
                        }
                        let key = &accounts[i % accounts.len()];
                        let response = client
                            .post(format!("{base}/v1/accounts/{key}/debits"))
                            .bearer_auth(&service)
                            .json(&json!({"operation": "op"}))
                            .send()
                            .await;
                        if !matches!(response, Ok(r) if r.status().as_u16() == 201) {
                            failed += 1;
                        }
                    }
                })
            })
            .collect();
        let mut failed = 0;
        for worker in workers {
            failed += worker.await.unwrap();
        }
        let elapsed = started.elapsed();
        println!(
            "{name}: {total} debits in {:.2} s = {:.0} debits/s ({failed} failed, concurrency {concurrency})",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64()
        );
    }
}
