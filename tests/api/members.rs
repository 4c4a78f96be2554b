//! Members of a shared account: registered keys whose debits and holds land on the account,
//! each with its own per-period cap, enforced with the debit under concurrency.

use std::sync::Arc;

use chrono::Duration;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, TestResponse};

async fn setup() -> TestApp {
    let app = spawn_app().await;
    app.create_plan("pro", Some(1000)).await;
    app.create_account("org", "pro").await;
    app
}

async fn put_member(app: &TestApp, member: &str, body: Value) -> TestResponse {
    app.put(&format!("/v1/accounts/org/members/{member}"))
        .json(body)
        .send()
        .await
}

async fn member(app: &TestApp, member: &str) -> Value {
    let got = app
        .get(&format!("/v1/accounts/org/members/{member}"))
        .send()
        .await;
    got.assert_status(200);
    got.body
}

#[tokio::test]
async fn a_member_keys_debits_and_holds_land_on_the_shared_account_within_its_cap() {
    let app = setup().await;
    let created = put_member(&app, "key_a", json!({"caps": {"credits": 100}})).await;
    created.assert_status(201);
    assert_eq!(created.body["key_id"], "org");
    assert_eq!(created.body["member_key_id"], "key_a");
    assert_eq!(created.body["caps"]["credits"], 100);
    put_member(&app, "key_a", json!({"caps": {"credits": 100}}))
        .await
        .assert_status(200);
    put_member(&app, "key_b", json!({}))
        .await
        .assert_status(201);

    // Addressed to the member key, made on the shared account for that key.
    let debit = app
        .debit("key_a", json!({"operation": "search", "quantity": 60}))
        .await;
    debit.assert_status(201);
    assert_eq!(debit.body["key_id"], "org");
    assert_eq!(debit.body["source_key_id"], "key_a");
    assert_eq!(app.available("org", "credits").await, Some(940));
    assert_eq!(member(&app, "key_a").await["used"]["credits"], 60);

    // Past the cap: the contract's 402, saying it is the key's cap, and nothing changes.
    let refused = app
        .debit("key_a", json!({"operation": "search", "quantity": 50}))
        .await;
    refused.assert_error(402, "credits_exhausted");
    let details = &refused.body["error"]["details"];
    assert_eq!(details["reason"], "key_cap");
    assert_eq!(details["cap"], 100);
    assert_eq!(details["key_used"], 60);
    assert_eq!(details["available"], 940, "the account still has credits");
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("60 of its 100 cap"), "{message}");
    assert_eq!(app.available("org", "credits").await, Some(940));
    // A dry run answers the same.
    app.debit(
        "key_a",
        json!({"operation": "search", "quantity": 50, "dry_run": true}),
    )
    .await
    .assert_error(402, "credits_exhausted");

    // A hold counts against the cap while it is held.
    let hold = app
        .post("/v1/accounts/key_a/reservations")
        .json(json!({"operation": "search", "quantity": 30}))
        .send()
        .await;
    hold.assert_status(201);
    assert_eq!(hold.body["key_id"], "org");
    let held = app.debit("key_a", json!({"cost": 20})).await;
    held.assert_error(402, "credits_exhausted");
    assert_eq!(held.body["error"]["details"]["key_used"], 90);
    let id = hold.body["id"].as_str().unwrap();
    let committed = app
        .post(&format!("/v1/reservations/{id}/commit"))
        .json(json!({"amount": 25}))
        .send()
        .await;
    committed.assert_status(200);
    assert_eq!(committed.body["source_key_id"], "key_a");
    assert_eq!(member(&app, "key_a").await["used"]["credits"], 85);

    // A refund gives the key its credits back too.
    let debit_id = debit.body["id"].as_str().unwrap();
    app.post(&format!("/v1/debits/{debit_id}/refunds"))
        .json(json!({"amount": 40}))
        .send()
        .await
        .assert_status(201);
    assert_eq!(member(&app, "key_a").await["used"]["credits"], 45);
    app.debit("key_a", json!({"cost": 55}))
        .await
        .assert_status(201);

    // A member without caps draws on the account freely.
    app.debit("key_b", json!({"cost": 500}))
        .await
        .assert_status(201);

    // Each key's entries are its own; the account's list has both.
    let listed = app.get("/v1/accounts/org/members").send().await;
    listed.assert_status(200);
    let keys: Vec<&str> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["member_key_id"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["key_a", "key_b"]);

    // A new period starts the key's use at zero.
    app.clock.advance(Duration::days(32));
    app.debit("key_a", json!({"cost": 100}))
        .await
        .assert_status(201);
    assert_eq!(member(&app, "key_a").await["used"]["credits"], 100);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn concurrent_debits_of_a_member_never_pass_its_cap() {
    let app = Arc::new(setup().await);
    put_member(&app, "key_a", json!({"caps": {"credits": 100}}))
        .await
        .assert_status(201);
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let app = Arc::clone(&app);
        tasks.push(tokio::spawn(async move {
            app.debit("key_a", json!({"cost": 7})).await.status.as_u16()
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            201 => accepted += 1,
            402 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(accepted, 14, "14 × 7 = 98 fits in 100, a 15th does not");
    assert_eq!(member(&app, "key_a").await["used"]["credits"], 98);
    assert_eq!(app.available("org", "credits").await, Some(902));
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn membership_is_one_account_per_key_and_refusals_change_nothing() {
    let app = setup().await;
    app.create_account("own", "pro").await;
    app.create_account("org_2", "pro").await;
    put_member(&app, "own", json!({}))
        .await
        .assert_error(409, "member_has_account");
    put_member(&app, "org", json!({}))
        .await
        .assert_error(422, "invalid_request");
    let unknown_pool = put_member(&app, "key_a", json!({"caps": {"gpu": 5}})).await;
    unknown_pool.assert_error(422, "invalid_request");
    assert_eq!(unknown_pool.body["error"]["details"]["field"], "caps.gpu");
    let negative = put_member(&app, "key_a", json!({"caps": {"credits": -1}})).await;
    assert_eq!(negative.body["error"]["details"]["field"], "caps.credits");
    assert_eq!(app.count("members").await, 0);

    put_member(&app, "key_a", json!({}))
        .await
        .assert_status(201);
    app.put("/v1/accounts/org_2/members/key_a")
        .json(json!({}))
        .send()
        .await
        .assert_error(409, "member_of_another_account");
    app.put("/v1/accounts/key_a")
        .json(json!({"plan": "pro"}))
        .send()
        .await
        .assert_error(409, "key_is_member");
    app.put("/v1/accounts/ghost/members/key_z")
        .json(json!({}))
        .send()
        .await
        .assert_error(404, "account_not_found");
    // Other routes do not take a member key for its account.
    app.get("/v1/accounts/key_a/balance")
        .send()
        .await
        .assert_error(404, "account_not_found");

    app.call(reqwest::Method::DELETE, "/v1/accounts/org/members/key_a")
        .send()
        .await
        .assert_status(204);
    app.call(reqwest::Method::DELETE, "/v1/accounts/org/members/key_a")
        .send()
        .await
        .assert_error(404, "member_not_found");
    app.debit("key_a", json!({"cost": 1}))
        .await
        .assert_error(404, "account_not_found");
    // No longer a member, it may have an account of its own.
    app.create_account("key_a", "pro").await;
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn creating_an_account_for_a_member_key_while_its_membership_changes_never_deadlocks() {
    let app = Arc::new(setup().await);
    put_member(&app, "key_m", json!({}))
        .await
        .assert_status(201);
    let mut statuses = std::collections::BTreeMap::new();
    for round in 0..20 {
        let (a, b) = (Arc::clone(&app), Arc::clone(&app));
        let create = tokio::spawn(async move {
            a.put("/v1/accounts/key_m")
                .json(json!({"plan": "pro"}))
                .send()
                .await
                .status
                .as_u16()
        });
        let caps = tokio::spawn(async move {
            b.put("/v1/accounts/org/members/key_m")
                .json(json!({"caps": {"credits": 100 + round}}))
                .send()
                .await
                .status
                .as_u16()
        });
        for status in [create.await.unwrap(), caps.await.unwrap()] {
            *statuses.entry(status).or_insert(0) += 1;
        }
    }
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        [200, 409],
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_refund_gives_a_member_back_its_use_whatever_the_clocks_say() {
    let app = setup().await;
    let t = app.clock.now();
    app.clock.freeze_at(t);
    put_member(&app, "key_a", json!({"caps": {"credits": 100}}))
        .await
        .assert_status(201);
    // Another replica, its clock 50 ms behind.
    app.clock.freeze_at(t - Duration::milliseconds(50));
    let debit = app.debit("key_a", json!({"cost": 60})).await;
    debit.assert_status(201);
    app.clock.freeze_at(t + Duration::seconds(1));
    let id = debit.body["id"].as_str().unwrap();
    app.post(&format!("/v1/debits/{id}/refunds"))
        .json(json!({}))
        .send()
        .await
        .assert_status(201);
    assert_eq!(member(&app, "key_a").await["used"]["credits"], 0);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn members_idempotency_keys_are_their_own() {
    let app = setup().await;
    put_member(&app, "key_a", json!({}))
        .await
        .assert_status(201);
    put_member(&app, "key_b", json!({}))
        .await
        .assert_status(201);
    let send = |key: &'static str| {
        app.post(&format!("/v1/accounts/{key}/debits"))
            .token(crate::helpers::SERVICE)
            .idempotency_key("req-1")
            .json(json!({"cost": 5}))
            .send()
    };
    let a = send("key_a").await;
    a.assert_status(201);
    let b = send("key_b").await;
    b.assert_status(201);
    assert_ne!(a.body["id"], b.body["id"]);
    send("org").await.assert_status(201);
    let again = send("key_a").await;
    again.assert_status(201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body["id"], a.body["id"]);
    assert_eq!(app.available("org", "credits").await, Some(985));
}
