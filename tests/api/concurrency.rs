use std::sync::Arc;

use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_on, TestApp};

async fn plan_with_1000(app: &TestApp) {
    app.put_plan(
        "thousand",
        json!({"name": "Thousand", "interval": "month",
               "pools": {"credits": {"allowance": 1000}},
               "operations": {"job": {"cost": 7}}}),
    )
    .await;
    app.create_account("hot", "thousand").await;
}

async fn assert_exact_outcome(app: &TestApp, statuses: &[u16]) {
    let accepted = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 402).count();
    assert_eq!((accepted, refused), (142, 58), "statuses: {statuses:?}");
    assert_eq!(app.available("hot", "credits").await, Some(6));
    let debit_sum: i64 = app
        .all_entries("hot")
        .await
        .iter()
        .filter(|e| e.0 == "debit")
        .map(|e| e.1)
        .sum();
    assert_eq!(debit_sum, -994);
    assert_eq!(app.count("debits").await, 142);
    let remaining: i64 = sqlx::query_scalar("SELECT remaining FROM grants WHERE key_id = 'hot'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(remaining, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_parallel_debits_of_7_against_1000_accept_exactly_142() {
    let app = spawn_app().await;
    plan_with_1000(&app).await;
    let calls = (0..200).map(|_| app.debit("hot", json!({"operation": "job"})));
    let statuses: Vec<u16> = futures::future::join_all(calls)
        .await
        .iter()
        .map(|r| r.status.as_u16())
        .collect();
    assert_exact_outcome(&app, &statuses).await;
    app.assert_audit_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_service_instances_on_one_database_never_overspend() {
    let first = spawn_app().await;
    let second = spawn_app_on(Arc::clone(&first.db)).await;
    plan_with_1000(&first).await;
    let calls = (0..200).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        app.debit("hot", json!({"operation": "job"}))
    });
    let statuses: Vec<u16> = futures::future::join_all(calls)
        .await
        .iter()
        .map(|r| r.status.as_u16())
        .collect();
    assert_exact_outcome(&first, &statuses).await;
    first.assert_audit_clean().await;
}
