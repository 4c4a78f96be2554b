//! Edge cases found in review: clocks of several replicas, early-closed periods, prorations that
//! go down and up, plan versions that add pools, refunds of unlimited debits, bad timestamps.

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_on, TestApp, SERVICE};

async fn daily(app: &TestApp, id: &str, allowance: Value) {
    app.put_plan(
        id,
        json!({"name": id, "interval": "day", "pools": {"credits": {"allowance": allowance}},
               "operations": {"job": {"cost": 1}}}),
    )
    .await;
}

#[tokio::test]
async fn a_replica_whose_clock_lags_debits_in_the_period_another_already_rolled_into() {
    let ahead = spawn_app().await;
    let behind = spawn_app_on(Arc::clone(&ahead.db)).await;
    daily(&ahead, "d", json!(100)).await;
    let account = ahead.create_account("key_1", "d").await;
    ahead
        .post("/v1/accounts/key_1/grants")
        .json(json!({"kind": "pack", "amount": 50}))
        .send()
        .await
        .assert_status(201);
    // The first replica's clock is past the period end and rolls; the second's is just before.
    let end: chrono::DateTime<Utc> = account["current_period"]["end"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    ahead.clock.freeze_at(end + Duration::seconds(1));
    behind.clock.freeze_at(end - Duration::seconds(1));
    ahead
        .get("/v1/accounts/key_1/balance")
        .send()
        .await
        .assert_status(200);
    let debit = behind.debit("key_1", json!({"cost": 120})).await;
    debit.assert_status(201);
    assert_eq!(
        debit.body["drawn"][0]["kind"], "allowance",
        "the new allowance is spent first"
    );
    assert_eq!(debit.body["remaining"], 30);
    ahead.assert_audit_clean().await;
}

#[tokio::test]
async fn a_hold_released_after_a_reset_does_not_revive_the_closed_allowance() {
    let app = spawn_app().await;
    daily(&app, "a", json!(100)).await;
    daily(&app, "b", json!(100)).await;
    app.create_account("key_1", "a").await;
    let held = app
        .post("/v1/accounts/key_1/reservations")
        .json(json!({"cost": 100, "ttl_seconds": 600}))
        .send()
        .await;
    held.assert_status(201);
    app.post("/v1/accounts/key_1/plan")
        .json(json!({"plan": "b", "proration": "reset"}))
        .send()
        .await
        .assert_status(200);
    let id = held.body["id"].as_str().unwrap();
    let released = app
        .post(&format!("/v1/reservations/{id}/release"))
        .send()
        .await;
    released.assert_status(200);
    // The held allowance belonged to the closed period: it expires, the new allowance stays.
    assert_eq!(app.available("key_1", "credits").await, Some(100));
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn proration_down_then_up_does_not_create_credits() {
    let app = spawn_app().await;
    daily(&app, "big", json!(1000)).await;
    daily(&app, "small", json!(100)).await;
    app.create_account("key_1", "big").await;
    app.debit("key_1", json!({"cost": 900}))
        .await
        .assert_status(201);
    for (plan, expected) in [("small", 0), ("big", 100), ("small", 0), ("big", 100)] {
        let changed = app
            .post("/v1/accounts/key_1/plan")
            .json(json!({"plan": plan, "proration": "difference"}))
            .send()
            .await;
        changed.assert_status(200);
        assert_eq!(
            changed.body["balance"]["pools"][0]["available"], expected,
            "on {plan}"
        );
    }
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_second_reset_at_the_same_instant_is_409_not_500() {
    let app = spawn_app().await;
    daily(&app, "a", json!(10)).await;
    daily(&app, "b", json!(20)).await;
    app.create_account("key_1", "a").await;
    app.clock.freeze_at(Utc::now() + Duration::minutes(5));
    app.post("/v1/accounts/key_1/plan")
        .json(json!({"plan": "b", "proration": "reset"}))
        .send()
        .await
        .assert_status(200);
    app.post("/v1/accounts/key_1/plan")
        .json(json!({"plan": "a", "proration": "reset"}))
        .send()
        .await
        .assert_error(409, "period_just_started");
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_pool_added_by_a_new_plan_version_works_before_the_next_roll() {
    let app = spawn_app().await;
    daily(&app, "p", json!(100)).await;
    app.create_account("key_1", "p").await;
    app.put_plan(
        "p",
        json!({"name": "p", "interval": "day",
               "pools": {"credits": {"allowance": 100}, "exports": {"allowance": null}},
               "operations": {"job": {"cost": 1}, "export": {"pool": "exports", "cost": 5}}}),
    )
    .await;
    let debit = app.debit("key_1", json!({"operation": "export"})).await;
    debit.assert_status(201);
    assert_eq!(debit.body["pool"], "exports");
    let balance = app
        .get("/v1/accounts/key_1/balance")
        .token(SERVICE)
        .send()
        .await;
    assert_eq!(balance.body["pools"].as_array().unwrap().len(), 2);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn refunding_a_debit_made_while_the_pool_was_unlimited_records_it_and_gives_nothing() {
    let app = spawn_app().await;
    daily(&app, "free", json!(null)).await;
    daily(&app, "paid", json!(10)).await;
    app.create_account("key_1", "free").await;
    let debit = app.debit("key_1", json!({"cost": 40})).await;
    let id = debit.body["id"].as_str().unwrap().to_owned();
    app.post("/v1/accounts/key_1/plan")
        .json(json!({"plan": "paid", "proration": "difference"}))
        .send()
        .await
        .assert_status(200);
    let refund = app.post(&format!("/v1/debits/{id}/refunds")).send().await;
    refund.assert_status(201);
    assert_eq!(refund.body["parts"][0]["returned_to"], Value::Null);
    assert_eq!(app.available("key_1", "credits").await, Some(10));
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn timestamps_outside_1970_to_9999_are_422() {
    let app = spawn_app().await;
    daily(&app, "p", json!(10)).await;
    app.create_account("key_1", "p").await;
    for (field, value) in [
        ("effective_at", "-5000-01-01T00:00:00Z"),
        ("expires_at", "+200000-01-01T00:00:00Z"),
    ] {
        let mut body = json!({"kind": "pack", "amount": 5});
        body[field] = json!(value);
        let response = app
            .post("/v1/accounts/key_1/grants")
            .json(body)
            .send()
            .await;
        response.assert_error(422, "invalid_request");
        assert_eq!(response.body["error"]["details"]["field"], field);
    }
    let anchor = app
        .put("/v1/accounts/key_2")
        .json(json!({"plan": "p", "billing_anchor": "1900-01-01T00:00:00Z"}))
        .send()
        .await;
    anchor.assert_error(422, "invalid_request");
    assert_eq!(anchor.body["error"]["details"]["field"], "billing_anchor");
    let usage = app
        .get("/v1/accounts/key_1/usage?from=0001-01-01T00:00:00Z")
        .send()
        .await;
    usage.assert_error(422, "invalid_request");
    // An empty window is a question with an empty answer; a reversed one is an error.
    let empty = app
        .get("/v1/accounts/key_1/usage?from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z")
        .send()
        .await;
    empty.assert_status(200);
    assert_eq!(empty.body["data"], json!([]));
    let reversed = app
        .get("/v1/accounts/key_1/usage?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z")
        .send()
        .await;
    reversed.assert_error(422, "invalid_request");
    assert_eq!(reversed.body["error"]["details"]["field"], "from");
}

#[tokio::test]
async fn a_commit_retried_with_its_key_replays_the_debit() {
    let app = spawn_app().await;
    daily(&app, "p", json!(100)).await;
    app.create_account("key_1", "p").await;
    let held = app
        .post("/v1/accounts/key_1/reservations")
        .json(json!({"cost": 30}))
        .send()
        .await;
    let id = held.body["id"].as_str().unwrap();
    let commit = || {
        app.post(&format!("/v1/reservations/{id}/commit"))
            .token(SERVICE)
            .idempotency_key("commit-1")
            .json(json!({"amount": 12}))
            .send()
    };
    let first = commit().await;
    first.assert_status(200);
    let again = commit().await;
    again.assert_status(200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(app.count("debits").await, 1);
    app.assert_audit_clean().await;
}
