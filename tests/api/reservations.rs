//! Reservations for long work, refunds and overage.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, TestResponse, SERVICE};

async fn ready(app: &TestApp, allowance: i64) {
    app.put_plan(
        "pro",
        json!({"name": "Pro", "interval": "day",
               "pools": {"credits": {"allowance": allowance, "rollover_cap": 1000}},
               "operations": {"render": {"cost": 10}}}),
    )
    .await;
    app.create_account("key_1", "pro").await;
}

async fn reserve(app: &TestApp, body: Value) -> TestResponse {
    app.post("/v1/accounts/key_1/reservations")
        .token(SERVICE)
        .json(body)
        .send()
        .await
}

async fn pool(app: &TestApp) -> Value {
    let balance = app.get("/v1/accounts/key_1/balance").send().await;
    balance.assert_status(200);
    balance.body["pools"][0].clone()
}

#[tokio::test]
async fn a_reservation_holds_credits_at_once() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    let held = reserve(&app, json!({"operation": "render", "quantity": 3})).await;
    held.assert_status(201);
    assert_eq!(held.body["amount"], 30);
    assert_eq!(held.body["status"], "active");
    assert_eq!(held.body["remaining"], 70);
    let pool = pool(&app).await;
    assert_eq!(
        (pool["available"].as_i64(), pool["reserved"].as_i64()),
        (Some(70), Some(30))
    );
    let last = app.all_entries("key_1").await.pop().unwrap();
    assert_eq!((last.0.as_str(), last.1), ("hold", -30));
    let fetched = app
        .get(&format!(
            "/v1/reservations/{}",
            held.body["id"].as_str().unwrap()
        ))
        .token(SERVICE)
        .send()
        .await;
    fetched.assert_status(200);
    assert_eq!(fetched.body["status"], "active");
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_partial_commit_debits_that_much_and_returns_the_rest() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    let held = reserve(&app, json!({"cost": 40, "ttl_seconds": 600})).await;
    let id = held.body["id"].as_str().unwrap().to_owned();
    let debit = app
        .post(&format!("/v1/reservations/{id}/commit"))
        .token(SERVICE)
        .json(json!({"amount": 17}))
        .send()
        .await;
    debit.assert_status(200);
    assert_eq!(debit.body["cost"], 17);
    assert_eq!(debit.body["reservation_id"], id.as_str());
    assert_eq!(debit.body["remaining"], 83);
    assert_eq!(debit.header("x-credits-remaining"), Some("83"));
    let pool = pool(&app).await;
    assert_eq!(
        (
            pool["available"].as_i64(),
            pool["reserved"].as_i64(),
            pool["used"].as_i64()
        ),
        (Some(83), Some(0), Some(17))
    );
    let after = app.get(&format!("/v1/reservations/{id}")).send().await;
    assert_eq!(after.body["status"], "committed");
    assert_eq!(after.body["committed_amount"], 17);
    assert_eq!(after.body["debit_id"], debit.body["id"]);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_full_commit_without_a_body_debits_everything_held() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    let held = reserve(&app, json!({"operation": "render", "quantity": 2})).await;
    let id = held.body["id"].as_str().unwrap();
    let debit = app
        .post(&format!("/v1/reservations/{id}/commit"))
        .token(SERVICE)
        .send()
        .await;
    debit.assert_status(200);
    assert_eq!(
        (
            debit.body["cost"].as_i64(),
            debit.body["operation"].as_str()
        ),
        (Some(20), Some("render"))
    );
    assert_eq!(pool(&app).await["available"], 80);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn committing_more_than_held_is_422_and_changes_nothing() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    let held = reserve(&app, json!({"cost": 20})).await;
    let id = held.body["id"].as_str().unwrap();
    let before = app.snapshot().await;
    let over = app
        .post(&format!("/v1/reservations/{id}/commit"))
        .json(json!({"amount": 21}))
        .send()
        .await;
    over.assert_error(422, "amount_exceeds_reservation");
    assert_eq!(over.body["error"]["details"]["held"], 20);
    app.post(&format!("/v1/reservations/{id}/commit"))
        .json(json!({"amount": 0}))
        .send()
        .await
        .assert_error(422, "invalid_request");
    assert_eq!(app.snapshot().await, before);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn release_returns_everything_and_a_finished_reservation_is_not_active() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    let held = reserve(&app, json!({"cost": 60})).await;
    let id = held.body["id"].as_str().unwrap();
    let released = app
        .post(&format!("/v1/reservations/{id}/release"))
        .token(SERVICE)
        .send()
        .await;
    released.assert_status(200);
    assert_eq!(released.body["status"], "released");
    assert_eq!(released.body["remaining"], 100);
    for action in ["commit", "release"] {
        let again = app
            .post(&format!("/v1/reservations/{id}/{action}"))
            .send()
            .await;
        again.assert_error(409, "reservation_not_active");
        assert_eq!(again.body["error"]["details"]["status"], "released");
    }
    let committed = reserve(&app, json!({"cost": 5})).await;
    let cid = committed.body["id"].as_str().unwrap();
    app.post(&format!("/v1/reservations/{cid}/commit"))
        .send()
        .await
        .assert_status(200);
    app.post(&format!("/v1/reservations/{cid}/release"))
        .send()
        .await
        .assert_error(409, "reservation_not_active");
    app.post(&format!(
        "/v1/reservations/{}/release",
        uuid::Uuid::now_v7()
    ))
    .send()
    .await
    .assert_error(404, "reservation_not_found");
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_retried_release_with_its_idempotency_key_answers_the_first_release_again() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    let held = reserve(&app, json!({"cost": 60})).await;
    let id = held.body["id"].as_str().unwrap();
    let release = |key: &str| {
        app.post(&format!("/v1/reservations/{id}/release"))
            .token(SERVICE)
            .idempotency_key(key)
            .send()
    };
    let first = release("job-7-release").await;
    first.assert_status(200);
    assert_eq!(first.header("idempotent-replayed"), None);
    let retried = release("job-7-release").await;
    retried.assert_status(200);
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
    assert_eq!(retried.body, first.body);
    assert_eq!(app.available("key_1", "credits").await, Some(100));
    let releases = app
        .all_entries("key_1")
        .await
        .into_iter()
        .filter(|(kind, _, _)| kind == "release")
        .count();
    assert_eq!(releases, 1, "credits came back once");

    // Another key is another request: the reservation is no longer active.
    release("job-7-release-again")
        .await
        .assert_error(409, "reservation_not_active");
    // The key of the release, used to commit, is another request with that key.
    let other = reserve(&app, json!({"cost": 5})).await;
    let other_id = other.body["id"].as_str().unwrap();
    app.post(&format!("/v1/reservations/{other_id}/commit"))
        .idempotency_key("job-7-release")
        .send()
        .await
        .assert_error(409, "idempotency_key_reused");
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_hold_expires_after_its_ttl_and_its_credits_come_back_once() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    let held = reserve(&app, json!({"cost": 50, "ttl_seconds": 1})).await;
    let id = held.body["id"].as_str().unwrap().to_owned();
    assert_eq!(pool(&app).await["available"], 50);
    app.clock.advance(Duration::seconds(2));
    // Any read of the account releases it, lazily.
    let pool_now = pool(&app).await;
    assert_eq!(
        (
            pool_now["available"].as_i64(),
            pool_now["reserved"].as_i64()
        ),
        (Some(100), Some(0))
    );
    let expired = app.get(&format!("/v1/reservations/{id}")).send().await;
    assert_eq!(expired.body["status"], "expired");
    app.post(&format!("/v1/reservations/{id}/commit"))
        .send()
        .await
        .assert_error(409, "reservation_not_active");
    // The scheduler has nothing left to do, and the credits came back exactly once.
    let again = app.ledger.maintain_due(100).await.unwrap();
    assert_eq!(again.rolled, 0);
    let releases = app
        .all_entries("key_1")
        .await
        .into_iter()
        .filter(|e| e.0 == "release")
        .count();
    assert_eq!(releases, 1);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn the_scheduler_releases_expired_holds_of_idle_accounts() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    let held = reserve(&app, json!({"cost": 70, "ttl_seconds": 1})).await;
    held.assert_status(201);
    app.clock.advance(Duration::seconds(2));
    credit_ledger::scheduler::run_once(&app.ledger).await;
    let status: String = sqlx::query_scalar("SELECT status::text FROM reservations")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "expired");
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_debit_sees_credits_of_a_lapsed_hold() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    reserve(&app, json!({"cost": 100, "ttl_seconds": 1}))
        .await
        .assert_status(201);
    app.debit("key_1", json!({"cost": 1}))
        .await
        .assert_error(402, "credits_exhausted");
    app.clock.advance(Duration::seconds(2));
    app.debit("key_1", json!({"cost": 100}))
        .await
        .assert_status(201);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_reservation_that_cannot_be_covered_is_402_and_bad_ttls_422() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    let before = app.snapshot().await;
    let refused = reserve(&app, json!({"operation": "render", "quantity": 11})).await;
    refused.assert_error(402, "credits_exhausted");
    assert_eq!(refused.body["error"]["details"]["required"], 110);
    for ttl in [0, -5, 86_401] {
        let bad = reserve(&app, json!({"cost": 1, "ttl_seconds": ttl})).await;
        bad.assert_error(422, "invalid_request");
        assert_eq!(bad.body["error"]["details"]["field"], "ttl_seconds");
    }
    reserve(&app, json!({"operation": "nope"}))
        .await
        .assert_error(422, "unknown_operation");
    reserve(&app, json!({"cost": 0}))
        .await
        .assert_error(422, "invalid_request");
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn reservations_are_idempotent() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    let send = || {
        app.post("/v1/accounts/key_1/reservations")
            .idempotency_key("job-9")
            .json(json!({"cost": 25}))
            .send()
    };
    let first = send().await;
    let second = send().await;
    second.assert_status(201);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(second.body, first.body);
    assert_eq!(pool(&app).await["available"], 75);
    app.assert_audit_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_parallel_reserve_then_commit_of_10_against_300_commit_exactly_30() {
    let app = spawn_app().await;
    ready(&app, 300).await;
    let jobs = (0..60).map(|_| async {
        let held = reserve(&app, json!({"cost": 10})).await;
        if held.status != 201 {
            assert_eq!(held.error_code(), "credits_exhausted");
            return false;
        }
        let id = held.body["id"].as_str().unwrap().to_owned();
        let debit = app
            .post(&format!("/v1/reservations/{id}/commit"))
            .token(SERVICE)
            .send()
            .await;
        debit.assert_status(200);
        true
    });
    let committed = futures::future::join_all(jobs)
        .await
        .into_iter()
        .filter(|c| *c)
        .count();
    assert_eq!(committed, 30);
    let pool = pool(&app).await;
    assert_eq!(
        (pool["available"].as_i64(), pool["used"].as_i64()),
        (Some(0), Some(300))
    );
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_hold_survives_a_period_roll_and_its_allowance_does_not_roll_over() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    // Late in the period, a hold that outlives it.
    app.clock.advance(Duration::hours(23));
    let held = reserve(&app, json!({"cost": 40, "ttl_seconds": 86_400})).await;
    let id = held.body["id"].as_str().unwrap().to_owned();
    app.clock.advance(Duration::hours(2));
    // Rolled: the 60 unheld carried over (cap 1000), a new 100; the held 40 stays held.
    let rolled = pool(&app).await;
    assert_eq!(
        (rolled["available"].as_i64(), rolled["reserved"].as_i64()),
        (Some(160), Some(40))
    );
    let debit = app
        .post(&format!("/v1/reservations/{id}/commit"))
        .json(json!({"amount": 25}))
        .send()
        .await;
    debit.assert_status(200);
    assert_eq!(debit.body["drawn"][0]["kind"], "allowance");
    // The 15 not committed went back to the expired allowance and expired with it.
    assert_eq!(pool(&app).await["available"], 160);
    let last = app.all_entries("key_1").await.pop().unwrap();
    assert_eq!((last.0.as_str(), last.1), ("expiration", -15));
    app.assert_audit_clean().await;
}

async fn debit_id(response: &TestResponse) -> String {
    response.assert_status(201);
    response.body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn refunds_return_credits_up_to_the_debit_and_not_beyond() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    let id = debit_id(&app.debit("key_1", json!({"cost": 30})).await).await;
    let first = app
        .post(&format!("/v1/debits/{id}/refunds"))
        .json(json!({"amount": 10, "reason": "failed render"}))
        .send()
        .await;
    first.assert_status(201);
    assert_eq!(
        (
            first.body["amount"].as_i64(),
            first.body["remaining"].as_i64()
        ),
        (Some(10), Some(80))
    );
    assert_eq!(
        first.body["parts"][0]["returned_to"],
        first.body["parts"][0]["grant_id"]
    );
    let pool_after = pool(&app).await;
    assert_eq!(pool_after["used"], 20);
    let before = app.snapshot().await;
    let over = app
        .post(&format!("/v1/debits/{id}/refunds"))
        .json(json!({"amount": 21}))
        .send()
        .await;
    over.assert_error(422, "refund_exceeds_debit");
    assert_eq!(over.body["error"]["details"]["refundable"], 20);
    assert_eq!(app.snapshot().await, before);
    // Without an amount: everything that is left.
    let rest = app.post(&format!("/v1/debits/{id}/refunds")).send().await;
    rest.assert_status(201);
    assert_eq!(rest.body["amount"], 20);
    assert_eq!(pool(&app).await["available"], 100);
    app.post(&format!("/v1/debits/{id}/refunds"))
        .send()
        .await
        .assert_error(422, "refund_exceeds_debit");
    app.post(&format!("/v1/debits/{}/refunds", uuid::Uuid::now_v7()))
        .send()
        .await
        .assert_error(404, "debit_not_found");
    app.post(&format!("/v1/debits/{id}/refunds"))
        .token(SERVICE)
        .send()
        .await
        .assert_error(403, "forbidden");
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_refund_to_an_expired_grant_becomes_a_refund_grant_for_the_current_period() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    let id = debit_id(&app.debit("key_1", json!({"cost": 30})).await).await;
    app.clock.advance(Duration::days(1) + Duration::seconds(1));
    let refund = app
        .post(&format!("/v1/debits/{id}/refunds"))
        .idempotency_key("refund-1")
        .json(json!({"amount": 30}))
        .send()
        .await;
    refund.assert_status(201);
    let part = &refund.body["parts"][0];
    assert_ne!(part["returned_to"], part["grant_id"]);
    let grants = app.get("/v1/accounts/key_1/grants").send().await;
    let refund_grant = grants.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == part["returned_to"])
        .unwrap()
        .clone();
    assert_eq!(
        (
            refund_grant["kind"].as_str(),
            refund_grant["remaining"].as_i64()
        ),
        (Some("refund"), Some(30))
    );
    let balance = app.get("/v1/accounts/key_1/balance").send().await;
    assert_eq!(refund_grant["expires_at"], balance.body["period"]["end"]);
    // Rolled: 70 carried, a new 100, and the refunded 30.
    assert_eq!(balance.body["pools"][0]["available"], 200);
    // Idempotent on its key.
    let again = app
        .post(&format!("/v1/debits/{id}/refunds"))
        .idempotency_key("refund-1")
        .json(json!({"amount": 30}))
        .send()
        .await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, refund.body);
    app.assert_audit_clean().await;
}

async fn overage_plan(app: &TestApp) {
    app.put_plan(
        "soft",
        json!({"name": "Soft", "interval": "day",
               "pools": {"credits": {"allowance": 100, "overage_limit": 50}},
               "operations": {"job": {"cost": 7}}}),
    )
    .await;
    app.create_account("key_1", "soft").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overage_lets_debits_go_that_far_below_zero_under_concurrency() {
    let app = spawn_app().await;
    overage_plan(&app).await;
    let calls = (0..40).map(|_| app.debit("key_1", json!({"operation": "job"})));
    let statuses: Vec<u16> = futures::future::join_all(calls)
        .await
        .iter()
        .map(|r| r.status.as_u16())
        .collect();
    let accepted = statuses.iter().filter(|s| **s == 201).count();
    assert_eq!(accepted, 21, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 402).count(), 19);
    let pool = pool(&app).await;
    assert_eq!(pool["available"], -47);
    assert_eq!(
        (
            pool["overage_used"].as_i64(),
            pool["overage_limit"].as_i64()
        ),
        (Some(47), Some(50))
    );
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn the_roll_records_the_periods_overage_and_starts_from_the_full_allowance() {
    let app = spawn_app().await;
    overage_plan(&app).await;
    let debit = app.debit("key_1", json!({"cost": 120})).await;
    debit.assert_status(201);
    assert_eq!(
        (
            debit.body["overage"].as_i64(),
            debit.body["remaining"].as_i64()
        ),
        (Some(20), Some(-20))
    );
    let refused = app.debit("key_1", json!({"cost": 31})).await;
    refused.assert_error(402, "credits_exhausted");
    assert_eq!(refused.body["error"]["details"]["available"], -20);
    assert_eq!(refused.body["error"]["details"]["overage_limit"], 50);
    app.clock.advance(Duration::days(1) + Duration::seconds(1));
    let rolled = pool(&app).await;
    assert_eq!(
        (
            rolled["available"].as_i64(),
            rolled["overage_used"].as_i64()
        ),
        (Some(100), Some(0))
    );
    let settled: Value = sqlx::query_scalar(
        "SELECT jsonb_build_object('amount', amount, 'metadata', metadata) FROM entries
          WHERE kind = 'overage' AND amount > 0",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(settled["amount"], 20);
    assert_eq!(settled["metadata"]["settled"], 20);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn refunding_a_debit_in_overage_pays_the_overage_back_first() {
    let app = spawn_app().await;
    overage_plan(&app).await;
    let id = debit_id(&app.debit("key_1", json!({"cost": 130})).await).await;
    let refund = app
        .post(&format!("/v1/debits/{id}/refunds"))
        .json(json!({"amount": 40}))
        .send()
        .await;
    refund.assert_status(201);
    let parts = refund.body["parts"].as_array().unwrap();
    assert_eq!(
        (parts[0]["grant_id"].clone(), parts[0]["amount"].as_i64()),
        (Value::Null, Some(30))
    );
    assert_eq!(parts[1]["amount"], 10);
    let pool = pool(&app).await;
    assert_eq!(
        (
            pool["available"].as_i64(),
            pool["overage_used"].as_i64(),
            pool["used"].as_i64()
        ),
        (Some(10), Some(0), Some(90))
    );
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_hold_made_while_its_pool_was_unlimited_keeps_the_audit_clean_after_the_pool_is_limited()
{
    let app = spawn_app().await;
    let t0: DateTime<Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
    app.clock.freeze_at(t0);
    let unlimited = json!({"name": "U", "interval": "day",
        "pools": {"credits": {"allowance": null}}, "operations": {"search": {"cost": 1}}});
    app.put_plan("u", unlimited).await;
    app.put("/v1/accounts/key_1")
        .json(json!({"plan": "u"}))
        .send()
        .await
        .assert_status(201);
    app.clock.freeze_at(t0 + Duration::hours(12));
    let held = reserve(&app, json!({"cost": 12, "ttl_seconds": 86_400})).await;
    held.assert_status(201);
    assert_eq!(held.body["drawn"], json!([]));
    // A new version of the plan limits the pool; the next period brings its allowance.
    let limited = json!({"name": "U", "interval": "day",
        "pools": {"credits": {"allowance": 100}}, "operations": {"search": {"cost": 1}}});
    app.put_plan("u", limited).await;
    app.clock
        .freeze_at(t0 + Duration::days(1) + Duration::minutes(1));
    assert_eq!(app.available("key_1", "credits").await, Some(100));
    app.assert_audit_clean().await;
}
