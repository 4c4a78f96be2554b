use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use credit_ledger::ledger::order::{consumption_order, OrderKey};

use crate::helpers::{spawn_app, SERVICE};

#[tokio::test]
async fn a_debit_charges_price_times_quantity_and_reports_what_is_left() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(1000)).await;
    let account = app.create_account("key_1", "pro").await;
    let response = app
        .debit(
            "key_1",
            json!({"operation": "image.generate", "quantity": 3, "metadata": {"job": "j1"}}),
        )
        .await;
    response.assert_status(201);
    let debit = &response.body;
    assert_eq!(debit["cost"], 30);
    assert_eq!(debit["quantity"], 3);
    assert_eq!(debit["pool"], "credits");
    assert_eq!(debit["operation"], "image.generate");
    assert_eq!(debit["remaining"], 970);
    assert_eq!(debit["plan_version"], 1);
    assert_eq!(debit["metadata"], json!({"job": "j1"}));
    assert_eq!(debit["reset_at"], account["current_period"]["end"]);
    assert_eq!(response.header("x-credits-remaining"), Some("970"));
    let grant_id = &account["balance"]["pools"][0]["grants"][0]["id"];
    assert_eq!(
        debit["drawn"],
        json!([{"grant_id": grant_id, "kind": "allowance", "amount": 30}])
    );

    let balance = app
        .get("/v1/accounts/key_1/balance")
        .token(SERVICE)
        .send()
        .await;
    assert_eq!(balance.body["pools"][0]["available"], 970);
    assert_eq!(balance.body["pools"][0]["used"], 30);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn quantity_defaults_to_one() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(1000)).await;
    app.create_account("key_1", "pro").await;
    let response = app.debit("key_1", json!({"operation": "search"})).await;
    response.assert_status(201);
    assert_eq!(
        (
            response.body["quantity"].as_i64(),
            response.body["cost"].as_i64()
        ),
        (Some(1), Some(1))
    );
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn an_explicit_cost_is_charged_as_is_and_the_operation_only_recorded() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_1", "pro").await;
    let response = app
        .debit(
            "key_1",
            json!({"cost": 25, "pool": "credits", "operation": "batch.export"}),
        )
        .await;
    response.assert_status(201);
    assert_eq!(response.body["cost"], 25);
    assert_eq!(response.body["operation"], "batch.export");
    assert_eq!(app.available("key_1", "credits").await, Some(75));
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn the_debit_at_exactly_the_balance_succeeds_and_the_next_is_402() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(30)).await;
    app.create_account("key_1", "pro").await;
    app.debit(
        "key_1",
        json!({"operation": "image.generate", "quantity": 3}),
    )
    .await
    .assert_status(201);
    let refused = app.debit("key_1", json!({"operation": "search"})).await;
    refused.assert_error(402, "credits_exhausted");
    assert_eq!(refused.body["error"]["details"]["available"], 0);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn credits_exhausted_tells_the_customer_everything() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    let account = app.create_account("key_123", "pro").await;
    app.debit("key_123", json!({"cost": 88}))
        .await
        .assert_status(201);
    let before = app.snapshot().await;

    let refused = app
        .debit(
            "key_123",
            json!({"operation": "image.generate", "quantity": 3}),
        )
        .await;
    refused.assert_error(402, "credits_exhausted");
    let details = &refused.body["error"]["details"];
    assert_eq!(details["key_id"], "key_123");
    assert_eq!(details["pool"], "credits");
    assert_eq!(details["required"], 30);
    assert_eq!(details["available"], 12);
    assert_eq!(details["allowed"], 100);
    assert_eq!(details["used"], 88);
    assert_eq!(details["reset_at"], account["current_period"]["end"]);
    let reset_at = account["current_period"]["end"].as_str().unwrap();
    assert_eq!(
        refused.body["error"]["message"],
        format!("Key key_123 needs 30 credits for image.generate but has 12 left; 100 come back at {reset_at}.")
    );
    assert!(refused.header("x-credits-remaining").is_none());
    assert_eq!(
        app.snapshot().await,
        before,
        "a refused debit changes nothing"
    );
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_dry_run_answers_like_the_debit_and_writes_nothing() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_1", "pro").await;
    let before = app.snapshot().await;
    let would = app
        .debit(
            "key_1",
            json!({"operation": "image.generate", "quantity": 2, "dry_run": true}),
        )
        .await;
    would.assert_status(200);
    assert_eq!(would.body["dry_run"], true);
    assert_eq!(would.body["id"], serde_json::Value::Null);
    assert_eq!(would.body["cost"], 20);
    assert_eq!(would.body["remaining"], 80);
    assert_eq!(would.body["drawn"][0]["amount"], 20);
    assert_eq!(would.header("x-credits-remaining"), Some("80"));
    let refused = app
        .debit(
            "key_1",
            json!({"operation": "image.generate", "quantity": 11, "dry_run": true}),
        )
        .await;
    refused.assert_error(402, "credits_exhausted");
    assert_eq!(refused.body["error"]["details"]["required"], 110);
    assert_eq!(app.snapshot().await, before);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn debits_draw_from_grants_in_consumption_order() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(10)).await;
    let account = app.create_account("key_1", "pro").await;
    let now = Utc::now();
    let period_end: DateTime<Utc> = account["current_period"]["end"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let allowance = OrderKey {
        expires_at: Some(period_end),
        priority: 0,
        created_at: account["balance"]["pools"][0]["grants"][0]["effective_at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        id: account["balance"]["pools"][0]["grants"][0]["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
    };
    let soon = now + Duration::hours(2);
    let mut grants = vec![
        allowance,
        app.insert_grant("key_1", "pack", 10, None, 0, now - Duration::days(40))
            .await,
        app.insert_grant("key_1", "pack", 10, None, 0, now - Duration::days(2))
            .await,
        app.insert_grant("key_1", "promotional", 10, None, 9, now - Duration::days(1))
            .await,
        app.insert_grant(
            "key_1",
            "rollover",
            10,
            Some(soon),
            0,
            now - Duration::days(3),
        )
        .await,
        app.insert_grant(
            "key_1",
            "adjustment",
            10,
            Some(soon),
            5,
            now - Duration::days(1),
        )
        .await,
        // Already expired: must never be drawn.
        app.insert_grant(
            "key_1",
            "pack",
            10,
            Some(now - Duration::minutes(1)),
            99,
            now - Duration::days(9),
        )
        .await,
    ];
    grants.pop();
    grants.sort_by(consumption_order);

    let debit = app.debit("key_1", json!({"cost": 60})).await;
    debit.assert_status(201);
    let drawn: Vec<String> = debit.body["drawn"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["grant_id"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = grants.iter().map(|g| g.id.to_string()).collect();
    assert_eq!(drawn, expected, "SQL and rules::consumption_order agree");
    let kinds: Vec<&str> = debit.body["drawn"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "adjustment",
            "rollover",
            "allowance",
            "promotional",
            "pack",
            "pack"
        ]
    );
    assert_eq!(debit.body["remaining"], 0);

    // The balance lists active grants in the same order, the expired pack not at all.
    let balance = app.get("/v1/accounts/key_1/balance").send().await;
    let listed: Vec<String> = balance.body["pools"][0]["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, expected);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_debit_spanning_grants_writes_one_entry_per_grant_with_running_balances() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(10)).await;
    app.create_account("key_1", "pro").await;
    app.insert_grant("key_1", "pack", 50, None, 0, Utc::now() - Duration::days(1))
        .await;
    let debit = app.debit("key_1", json!({"cost": 25})).await;
    debit.assert_status(201);
    assert_eq!(debit.body["drawn"].as_array().unwrap().len(), 2);

    let page = app
        .get("/v1/accounts/key_1/entries")
        .token(SERVICE)
        .send()
        .await;
    page.assert_status(200);
    let data = page.body["data"].as_array().unwrap();
    let rows: Vec<(String, i64, Option<i64>)> = data
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["amount"].as_i64().unwrap(),
                e["balance_after"].as_i64(),
            )
        })
        .collect();
    // Newest first: the pack's part, the allowance's part, then the two grants.
    assert_eq!(rows[0], ("debit".to_owned(), -15, Some(35)));
    assert_eq!(rows[1], ("debit".to_owned(), -10, Some(50)));
    assert_eq!(data[0]["debit_id"], debit.body["id"]);
    assert_eq!(data[1]["debit_id"], debit.body["id"]);
    let sum: i64 = app.all_entries("key_1").await.iter().map(|e| e.1).sum();
    assert_eq!(sum, 35);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn entries_page_newest_first_with_a_cursor() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_1", "pro").await;
    for _ in 0..5 {
        app.debit("key_1", json!({"operation": "search"}))
            .await
            .assert_status(201);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/accounts/key_1/entries?limit=2&cursor={c}"),
            None => "/v1/accounts/key_1/entries?limit=2".to_owned(),
        };
        let page = app.get(&path).send().await;
        page.assert_status(200);
        for e in page.body["data"].as_array().unwrap() {
            seen.push((
                e["id"].as_i64().unwrap(),
                e["balance_after"].as_i64().unwrap(),
            ));
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);
    assert!(
        seen.windows(2).all(|w| w[0].0 > w[1].0),
        "newest first: {seen:?}"
    );
    let balances: Vec<i64> = seen.iter().map(|s| s.1).collect();
    assert_eq!(balances, vec![95, 96, 97, 98, 99, 100]);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn an_unlimited_pool_always_accepts_and_still_journals() {
    let app = spawn_app().await;
    app.create_plan("internal", None).await;
    app.create_account("key_1", "internal").await;
    let debit = app
        .debit(
            "key_1",
            json!({"operation": "image.generate", "quantity": 1000000}),
        )
        .await;
    debit.assert_status(201);
    assert_eq!(debit.body["remaining"], serde_json::Value::Null);
    assert_eq!(debit.body["drawn"], json!([]));
    assert!(debit.header("x-credits-remaining").is_none());
    let entries = app.all_entries("key_1").await;
    assert_eq!(entries, vec![("debit".to_owned(), -10_000_000, None)]);
    let balance = app.get("/v1/accounts/key_1/balance").send().await;
    assert_eq!(balance.body["pools"][0]["used"], 10_000_000);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn unknown_operations_and_pools_are_422_and_unknown_accounts_404() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_1", "pro").await;
    let before = app.snapshot().await;
    let unknown = app.debit("key_1", json!({"operation": "teleport"})).await;
    unknown.assert_error(422, "unknown_operation");
    assert_eq!(unknown.body["error"]["details"]["operation"], "teleport");
    // A typo is answered with the operations the plan prices.
    assert_eq!(
        unknown.body["error"]["details"]["known"],
        json!(["image.generate", "search"])
    );
    assert!(unknown.body["error"]["message"]
        .as_str()
        .unwrap()
        .ends_with("; it prices image.generate, search"));
    app.debit("key_1", json!({"cost": 5, "pool": "exports"}))
        .await
        .assert_error(422, "unknown_pool");
    app.debit("key_1", json!({"operation": "search", "pool": "exports"}))
        .await
        .assert_error(422, "invalid_request");
    app.debit("ghost", json!({"operation": "search"}))
        .await
        .assert_error(404, "account_not_found");
    assert_eq!(app.snapshot().await, before);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_debit_is_priced_by_the_latest_plan_version_and_records_it() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(1000)).await;
    app.create_account("key_1", "pro").await;
    app.put_plan(
        "pro",
        json!({"name": "Pro", "interval": "month", "pools": {"credits": {"allowance": 1000}},
               "operations": {"image.generate": {"cost": 4}}}),
    )
    .await;
    let debit = app
        .debit("key_1", json!({"operation": "image.generate"}))
        .await;
    debit.assert_status(201);
    assert_eq!(
        (
            debit.body["cost"].as_i64(),
            debit.body["plan_version"].as_i64()
        ),
        (Some(4), Some(2))
    );
    let stored: i32 = sqlx::query_scalar("SELECT plan_version FROM debits")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 2);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn an_admin_token_may_debit_and_a_missing_token_may_not() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_1", "pro").await;
    app.post("/v1/accounts/key_1/debits")
        .json(json!({"operation": "search"}))
        .send()
        .await
        .assert_status(201);
    app.post("/v1/accounts/key_1/debits")
        .no_token()
        .json(json!({"operation": "search"}))
        .send()
        .await
        .assert_error(401, "unauthorized");
    app.post("/v1/accounts/key_1/debits")
        .token("wrong-token")
        .json(json!({"operation": "search"}))
        .send()
        .await
        .assert_error(401, "unauthorized");
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_grant_stops_counting_at_its_expiry_instant() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(10)).await;
    app.create_account("key_1", "pro").await;
    let now = Utc::now();
    let expiry = now + Duration::minutes(30);
    app.insert_grant(
        "key_1",
        "pack",
        100,
        Some(expiry),
        0,
        now - Duration::days(1),
    )
    .await;

    app.clock.freeze_at(expiry - Duration::microseconds(1));
    let before = app
        .debit("key_1", json!({"cost": 1, "dry_run": true}))
        .await;
    before.assert_status(200);
    assert_eq!(before.body["remaining"], 109);
    assert_eq!(before.body["drawn"][0]["kind"], "pack");

    app.clock.freeze_at(expiry);
    let at = app.debit("key_1", json!({"cost": 11})).await;
    at.assert_error(402, "credits_exhausted");
    assert_eq!(at.body["error"]["details"]["available"], 10);
    let debit = app.debit("key_1", json!({"cost": 4})).await;
    debit.assert_status(201);
    assert_eq!(debit.body["drawn"][0]["kind"], "allowance");
    assert_eq!(debit.body["remaining"], 6);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_refusal_of_one_credit_says_credit_not_credits() {
    let app = spawn_app().await;
    app.create_plan("tiny", Some(0)).await;
    app.create_account("key_1", "tiny").await;
    let refused = app.debit("key_1", json!({"cost": 1})).await;
    refused.assert_error(402, "credits_exhausted");
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Key key_1 needs 1 credit but has none left;"),
        "{message}"
    );
}

#[tokio::test]
async fn credits_exhausted_shows_the_grants_what_comes_back_and_what_to_buy() {
    let app = crate::helpers::spawn_app_with(&[(
        "LEDGER_TOP_UP_URL",
        "https://app.example.com/billing?key={key_id}",
    )])
    .await;
    app.put_plan(
        "pro",
        json!({"name": "Pro", "interval": "month",
               "pools": {"credits": {"allowance": 100}, "gpu": {"allowance": 0},
                         "free": {"allowance": null}},
               "operations": {"render": {"cost": 40}},
               "packs": {"small": {"credits": 500, "expires_in_days": 30,
                                   "price": {"amount": 900, "currency": "usd"}},
                         "large": {"credits": 5000},
                         "gpu_hours": {"pool": "gpu", "credits": 10}}}),
    )
    .await;
    let account = app.create_account("key:1", "pro").await;
    let promo = app
        .post("/v1/accounts/key:1/grants")
        .json(json!({"kind": "promotional", "amount": 10,
                     "expires_at": (chrono::Utc::now() + Duration::days(3)).to_rfc3339()}))
        .send()
        .await;
    promo.assert_status(201);
    app.debit("key:1", json!({"cost": 90}))
        .await
        .assert_status(201);

    let refused = app.debit("key:1", json!({"operation": "render"})).await;
    refused.assert_error(402, "credits_exhausted");
    let details = &refused.body["error"]["details"];
    // The promotion expires first, so it was drawn first (it is still active, empty): the
    // allowance holds what is left.
    let grants: Vec<(&str, i64)> = details["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["kind"].as_str().unwrap(),
                g["remaining"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(grants, vec![("promotional", 0), ("allowance", 20)]);
    let reset_at = account["current_period"]["end"].clone();
    assert_eq!(
        details["next_allowance"],
        json!({"amount": 100, "at": reset_at})
    );
    // The packs for this pool only, by id.
    assert_eq!(
        details["packs"],
        json!([{"id": "large", "credits": 5000, "price": null, "expires_in_days": null},
               {"id": "small", "credits": 500, "price": {"amount": 900, "currency": "usd"},
                "expires_in_days": 30}])
    );
    assert_eq!(
        details["top_up_url"],
        "https://app.example.com/billing?key=key%3A1"
    );
    assert_eq!(
        refused.body["error"]["message"],
        format!(
            "Key key:1 needs 40 credits for render but has 20 left; 100 come back at {}; \
             packs of 500, 5000 credits are available.",
            reset_at.as_str().unwrap()
        )
    );

    // The balance says what comes back too.
    let balance = app
        .get("/v1/accounts/key:1/balance")
        .token(SERVICE)
        .send()
        .await;
    let pools = balance.body["pools"].as_array().unwrap();
    let credits = pools.iter().find(|p| p["pool"] == "credits").unwrap();
    assert_eq!(
        credits["next_allowance"],
        json!({"amount": 100, "at": reset_at})
    );
    let gpu = pools.iter().find(|p| p["pool"] == "gpu").unwrap();
    assert_eq!(gpu["next_allowance"], json!({"amount": 0, "at": reset_at}));
    let free = pools.iter().find(|p| p["pool"] == "free").unwrap();
    assert!(free["next_allowance"].is_null());

    // A pool that only packs fill: nothing comes back, and its pack is offered.
    let gpu_refused = app.debit("key:1", json!({"cost": 1, "pool": "gpu"})).await;
    gpu_refused.assert_error(402, "credits_exhausted");
    assert_eq!(
        gpu_refused.body["error"]["message"],
        format!(
            "Key key:1 needs 1 gpu credit but has none left; credits reset at {}; \
             a 10-credit pack is available.",
            reset_at.as_str().unwrap()
        )
    );
}
