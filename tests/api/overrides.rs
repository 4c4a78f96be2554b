//! Per-account overrides: a customer's own allowance, rollover cap, overage limit and prices,
//! applied by the plan's own rules, shown in balances and recorded on each debit.

use chrono::Duration;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

async fn pool(app: &TestApp) -> Value {
    let balance = app.get("/v1/accounts/key_1/balance").send().await;
    balance.assert_status(200);
    balance.body["pools"][0].clone()
}

async fn put_overrides(app: &TestApp, overrides: Value) -> crate::helpers::TestResponse {
    app.put("/v1/accounts/key_1")
        .json(json!({"plan": "pro", "overrides": overrides}))
        .send()
        .await
}

#[tokio::test]
async fn overrides_change_the_terms_by_the_plans_rules_and_each_debit_records_them() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(1000)).await;
    app.create_account("key_1", "pro").await;
    app.debit("key_1", json!({"operation": "search", "quantity": 200}))
        .await
        .assert_status(201);

    // Refused overrides name the field and change nothing.
    for (overrides, field) in [
        (
            json!({"pools": {"gpu": {"allowance": 5}}}),
            "overrides.pools.gpu",
        ),
        (
            json!({"pools": {"credits": {"allowance": -1}}}),
            "overrides.pools.credits.allowance",
        ),
        (json!({"pools": {"credits": {}}}), "overrides.pools.credits"),
        (
            json!({"operations": {"search": {"pool": "gpu", "cost": 1}}}),
            "overrides.operations.search.pool",
        ),
        (
            json!({"operations": {"search": {"cost": 0}}}),
            "overrides.operations.search.cost",
        ),
    ] {
        let refused = put_overrides(&app, overrides).await;
        refused.assert_error(422, "invalid_request");
        assert_eq!(refused.body["error"]["details"]["field"], field);
    }
    assert_eq!(pool(&app).await["available"], 800);

    // A negotiated allowance applies now, as a plan change prorated by the difference would.
    let put = put_overrides(
        &app,
        json!({"pools": {"credits": {"allowance": 5000, "overage_limit": 100, "rollover_cap": 300}},
               "operations": {"image.generate": {"cost": 4}}}),
    )
    .await;
    put.assert_status(200);
    assert_eq!(
        put.body["overrides"]["pools"]["credits"]["allowance"], 5000,
        "{}",
        put.body
    );
    let terms = pool(&app).await;
    assert_eq!(terms["allowance"], 5000);
    assert_eq!(terms["available"], 4800);
    assert_eq!(terms["overage_limit"], 100);
    assert_eq!(terms["overrides"]["rollover_cap"], 300);
    assert_eq!(terms["next_allowance"]["amount"], 5000);

    // The overridden price, recorded on the debit, and read back with it.
    let image = app
        .debit(
            "key_1",
            json!({"operation": "image.generate", "quantity": 2}),
        )
        .await;
    image.assert_status(201);
    assert_eq!(image.body["cost"], 8);
    assert_eq!(image.body["overrides"]["operation"]["cost"], 4);
    assert_eq!(image.body["overrides"]["pool"]["allowance"], 5000);
    let id = image.body["id"].as_str().unwrap();
    let read = app.get(&format!("/v1/debits/{id}")).send().await;
    assert_eq!(read.body["overrides"], image.body["overrides"]);
    let search = app.debit("key_1", json!({"operation": "search"})).await;
    assert_eq!(search.body["cost"], 1);
    assert_eq!(search.body["overrides"]["operation"], Value::Null);

    // The overridden overage limit: down to -100, not past it.
    let left = pool(&app).await["available"].as_i64().unwrap();
    app.debit("key_1", json!({"cost": left + 100}))
        .await
        .assert_status(201);
    app.debit("key_1", json!({"cost": 1}))
        .await
        .assert_error(402, "credits_exhausted");

    // A roll grants the overridden allowance; nothing unused, so nothing rolls over.
    app.clock.advance(Duration::days(32));
    let terms = pool(&app).await;
    assert_eq!(terms["allowance"], 5000);
    assert_eq!(terms["available"], 5000);

    // A plan the overrides do not fit is refused; one they fit keeps them.
    app.put_plan(
        "gpu",
        json!({"name": "GPU", "interval": "month", "pools": {"gpu": {"allowance": 10}}}),
    )
    .await;
    app.post("/v1/accounts/key_1/plan")
        .json(json!({"plan": "gpu", "proration": "none"}))
        .send()
        .await
        .assert_error(409, "overrides_conflict");
    app.create_plan("max", Some(2000)).await;
    let moved = app
        .post("/v1/accounts/key_1/plan")
        .json(json!({"plan": "max", "proration": "none"}))
        .send()
        .await;
    moved.assert_status(200);
    let cost = app
        .debit("key_1", json!({"operation": "image.generate"}))
        .await;
    assert_eq!(
        cost.body["cost"], 4,
        "the account's price, on the new plan too"
    );

    // Removing them brings the plan's terms back, by the same proration.
    app.put("/v1/accounts/key_1")
        .json(json!({"plan": "max", "overrides": null}))
        .send()
        .await
        .assert_status(200);
    let terms = pool(&app).await;
    assert_eq!(terms["allowance"], 2000);
    assert_eq!(terms["overrides"], Value::Null);
    let cost = app
        .debit("key_1", json!({"operation": "image.generate"}))
        .await;
    assert_eq!(cost.body["cost"], 10);
    assert_eq!(cost.body["overrides"], Value::Null);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn an_account_can_be_opened_with_overrides() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(1000)).await;
    let created = app
        .put("/v1/accounts/key_1")
        .json(json!({"plan": "pro",
                     "overrides": {"pools": {"credits": {"allowance": 250}}}}))
        .send()
        .await;
    created.assert_status(201);
    let terms = pool(&app).await;
    assert_eq!(terms["allowance"], 250);
    assert_eq!(terms["available"], 250);
    // A repeated PUT with the same overrides changes nothing.
    put_overrides(&app, json!({"pools": {"credits": {"allowance": 250}}}))
        .await
        .assert_status(200);
    assert_eq!(pool(&app).await["available"], 250);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn an_override_moves_only_what_it_changes_and_a_cut_announces_the_thresholds_met() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(1000)).await;
    app.create_account("key_1", "pro").await;
    // A new version of the plan waits for the next period.
    app.create_plan("pro", Some(500)).await;
    put_overrides(&app, json!({"operations": {"search": {"cost": 2}}}))
        .await
        .assert_status(200);
    let terms = pool(&app).await;
    assert_eq!(
        terms["available"], 1000,
        "a price override cuts no allowance"
    );
    assert_eq!(terms["allowance"], 1000);

    // Spend 700 of the allowance, then cut it to 500: 80% and 100% are met, and announced.
    app.post("/v1/accounts/key_1/grants")
        .json(json!({"kind": "pack", "amount": 1000}))
        .send()
        .await
        .assert_status(201);
    app.debit("key_1", json!({"cost": 700}))
        .await
        .assert_status(201);
    put_overrides(
        &app,
        json!({"operations": {"search": {"cost": 2}},
               "pools": {"credits": {"allowance": 500}}}),
    )
    .await
    .assert_status(200);
    let reached: Vec<i64> = sqlx::query_scalar::<_, Value>(
        "SELECT payload FROM events WHERE type = 'credits.threshold_reached' ORDER BY seq",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
    .iter()
    .map(|p| p["threshold"].as_i64().unwrap())
    .collect();
    assert_eq!(reached, [80, 100]);
    app.assert_audit_clean().await;
}
