//! Grants (packs, promotions, adjustments), voids, balance adjustments and plan changes.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, SERVICE};

fn ts(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

async fn ready(app: &TestApp, allowance: i64) {
    app.put_plan(
        "pro",
        json!({"name": "Pro", "interval": "month",
               "pools": {"credits": {"allowance": allowance, "rollover_cap": 1000}},
               "operations": {"image.generate": {"cost": 10}}}),
    )
    .await;
    app.create_account("key_1", "pro").await;
}

#[tokio::test]
async fn a_pack_adds_credits_that_are_spent_after_the_allowance() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    let pack = app
        .post("/v1/accounts/key_1/grants")
        .json(
            json!({"pool": "credits", "kind": "pack", "amount": 5000, "expires_at": null,
                     "priority": 0, "metadata": {"payment_id": "pi_123"}}),
        )
        .send()
        .await;
    pack.assert_status(201);
    assert_eq!(pack.body["kind"], "pack");
    assert_eq!(pack.body["remaining"], 5000);
    assert_eq!(pack.body["status"], "active");
    assert_eq!(pack.body["metadata"]["payment_id"], "pi_123");
    assert_eq!(app.available("key_1", "credits").await, Some(5100));
    let debit = app
        .debit(
            "key_1",
            json!({"operation": "image.generate", "quantity": 11}),
        )
        .await;
    debit.assert_status(201);
    let kinds: Vec<&str> = debit.body["drawn"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["allowance", "pack"]);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn pack_top_ups_are_idempotent_on_the_payment_id() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    let top_up = |amount: i64| {
        app.post("/v1/accounts/key_1/grants")
            .idempotency_key("pi_123")
            .json(json!({"kind": "pack", "amount": amount}))
            .send()
    };
    let first = top_up(500).await;
    first.assert_status(201);
    let again = top_up(500).await;
    again.assert_status(201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    top_up(600)
        .await
        .assert_error(409, "idempotency_key_reused");
    assert_eq!(app.available("key_1", "credits").await, Some(600));

    // Concurrent retries of a new payment: one grant.
    let calls = (0..12).map(|_| {
        app.post("/v1/accounts/key_1/grants")
            .idempotency_key("pi_456")
            .json(json!({"kind": "pack", "amount": 1000}))
            .send()
    });
    let responses = futures::future::join_all(calls).await;
    assert!(responses.iter().all(|r| r.status == 201));
    let originals = responses
        .iter()
        .filter(|r| r.header("idempotent-replayed").is_none())
        .count();
    assert_eq!(originals, 1);
    assert_eq!(app.available("key_1", "credits").await, Some(1600));
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn bad_grants_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    let before = app.snapshot().await;
    let past = (Utc::now() - Duration::hours(1)).to_rfc3339();
    let cases = [
        (json!({"kind": "allowance", "amount": 5}), 422, "kind"),
        (json!({"kind": "pack", "amount": 0}), 422, "amount"),
        (json!({"kind": "pack", "amount": -5}), 422, "amount"),
        (
            json!({"kind": "pack", "amount": 5, "expires_at": past}),
            422,
            "expires_at",
        ),
        (
            json!({"kind": "pack", "amount": 5, "priority": 5000}),
            422,
            "priority",
        ),
        (
            json!({"kind": "pack", "amount": 5, "colour": "red"}),
            422,
            "colour",
        ),
    ];
    for (body, status, field) in cases {
        let response = app
            .post("/v1/accounts/key_1/grants")
            .json(body)
            .send()
            .await;
        response.assert_status(status);
        assert_eq!(
            response.body["error"]["details"]["field"], field,
            "{}",
            response.body
        );
    }
    app.post("/v1/accounts/key_1/grants")
        .json(json!({"kind": "pack", "amount": 5, "pool": "exports"}))
        .send()
        .await
        .assert_error(422, "unknown_pool");
    app.post("/v1/accounts/nobody/grants")
        .json(json!({"kind": "pack", "amount": 5}))
        .send()
        .await
        .assert_error(404, "account_not_found");
    app.post("/v1/accounts/key_1/grants")
        .token(SERVICE)
        .json(json!({"kind": "pack", "amount": 5}))
        .send()
        .await
        .assert_error(403, "forbidden");
    assert_eq!(app.snapshot().await, before);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_future_grant_counts_from_its_effective_time_and_a_priority_orders_it() {
    let app = spawn_app().await;
    ready(&app, 10).await;
    let later = Utc::now() + Duration::hours(1);
    let pending = app
        .post("/v1/accounts/key_1/grants")
        .json(json!({"kind": "promotional", "amount": 30, "effective_at": later.to_rfc3339()}))
        .send()
        .await;
    pending.assert_status(201);
    assert_eq!(pending.body["status"], "pending");
    assert_eq!(app.available("key_1", "credits").await, Some(10));
    app.clock.advance(Duration::hours(2));
    assert_eq!(app.available("key_1", "credits").await, Some(40));
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn grants_are_listed_newest_first_with_pages() {
    let app = spawn_app().await;
    ready(&app, 10).await;
    for amount in [1, 2, 3] {
        app.post("/v1/accounts/key_1/grants")
            .json(json!({"kind": "pack", "amount": amount}))
            .send()
            .await
            .assert_status(201);
    }
    let page = app
        .get("/v1/accounts/key_1/grants?limit=2")
        .token(SERVICE)
        .send()
        .await;
    page.assert_status(200);
    let amounts: Vec<i64> = page.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, vec![3, 2]);
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let rest = app
        .get(&format!(
            "/v1/accounts/key_1/grants?limit=2&cursor={cursor}"
        ))
        .send()
        .await;
    let kinds: Vec<&str> = rest.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["pack", "allowance"]);
    assert_eq!(rest.body["next_cursor"], Value::Null);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn voiding_a_grant_removes_what_it_had_left_once() {
    let app = spawn_app().await;
    ready(&app, 10).await;
    let pack = app
        .post("/v1/accounts/key_1/grants")
        .json(json!({"kind": "pack", "amount": 100}))
        .send()
        .await;
    app.debit("key_1", json!({"cost": 30}))
        .await
        .assert_status(201);
    let id = pack.body["id"].as_str().unwrap();
    let voided = app.post(&format!("/v1/grants/{id}/void")).send().await;
    voided.assert_status(200);
    assert_eq!(voided.body["status"], "voided");
    assert_eq!(voided.body["remaining"], 0);
    assert_eq!(app.available("key_1", "credits").await, Some(0));
    let last = app.all_entries("key_1").await.pop().unwrap();
    assert_eq!((last.0.as_str(), last.1), ("void", -80));
    // Voiding again changes nothing.
    let again = app.post(&format!("/v1/grants/{id}/void")).send().await;
    again.assert_status(200);
    assert_eq!(app.all_entries("key_1").await.len(), 5);

    app.post(&format!("/v1/grants/{}/void", uuid::Uuid::now_v7()))
        .send()
        .await
        .assert_error(404, "grant_not_found");
    app.post("/v1/grants/not-a-uuid/void")
        .send()
        .await
        .assert_error(422, "invalid_request");
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn adjustments_set_increment_and_decrement_the_pool() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    let adjust = |op: &str, amount: i64| {
        app.post("/v1/accounts/key_1/adjustments")
            .json(json!({"pool": "credits", "op": op, "amount": amount, "reason": "support ticket 7"}))
            .send()
    };
    let inc = adjust("increment", 50).await;
    inc.assert_status(201);
    assert_eq!(
        (inc.body["delta"].as_i64(), inc.body["available"].as_i64()),
        (Some(50), Some(150))
    );
    let dec = adjust("decrement", 120).await;
    dec.assert_status(201);
    assert_eq!(dec.body["available"], 30);
    let set_up = adjust("set", 75).await;
    set_up.assert_status(201);
    assert_eq!(
        (
            set_up.body["delta"].as_i64(),
            set_up.body["available"].as_i64()
        ),
        (Some(45), Some(75))
    );
    assert_eq!(app.available("key_1", "credits").await, Some(75));
    let set_down = adjust("set", 0).await;
    set_down.assert_status(201);
    assert_eq!(app.available("key_1", "credits").await, Some(0));

    let before = app.snapshot().await;
    adjust("decrement", 1)
        .await
        .assert_error(422, "adjustment_exceeds_available");
    let bad = app
        .post("/v1/accounts/key_1/adjustments")
        .json(json!({"op": "multiply", "amount": 2, "reason": "x"}))
        .send()
        .await;
    bad.assert_status(422);
    assert_eq!(bad.body["error"]["details"]["field"], "op");
    app.post("/v1/accounts/key_1/adjustments")
        .json(json!({"op": "increment", "amount": 2, "reason": "  "}))
        .send()
        .await
        .assert_error(422, "invalid_request");
    assert_eq!(app.snapshot().await, before);
    let kinds: Vec<String> = app
        .all_entries("key_1")
        .await
        .into_iter()
        .skip(1)
        .map(|e| e.0)
        .collect();
    assert!(kinds.iter().all(|k| k == "adjustment"), "{kinds:?}");
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn an_increment_past_what_a_pool_can_hold_is_out_of_range() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    // A pool near the top of a credit amount's range (no API makes one; storage can).
    sqlx::query(
        "UPDATE grants SET amount = 9223372036854775000, remaining = 9223372036854775000 WHERE key_id = 'key_1'",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let before = app.snapshot().await;
    let response = app
        .post("/v1/accounts/key_1/adjustments")
        .json(json!({"op": "increment", "amount": 1_000_000, "reason": "overflow"}))
        .send()
        .await;
    response.assert_error(422, "amount_out_of_range");
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn adjustments_are_idempotent() {
    let app = spawn_app().await;
    ready(&app, 100).await;
    let send = || {
        app.post("/v1/accounts/key_1/adjustments")
            .idempotency_key("adj-1")
            .json(json!({"op": "increment", "amount": 10, "reason": "goodwill"}))
            .send()
    };
    let first = send().await;
    let second = send().await;
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(first.body, second.body);
    assert_eq!(app.available("key_1", "credits").await, Some(110));
    app.assert_audit_clean().await;
}

async fn plans_for_changes(app: &TestApp) {
    app.put_plan(
        "small",
        json!({"name": "Small", "interval": "month",
               "pools": {"credits": {"allowance": 100, "rollover_cap": 10}},
               "operations": {"job": {"cost": 10}}}),
    )
    .await;
    app.put_plan(
        "big",
        json!({"name": "Big", "interval": "month",
               "pools": {"credits": {"allowance": 1000, "rollover_cap": 500}},
               "operations": {"job": {"cost": 2}}}),
    )
    .await;
    app.create_account("key_1", "small").await;
    app.debit("key_1", json!({"operation": "job", "quantity": 3}))
        .await
        .assert_status(201);
}

#[tokio::test]
async fn plan_change_without_proration_changes_prices_now_and_allowance_next_period() {
    let app = spawn_app().await;
    plans_for_changes(&app).await;
    let changed = app
        .post("/v1/accounts/key_1/plan")
        .json(json!({"plan": "big", "proration": "none"}))
        .send()
        .await;
    changed.assert_status(200);
    assert_eq!(changed.body["plan"], "big");
    assert_eq!(changed.body["balance"]["pools"][0]["available"], 70);
    let debit = app.debit("key_1", json!({"operation": "job"})).await;
    assert_eq!(
        (debit.body["cost"].as_i64(), debit.body["plan_id"].as_str()),
        (Some(2), Some("big"))
    );
    let end = ts(&changed.body["current_period"]["end"]);
    app.clock.advance(end - Utc::now() + Duration::seconds(1));
    // 68 unused on the old allowance, capped by the new plan's 500; the new allowance is 1000.
    assert_eq!(app.available("key_1", "credits").await, Some(1068));
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn plan_change_with_difference_grants_or_removes_the_difference_now() {
    let app = spawn_app().await;
    plans_for_changes(&app).await;
    let up = app
        .post("/v1/accounts/key_1/plan")
        .json(json!({"plan": "big", "proration": "difference"}))
        .send()
        .await;
    up.assert_status(200);
    let pool = &up.body["balance"]["pools"][0];
    assert_eq!(
        (pool["available"].as_i64(), pool["allowance"].as_i64()),
        (Some(970), Some(1000))
    );
    let down = app
        .post("/v1/accounts/key_1/plan")
        .json(json!({"plan": "small", "proration": "difference"}))
        .send()
        .await;
    down.assert_status(200);
    assert_eq!(down.body["balance"]["pools"][0]["available"], 70);
    assert_eq!(down.body["balance"]["pools"][0]["allowance"], 100);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn credits_coming_back_after_a_difference_cut_stay_within_the_cut_allowance() {
    let app = spawn_app().await;
    plans_for_changes(&app).await;
    app.post("/v1/accounts/key_1/plan")
        .json(json!({"plan": "big", "proration": "difference"}))
        .send()
        .await
        .assert_status(200);
    // 30 used under Small, then 900 more under Big: 930 of 1000 given.
    let debit = app.debit("key_1", json!({"cost": 900})).await;
    debit.assert_status(201);
    let held = app
        .post("/v1/accounts/key_1/reservations")
        .token(SERVICE)
        .json(json!({"cost": 60}))
        .send()
        .await;
    held.assert_status(201);
    // Back to Small: 100 allowed this period, 990 already given.
    app.post("/v1/accounts/key_1/plan")
        .json(json!({"plan": "small", "proration": "difference"}))
        .send()
        .await
        .assert_status(200);
    assert_eq!(app.available("key_1", "credits").await, Some(0));
    // The hold and the debit come back: what was given falls to 30, so 70 of the 100 are left,
    // not the 970 the old allowance would have had.
    let id = held.body["id"].as_str().unwrap();
    app.post(&format!("/v1/reservations/{id}/release"))
        .token(SERVICE)
        .send()
        .await
        .assert_status(200);
    let id = debit.body["id"].as_str().unwrap();
    app.post(&format!("/v1/debits/{id}/refunds"))
        .json(json!({}))
        .send()
        .await
        .assert_status(201);
    let balance = app.get("/v1/accounts/key_1/balance").send().await;
    let pool = &balance.body["pools"][0];
    assert_eq!(
        (
            pool["available"].as_i64(),
            pool["allowance"].as_i64(),
            pool["used"].as_i64()
        ),
        (Some(70), Some(100), Some(30))
    );
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn plan_change_with_reset_starts_a_new_period_now() {
    let app = spawn_app().await;
    plans_for_changes(&app).await;
    let before = Utc::now();
    let reset = app
        .post("/v1/accounts/key_1/plan")
        .json(json!({"plan": "big", "proration": "reset"}))
        .send()
        .await;
    reset.assert_status(200);
    let start = ts(&reset.body["current_period"]["start"]);
    assert!(start >= before - Duration::seconds(1) && start <= Utc::now());
    assert_eq!(ts(&reset.body["billing_anchor"]), start);
    let pool = &reset.body["balance"]["pools"][0];
    // 70 unused carried (the new cap is 500), a fresh 1000, nothing used.
    assert_eq!(
        (pool["available"].as_i64(), pool["used"].as_i64()),
        (Some(1070), Some(0))
    );
    let kinds: Vec<&str> = pool["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["rollover", "allowance"]);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn plan_changes_refuse_unknown_plans_and_cross_interval_differences() {
    let app = spawn_app().await;
    plans_for_changes(&app).await;
    app.put_plan(
        "yearly",
        json!({"name": "Yearly", "interval": "year", "pools": {"credits": {"allowance": 5}}}),
    )
    .await;
    let before = app.snapshot().await;
    app.post("/v1/accounts/key_1/plan")
        .json(json!({"plan": "ghost"}))
        .send()
        .await
        .assert_error(404, "plan_not_found");
    let cross = app
        .post("/v1/accounts/key_1/plan")
        .json(json!({"plan": "yearly", "proration": "difference"}))
        .send()
        .await;
    cross.assert_error(422, "invalid_request");
    assert_eq!(cross.body["error"]["details"]["field"], "proration");
    app.post("/v1/accounts/key_1/plan")
        .json(json!({"plan": "big", "proration": "sometimes"}))
        .send()
        .await
        .assert_error(422, "invalid_request");
    assert_eq!(app.snapshot().await, before);
    app.assert_audit_clean().await;
}

fn plan_with_packs(credits: i64) -> Value {
    json!({"name": "Pro", "interval": "month",
           "pools": {"credits": {"allowance": 100}, "gpu": {"allowance": 0}},
           "operations": {"search": {"cost": 1}},
           "packs": {"starter": {"credits": credits, "expires_in_days": 365,
                                 "price": {"amount": 1900, "currency": "USD"},
                                 "stripe_price": "price_1Starter"},
                     "gpu_hours": {"pool": "gpu", "credits": 10}}})
}

#[tokio::test]
async fn a_plan_shows_its_pack_catalogue_and_refuses_a_bad_pack() {
    let app = spawn_app().await;
    let plan = app.put_plan("pro", plan_with_packs(5000)).await;
    let got = app.get("/v1/plans/pro").send().await;
    got.assert_status(200);
    assert_eq!(got.body["packs"], plan["packs"]);
    assert_eq!(
        got.body["packs"]["starter"],
        json!({"pool": "credits", "credits": 5000, "expires_in_days": 365,
               "price": {"amount": 1900, "currency": "usd"}, "stripe_price": "price_1Starter"})
    );
    assert_eq!(
        got.body["packs"]["gpu_hours"],
        json!({"pool": "gpu", "credits": 10, "expires_in_days": null, "price": null,
               "stripe_price": null})
    );
    // A plan without packs shows an empty catalogue.
    app.create_plan("basic", Some(10)).await;
    let basic = app.get("/v1/plans/basic").send().await;
    assert_eq!(basic.body["packs"], json!({}));

    let mut bad = plan_with_packs(5000);
    bad["packs"]["starter"]["pool"] = json!("nope");
    let refused = app.put("/v1/plans/pro").json(bad).send().await;
    refused.assert_error(422, "invalid_plan");
    assert_eq!(
        refused.body["error"]["details"]["field"],
        "packs.starter.pool"
    );
    let versions = app.get("/v1/plans/pro").send().await;
    assert_eq!(versions.body["version"], plan["version"], "nothing changed");
}

#[tokio::test]
async fn a_pack_from_the_catalogue_is_granted_once_per_payment_with_its_expiry() {
    let app = spawn_app().await;
    app.put_plan("pro", plan_with_packs(5000)).await;
    app.create_account("key_1", "pro").await;
    let now = app.clock.now();
    let body = json!({"pack": "starter", "metadata": {"payment_id": "pi_1"}});
    let first = app
        .post("/v1/accounts/key_1/grants")
        .idempotency_key("pi_1")
        .json(body.clone())
        .send()
        .await;
    first.assert_status(201);
    assert_eq!(first.body["kind"], "pack");
    assert_eq!(first.body["pack"], "starter");
    assert_eq!(first.body["pool"], "credits");
    assert_eq!(first.body["amount"], 5000);
    let expires: DateTime<Utc> = first.body["expires_at"].as_str().unwrap().parse().unwrap();
    let effective: DateTime<Utc> = first.body["effective_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(expires - effective, Duration::days(365));
    assert!((effective - now).num_seconds().abs() < 5);
    let again = app
        .post("/v1/accounts/key_1/grants")
        .idempotency_key("pi_1")
        .json(body)
        .send()
        .await;
    again.assert_status(201);
    assert_eq!(again.header("Idempotent-Replayed"), Some("true"));
    assert_eq!(again.body["id"], first.body["id"]);
    assert_eq!(app.available("key_1", "credits").await, Some(5100));

    // Another pool's pack, without expiry; the grant list names the packs.
    let gpu = app
        .post("/v1/accounts/key_1/grants")
        .json(json!({"pack": "gpu_hours"}))
        .send()
        .await;
    gpu.assert_status(201);
    assert_eq!(gpu.body["pool"], "gpu");
    assert_eq!(gpu.body["expires_at"], Value::Null);
    assert_eq!(app.available("key_1", "gpu").await, Some(10));
    let grants = app.get("/v1/accounts/key_1/grants").send().await;
    let packs: Vec<&Value> = grants.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| &g["pack"])
        .collect();
    // Newest first: the two packs, then the two pools' allowances.
    assert_eq!(
        packs,
        [
            &json!("gpu_hours"),
            &json!("starter"),
            &Value::Null,
            &Value::Null
        ]
    );

    // A new version of the plan changes what the next pack holds.
    app.put_plan("pro", plan_with_packs(6000)).await;
    let bigger = app
        .post("/v1/accounts/key_1/grants")
        .json(json!({"pack": "starter"}))
        .send()
        .await;
    assert_eq!(bigger.body["amount"], 6000);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_pack_grant_refuses_unknown_packs_and_fields_the_catalogue_sets() {
    let app = spawn_app().await;
    app.put_plan("pro", plan_with_packs(5000)).await;
    app.create_account("key_1", "pro").await;
    let unknown = app
        .post("/v1/accounts/key_1/grants")
        .json(json!({"pack": "huge"}))
        .send()
        .await;
    unknown.assert_error(422, "unknown_pack");
    assert_eq!(
        unknown.body["error"]["details"],
        json!({"field": "pack", "pack": "huge", "known": ["gpu_hours", "starter"]})
    );
    assert!(unknown.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("sells gpu_hours, starter"));
    for (extra, name) in [
        (json!({"amount": 5}), "amount"),
        (json!({"pool": "gpu"}), "pool"),
        (json!({"expires_at": "2099-01-01T00:00:00Z"}), "expires_at"),
        (json!({"kind": "promotional"}), "kind"),
    ] {
        let mut body = json!({"pack": "starter"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let refused = app
            .post("/v1/accounts/key_1/grants")
            .json(body)
            .send()
            .await;
        refused.assert_error(422, "invalid_request");
        assert_eq!(refused.body["error"]["details"]["field"], name);
    }
    // A pack whose expiry would fall after the year 9999 is refused, not stored.
    let late = app
        .post("/v1/accounts/key_1/grants")
        .json(json!({"pack": "starter", "effective_at": "9999-06-01T00:00:00Z"}))
        .send()
        .await;
    late.assert_error(422, "invalid_request");
    assert_eq!(late.body["error"]["details"]["field"], "effective_at");
    // kind "pack" beside pack is fine; without pack, kind and amount stay required.
    app.post("/v1/accounts/key_1/grants")
        .json(json!({"pack": "starter", "kind": "pack"}))
        .send()
        .await
        .assert_status(201);
    let missing = app
        .post("/v1/accounts/key_1/grants")
        .json(json!({"kind": "pack"}))
        .send()
        .await;
    missing.assert_error(422, "invalid_request");
    assert_eq!(missing.body["error"]["details"]["field"], "amount");
    let null_amount = app
        .post("/v1/accounts/key_1/grants")
        .json(json!({"kind": "pack", "amount": null}))
        .send()
        .await;
    assert_eq!(null_amount.body["error"]["details"]["field"], "amount");
    assert_eq!(app.available("key_1", "credits").await, Some(5100));
}
