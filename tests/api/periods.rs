//! Period rolls (rule 4): rollover, expiry, catch-up, exactly once. Time moves by the test clock.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_on, TestApp};

fn ts(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

async fn daily_plan(app: &TestApp, allowance: i64, rollover_cap: Option<i64>) {
    app.put_plan(
        "daily",
        json!({"name": "Daily", "interval": "day",
               "pools": {"credits": {"allowance": allowance, "rollover_cap": rollover_cap}},
               "operations": {"job": {"cost": 1}}}),
    )
    .await;
}

async fn balance(app: &TestApp, key: &str) -> Value {
    let response = app.get(&format!("/v1/accounts/{key}/balance")).send().await;
    response.assert_status(200);
    response.body
}

fn grant_kinds(balance: &Value) -> Vec<(String, i64)> {
    balance["pools"][0]["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["kind"].as_str().unwrap().to_owned(),
                g["remaining"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn allowance_grants(app: &TestApp, key: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM grants WHERE key_id = $1 AND kind = 'allowance'")
        .bind(key)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_roll_carries_unused_allowance_up_to_the_cap_and_expires_the_rest() {
    let app = spawn_app().await;
    daily_plan(&app, 100, Some(30)).await;
    let account = app.create_account("key_1", "daily").await;
    app.debit("key_1", json!({"cost": 50}))
        .await
        .assert_status(201);
    let end = ts(&account["current_period"]["end"]);

    app.clock.advance(Duration::days(1) + Duration::seconds(1));
    let rolled = balance(&app, "key_1").await;
    assert_eq!(ts(&rolled["period"]["start"]), end);
    assert_eq!(ts(&rolled["period"]["end"]), end + Duration::days(1));
    assert_eq!(
        grant_kinds(&rolled),
        vec![("rollover".to_owned(), 30), ("allowance".to_owned(), 100)]
    );
    let pool = &rolled["pools"][0];
    assert_eq!(
        (pool["available"].as_i64(), pool["used"].as_i64()),
        (Some(130), Some(0))
    );
    // Both rollover and allowance expire with the new period.
    for grant in pool["grants"].as_array().unwrap() {
        assert_eq!(ts(&grant["expires_at"]), end + Duration::days(1));
    }
    let kinds: Vec<(String, i64)> = app
        .all_entries("key_1")
        .await
        .into_iter()
        .map(|e| (e.0, e.1))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("grant".to_owned(), 100),
            ("debit".to_owned(), -50),
            ("expiration".to_owned(), -50),
            ("grant".to_owned(), 30),
            ("grant".to_owned(), 100),
        ]
    );
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn without_a_cap_nothing_rolls_over() {
    let app = spawn_app().await;
    daily_plan(&app, 100, None).await;
    app.create_account("key_1", "daily").await;
    app.debit("key_1", json!({"cost": 10}))
        .await
        .assert_status(201);
    app.clock.advance(Duration::days(1) + Duration::seconds(1));
    let rolled = balance(&app, "key_1").await;
    assert_eq!(grant_kinds(&rolled), vec![("allowance".to_owned(), 100)]);
    assert_eq!(rolled["pools"][0]["available"], 100);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn rollover_does_not_roll_again() {
    let app = spawn_app().await;
    daily_plan(&app, 100, Some(80)).await;
    app.create_account("key_1", "daily").await;
    app.clock.advance(Duration::days(1) + Duration::seconds(1));
    // Day 2: rollover 80 (capped), allowance 100. Spend 30: the rollover goes first.
    let debit = app.debit("key_1", json!({"cost": 30})).await;
    debit.assert_status(201);
    assert_eq!(debit.body["drawn"][0]["kind"], "rollover");
    app.clock.advance(Duration::days(1));
    let day3 = balance(&app, "key_1").await;
    // The unspent 50 of rollover expired; only the full unused allowance (capped) carries.
    assert_eq!(
        grant_kinds(&day3),
        vec![("rollover".to_owned(), 80), ("allowance".to_owned(), 100)]
    );
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn rollover_is_spent_first_and_packs_last() {
    let app = spawn_app().await;
    daily_plan(&app, 20, Some(20)).await;
    app.create_account("key_1", "daily").await;
    app.post("/v1/accounts/key_1/grants")
        .json(json!({"kind": "pack", "amount": 100}))
        .send()
        .await
        .assert_status(201);
    app.clock.advance(Duration::days(1) + Duration::seconds(1));
    let debit = app.debit("key_1", json!({"cost": 45})).await;
    debit.assert_status(201);
    let drawn: Vec<(String, i64)> = debit.body["drawn"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["amount"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        drawn,
        vec![
            ("rollover".to_owned(), 20),
            ("allowance".to_owned(), 20),
            ("pack".to_owned(), 5)
        ]
    );
    assert_eq!(debit.body["remaining"], 95);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_debit_after_the_period_ended_rolls_first_and_lands_in_the_new_period() {
    let app = spawn_app().await;
    daily_plan(&app, 10, None).await;
    let account = app.create_account("key_1", "daily").await;
    app.debit("key_1", json!({"cost": 10}))
        .await
        .assert_status(201);
    app.debit("key_1", json!({"cost": 1}))
        .await
        .assert_error(402, "credits_exhausted");
    let end = ts(&account["current_period"]["end"]);
    app.clock.advance(Duration::days(1) + Duration::seconds(1));
    let debit = app.debit("key_1", json!({"cost": 4})).await;
    debit.assert_status(201);
    assert_eq!(debit.body["remaining"], 6);
    assert_eq!(ts(&debit.body["reset_at"]), end + Duration::days(1));
    assert_eq!(allowance_grants(&app, "key_1").await, 2);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn catch_up_rolls_every_missed_period_in_order() {
    let app = spawn_app().await;
    daily_plan(&app, 100, Some(40)).await;
    let account = app.create_account("key_1", "daily").await;
    let first_end = ts(&account["current_period"]["end"]);
    app.debit("key_1", json!({"cost": 90}))
        .await
        .assert_status(201);
    // The service was down for three and a half days.
    app.clock.advance(Duration::days(3) + Duration::hours(12));
    let now_balance = balance(&app, "key_1").await;
    assert_eq!(
        ts(&now_balance["period"]["start"]),
        first_end + Duration::days(2)
    );
    assert_eq!(allowance_grants(&app, "key_1").await, 4);
    let starts: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT period_start FROM grants WHERE key_id = 'key_1' AND kind = 'allowance'
          ORDER BY created_at, id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let expected: Vec<DateTime<Utc>> = (0..4).map(|k| first_end + Duration::days(k - 1)).collect();
    assert_eq!(starts, expected, "one allowance per period, in order");
    let rollovers: Vec<i64> = sqlx::query_scalar(
        "SELECT amount FROM grants WHERE key_id = 'key_1' AND kind = 'rollover' ORDER BY period_start",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    // Day 1 left 10 unused; each idle day after left the full 100, capped at 40.
    assert_eq!(rollovers, vec![10, 40, 40]);
    assert_eq!(now_balance["pools"][0]["available"], 140);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn an_expiring_pack_gets_an_expiration_entry_at_its_instant() {
    let app = spawn_app().await;
    daily_plan(&app, 10, None).await;
    app.create_account("key_1", "daily").await;
    let expires = (Utc::now() + Duration::hours(3)).to_rfc3339();
    let pack = app
        .post("/v1/accounts/key_1/grants")
        .json(json!({"kind": "pack", "amount": 50, "expires_at": expires}))
        .send()
        .await;
    pack.assert_status(201);
    let expires_at = ts(&pack.body["expires_at"]);
    app.clock.freeze_at(expires_at - Duration::microseconds(1));
    assert_eq!(balance(&app, "key_1").await["pools"][0]["available"], 60);
    app.clock.freeze_at(expires_at);
    let after = balance(&app, "key_1").await;
    assert_eq!(after["pools"][0]["available"], 10);
    let last = app.all_entries("key_1").await.pop().unwrap();
    assert_eq!((last.0.as_str(), last.1), ("expiration", -50));
    let grants = app.get("/v1/accounts/key_1/grants").send().await;
    let listed = grants.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == pack.body["id"])
        .unwrap()
        .clone();
    assert_eq!(
        (listed["status"].as_str(), listed["remaining"].as_i64()),
        (Some("expired"), Some(0))
    );
    app.assert_audit_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_rolling_at_once_roll_once() {
    let first = spawn_app().await;
    let second = spawn_app_on(Arc::clone(&first.db)).await;
    daily_plan(&first, 100, Some(50)).await;
    for key in ["a", "b", "c"] {
        first.create_account(key, "daily").await;
    }
    for app in [&first, &second] {
        app.clock.advance(Duration::days(2) + Duration::seconds(1));
    }
    // Both schedulers and a flurry of reads and debits, all at once.
    let mut work = Vec::new();
    for app in [&first, &second] {
        let ledger = app.ledger.clone();
        work.push(tokio::spawn(async move {
            ledger.maintain_due(2).await.unwrap().rolled
        }));
    }
    let reads = (0..20).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        let key = ["a", "b", "c"][i % 3];
        async move {
            if i % 4 == 0 {
                app.debit(key, json!({"cost": 1})).await.assert_status(201);
            } else {
                balance(app, key).await;
            }
        }
    });
    futures::future::join_all(reads).await;
    for w in work {
        w.await.unwrap();
    }
    for key in ["a", "b", "c"] {
        assert_eq!(allowance_grants(&first, key).await, 3, "account {key}");
        let rollovers: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM grants WHERE key_id = $1 AND kind = 'rollover'",
        )
        .bind(key)
        .fetch_one(&first.db.pool)
        .await
        .unwrap();
        assert_eq!(rollovers, 2, "account {key}");
    }
    first.assert_audit_clean().await;
}

#[tokio::test]
async fn the_scheduler_job_rolls_idle_accounts() {
    let app = spawn_app().await;
    daily_plan(&app, 100, None).await;
    app.create_account("idle", "daily").await;
    app.clock.advance(Duration::days(1) + Duration::seconds(1));
    credit_ledger::scheduler::run_once(&app.ledger).await;
    assert_eq!(allowance_grants(&app, "idle").await, 2);
    // A second pass has nothing left to do.
    let again = app.ledger.maintain_due(100).await.unwrap();
    assert_eq!((again.rolled, again.expired), (0, 0));
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn the_cron_scheduler_runs_the_job_on_its_schedule() {
    let app = spawn_app().await;
    daily_plan(&app, 100, None).await;
    app.create_account("idle", "daily").await;
    app.clock.advance(Duration::days(1) + Duration::seconds(1));
    let mut scheduler = credit_ledger::scheduler::start(app.ledger.clone(), "* * * * * *")
        .await
        .unwrap();
    let mut rolled = false;
    for _ in 0..50 {
        if allowance_grants(&app, "idle").await == 2 {
            rolled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    scheduler.shutdown().await.unwrap();
    assert!(rolled, "the job ran within five seconds");
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn each_pool_rolls_on_its_own() {
    let app = spawn_app().await;
    app.put_plan(
        "multi",
        json!({"name": "Multi", "interval": "day",
               "pools": {"credits": {"allowance": 100, "rollover_cap": 100},
                         "ai-tokens": {"allowance": 1000, "rollover_cap": 10}},
               "operations": {"chat": {"pool": "ai-tokens", "cost": 1}}}),
    )
    .await;
    app.create_account("key_1", "multi").await;
    app.debit("key_1", json!({"cost": 40}))
        .await
        .assert_status(201);
    app.debit("key_1", json!({"operation": "chat", "quantity": 5}))
        .await
        .assert_status(201);
    app.clock.advance(Duration::days(1) + Duration::seconds(1));
    assert_eq!(app.available("key_1", "credits").await, Some(160));
    assert_eq!(app.available("key_1", "ai-tokens").await, Some(1010));
    // Exhausting one pool leaves the other untouched.
    app.debit("key_1", json!({"cost": 160}))
        .await
        .assert_status(201);
    app.debit("key_1", json!({"cost": 1}))
        .await
        .assert_error(402, "credits_exhausted");
    app.debit("key_1", json!({"operation": "chat"}))
        .await
        .assert_status(201);
    app.assert_audit_clean().await;
}
