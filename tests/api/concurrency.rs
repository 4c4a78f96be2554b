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

/// Three instances on one database, all at once: debits, reserve-and-commit pairs and pack grants
/// on one account, just after its period ended (so the first of them rolls it). No request fails
/// for any reason but credits, the period rolls once, nothing is overspent, the audit is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_debiting_reserving_granting_and_rolling_at_once_stay_exact() {
    let first = spawn_app().await;
    let second = spawn_app_on(Arc::clone(&first.db)).await;
    let third = spawn_app_on(Arc::clone(&first.db)).await;
    plan_with_1000(&first).await;
    let apps = [&first, &second, &third];
    // The period ends for everyone: the first command on any instance rolls it.
    for app in apps {
        app.clock.advance(chrono::Duration::days(32));
    }
    let debits = (0..120).map(|i| async move {
        apps[i % 3]
            .debit("hot", json!({"operation": "job"}))
            .await
            .status
            .as_u16()
    });
    let pairs = (0..30).map(|i| async move {
        let app = apps[(i + 1) % 3];
        let held = app
            .post("/v1/accounts/hot/reservations")
            .json(json!({"operation": "job", "ttl_seconds": 600}))
            .send()
            .await;
        if held.status != 201 {
            return held.status.as_u16();
        }
        let id = held.body["id"].as_str().unwrap().to_owned();
        apps[(i + 2) % 3]
            .post(&format!("/v1/reservations/{id}/commit"))
            .json(json!({}))
            .send()
            .await
            .status
            .as_u16()
    });
    let grants = (0..9).map(|i| async move {
        apps[i % 3]
            .post("/v1/accounts/hot/grants")
            .idempotency_key(&format!("pack-{i}"))
            .json(json!({"kind": "pack", "amount": 50}))
            .send()
            .await
            .status
            .as_u16()
    });
    let (debits, pairs, grants) = futures::future::join3(
        futures::future::join_all(debits),
        futures::future::join_all(pairs),
        futures::future::join_all(grants),
    )
    .await;
    let statuses: Vec<u16> = debits
        .iter()
        .chain(&pairs)
        .chain(&grants)
        .copied()
        .collect();
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 201 | 402)),
        "only successes and 402s: {statuses:?}"
    );
    assert!(grants.iter().all(|s| *s == 201), "{grants:?}");
    // One allowance per period, the new one included.
    let per_period: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM grants WHERE key_id = 'hot' AND kind = 'allowance' GROUP BY period_start",
    )
    .fetch_all(&first.db.pool)
    .await
    .unwrap();
    assert_eq!(per_period, vec![1, 1], "{per_period:?}");
    // Nothing overspent: what was taken fits in what was granted this period, 7 credits a time.
    let accepted_debits = debits.iter().filter(|s| **s == 201).count() as i64;
    let committed = pairs.iter().filter(|s| matches!(s, 200 | 201)).count() as i64;
    let available = first.available("hot", "credits").await.unwrap();
    assert!(available >= 0);
    assert_eq!(
        available,
        1000 + 9 * 50 - 7 * (accepted_debits + committed),
        "debits {accepted_debits}, commits {committed}"
    );
    first.assert_audit_clean().await;
}
