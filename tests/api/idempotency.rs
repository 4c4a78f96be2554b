use std::sync::Arc;

use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_on, SERVICE};

#[tokio::test]
async fn a_retry_with_the_same_key_replays_the_original_answer() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_1", "pro").await;
    let send = || {
        app.post("/v1/accounts/key_1/debits")
            .token(SERVICE)
            .idempotency_key("job-42")
            .json(json!({"operation": "image.generate", "quantity": 2}))
            .send()
    };
    let first = send().await;
    first.assert_status(201);
    assert!(first.header("idempotent-replayed").is_none());
    let second = send().await;
    second.assert_status(201);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("x-credits-remaining"), Some("80"));
    assert_eq!(app.count("debits").await, 1);
    assert_eq!(app.available("key_1", "credits").await, Some(80));
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn reordered_fields_are_the_same_request() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_1", "pro").await;
    app.post("/v1/accounts/key_1/debits")
        .idempotency_key("k")
        .raw_body(r#"{"operation":"search","quantity":2}"#)
        .send()
        .await
        .assert_status(201);
    let again = app
        .post("/v1/accounts/key_1/debits")
        .idempotency_key("k")
        .raw_body(r#"{ "quantity": 2, "operation": "search" }"#)
        .send()
        .await;
    again.assert_status(201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn the_same_key_with_other_parameters_is_409_and_changes_nothing() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_1", "pro").await;
    app.post("/v1/accounts/key_1/debits")
        .idempotency_key("job-1")
        .json(json!({"operation": "search"}))
        .send()
        .await
        .assert_status(201);
    let before = app.snapshot().await;
    app.post("/v1/accounts/key_1/debits")
        .idempotency_key("job-1")
        .json(json!({"operation": "search", "quantity": 5}))
        .send()
        .await
        .assert_error(409, "idempotency_key_reused");
    assert_eq!(app.snapshot().await, before);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn keys_are_scoped_to_the_account() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_1", "pro").await;
    app.create_account("key_2", "pro").await;
    for key in ["key_1", "key_2"] {
        let response = app
            .post(&format!("/v1/accounts/{key}/debits"))
            .idempotency_key("shared-key")
            .json(json!({"operation": "search"}))
            .send()
            .await;
        response.assert_status(201);
        assert!(response.header("idempotent-replayed").is_none());
    }
    assert_eq!(app.count("debits").await, 2);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_refused_debit_is_not_stored_so_the_key_works_after_a_top_up() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(5)).await;
    app.create_account("key_1", "pro").await;
    let send = || {
        app.post("/v1/accounts/key_1/debits")
            .idempotency_key("big-job")
            .json(json!({"cost": 50}))
            .send()
    };
    send().await.assert_error(402, "credits_exhausted");
    assert_eq!(app.count("idempotency_keys").await, 0);
    app.post("/v1/accounts/key_1/grants")
        .json(json!({"kind": "pack", "amount": 100}))
        .send()
        .await
        .assert_status(201);
    let accepted = send().await;
    accepted.assert_status(201);
    assert!(accepted.header("idempotent-replayed").is_none());
    let replayed = send().await;
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.body, accepted.body);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn dry_runs_ignore_the_key() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_1", "pro").await;
    app.post("/v1/accounts/key_1/debits")
        .idempotency_key("probe")
        .json(json!({"operation": "search", "dry_run": true}))
        .send()
        .await
        .assert_status(200);
    assert_eq!(app.count("idempotency_keys").await, 0);
    app.assert_audit_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_with_one_key_on_two_instances_debit_once() {
    let first = spawn_app().await;
    let second = spawn_app_on(Arc::clone(&first.db)).await;
    first.create_plan("pro", Some(1000)).await;
    first.create_account("key_1", "pro").await;
    let calls = (0..40).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        app.post("/v1/accounts/key_1/debits")
            .token(SERVICE)
            .idempotency_key("once")
            .json(json!({"operation": "image.generate"}))
            .send()
    });
    let responses = futures::future::join_all(calls).await;
    assert!(responses.iter().all(|r| r.status == 201), "all succeed");
    let originals = responses
        .iter()
        .filter(|r| r.header("idempotent-replayed").is_none())
        .count();
    assert_eq!(originals, 1);
    let id = &responses[0].body["id"];
    assert!(
        responses.iter().all(|r| &r.body["id"] == id),
        "one debit id"
    );
    assert_eq!(first.count("debits").await, 1);
    assert_eq!(first.available("key_1", "credits").await, Some(990));
    first.assert_audit_clean().await;
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_400() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_1", "pro").await;
    for key in ["x".repeat(256), "has space".to_owned()] {
        app.post("/v1/accounts/key_1/debits")
            .idempotency_key(&key)
            .json(json!({"operation": "search"}))
            .send()
            .await
            .assert_error(400, "invalid_idempotency_key");
    }
    assert_eq!(app.count("debits").await, 0);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_default_written_out_is_the_same_request() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_1", "pro").await;
    app.post("/v1/accounts/key_1/debits")
        .idempotency_key("d")
        .json(json!({"operation": "search"}))
        .send()
        .await
        .assert_status(201);
    let again = app
        .post("/v1/accounts/key_1/debits")
        .idempotency_key("d")
        .json(json!({"operation": "search", "quantity": 1, "dry_run": false, "metadata": {}}))
        .send()
        .await;
    again.assert_status(201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    app.assert_audit_clean().await;
}
