use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_and_readyz_answer_without_a_token() {
    let app = spawn_app().await;
    let health = app.get("/healthz").no_token().send().await;
    health.assert_status(200);
    assert_eq!(health.body["status"], "ok");
    let ready = app.get("/readyz").no_token().send().await;
    ready.assert_status(200);
    assert_eq!(ready.body["migrations"], "applied");
}

#[tokio::test]
async fn readyz_reports_pending_migrations() {
    let app = spawn_app().await;
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let ready = app.get("/readyz").no_token().send().await;
    ready.assert_status(503);
    assert_eq!(ready.body["migrations"], "pending");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let app = spawn_app().await;
    let missing = app.get("/v1/nothing-here").unchecked().send().await;
    missing.assert_error(404, "not_found");
    let wrong = app
        .call(Method::DELETE, "/v1/plans/pro")
        .unchecked()
        .send()
        .await;
    wrong.assert_error(405, "method_not_allowed");
    assert!(wrong.header("allow").is_some());
}

#[tokio::test]
async fn a_request_id_is_echoed_or_made() {
    let app = spawn_app().await;
    let echoed = app
        .get("/healthz")
        .header("x-request-id", "req-abc-123")
        .send()
        .await;
    assert_eq!(echoed.header("x-request-id"), Some("req-abc-123"));
    let made = app.get("/healthz").send().await;
    assert!(made.header("x-request-id").is_some_and(|v| v.len() >= 32));
}

#[tokio::test]
async fn a_service_token_cannot_use_admin_routes_and_nothing_changes() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(10)).await;
    let before = app.snapshot().await;
    app.put("/v1/accounts/key_1")
        .token(crate::helpers::SERVICE)
        .json(json!({"plan": "pro"}))
        .send()
        .await
        .assert_error(403, "forbidden");
    app.put("/v1/accounts/key_1")
        .token("Bearer-nonsense")
        .json(json!({"plan": "pro"}))
        .send()
        .await
        .assert_error(401, "unauthorized");
    assert_eq!(app.snapshot().await, before);
}
