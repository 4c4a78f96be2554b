use chrono::{DateTime, Datelike, Utc};
use serde_json::json;

use crate::helpers::{spawn_app, SERVICE};

fn ts(value: &serde_json::Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn creating_an_account_grants_the_allowance_of_the_current_period() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(1000)).await;
    let response = app
        .put("/v1/accounts/key_1")
        .json(
            json!({"plan": "pro", "billing_anchor": "2026-01-31T00:00:00Z",
                     "external_id": "org_1", "metadata": {"tier": "gold"}}),
        )
        .send()
        .await;
    response.assert_status(201);
    let account = &response.body;
    assert_eq!(account["key_id"], "key_1");
    assert_eq!(account["plan"], "pro");
    assert_eq!(account["external_id"], "org_1");
    assert_eq!(account["metadata"]["tier"], "gold");
    let start = ts(&account["current_period"]["start"]);
    let end = ts(&account["current_period"]["end"]);
    let now = Utc::now();
    assert!(start <= now && now < end, "the current period contains now");
    // Anchored on the 31st: every period starts on the 31st or the last day of a shorter month.
    let last_day = |d: DateTime<Utc>| (d + chrono::Duration::days(1)).day() == 1;
    assert!(start.day() == 31 || last_day(start), "{start}");

    let pool = &account["balance"]["pools"][0];
    assert_eq!(pool["pool"], "credits");
    assert_eq!(pool["available"], 1000);
    assert_eq!(pool["allowance"], 1000);
    assert_eq!(pool["used"], 0);
    let grants = pool["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0]["kind"], "allowance");
    assert_eq!(grants[0]["remaining"], 1000);
    assert_eq!(ts(&grants[0]["expires_at"]), end);

    let entries = app.all_entries("key_1").await;
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].0.as_str(), entries[0].1), ("grant", 1000));
}

#[tokio::test]
async fn an_account_anchored_long_ago_starts_in_the_period_that_contains_now() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(50)).await;
    let response = app
        .put("/v1/accounts/old")
        .json(json!({"plan": "pro", "billing_anchor": "2019-03-15T12:00:00Z"}))
        .send()
        .await;
    response.assert_status(201);
    let start = ts(&response.body["current_period"]["start"]);
    let end = ts(&response.body["current_period"]["end"]);
    let now = Utc::now();
    assert!(start <= now && now < end);
    assert_eq!(start.day(), 15);
    // One allowance grant, for this period only: nothing from before the account existed.
    assert_eq!(app.count("grants").await, 1);
    assert_eq!(app.available("old", "credits").await, Some(50));
}

#[tokio::test]
async fn put_on_an_existing_account_updates_its_details_and_answers_200() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    let created = app.create_account("key_1", "pro").await;
    let updated = app
        .put("/v1/accounts/key_1")
        .json(json!({"plan": "pro", "external_id": "org_9", "metadata": {"a": 1}}))
        .send()
        .await;
    updated.assert_status(200);
    assert_eq!(updated.body["external_id"], "org_9");
    assert_eq!(updated.body["metadata"], json!({"a": 1}));
    assert_eq!(updated.body["billing_anchor"], created["billing_anchor"]);
    // No second allowance: an update grants nothing.
    assert_eq!(app.count("grants").await, 1);

    // Absent fields keep their values; null clears external_id.
    let kept = app
        .put("/v1/accounts/key_1")
        .json(json!({"plan": "pro"}))
        .send()
        .await;
    kept.assert_status(200);
    assert_eq!(kept.body["external_id"], "org_9");
    assert_eq!(kept.body["metadata"], json!({"a": 1}));
    let cleared = app
        .put("/v1/accounts/key_1")
        .json(json!({"plan": "pro", "external_id": null}))
        .send()
        .await;
    assert_eq!(cleared.body["external_id"], serde_json::Value::Null);
}

#[tokio::test]
async fn changing_plan_or_anchor_through_put_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_plan("max", Some(900)).await;
    app.put("/v1/accounts/key_1")
        .json(json!({"plan": "pro", "billing_anchor": "2026-11-01T00:00:00Z"}))
        .send()
        .await
        .assert_status(201);
    let before = app.snapshot().await;
    app.put("/v1/accounts/key_1")
        .json(json!({"plan": "max"}))
        .send()
        .await
        .assert_error(409, "plan_change_requires_proration");
    app.put("/v1/accounts/key_1")
        .json(json!({"plan": "pro", "billing_anchor": "2026-11-02T00:00:00Z"}))
        .send()
        .await
        .assert_error(409, "billing_anchor_immutable");
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn creating_an_account_on_an_unknown_plan_is_404_plan_not_found() {
    let app = spawn_app().await;
    app.put("/v1/accounts/key_1")
        .json(json!({"plan": "ghost"}))
        .send()
        .await
        .assert_error(404, "plan_not_found");
    assert_eq!(app.count("accounts").await, 0);
}

#[tokio::test]
async fn unknown_accounts_are_404_on_every_read() {
    let app = spawn_app().await;
    for path in [
        "/v1/accounts/nobody",
        "/v1/accounts/nobody/balance",
        "/v1/accounts/nobody/entries",
    ] {
        app.get(path)
            .token(SERVICE)
            .send()
            .await
            .assert_error(404, "account_not_found");
    }
}

#[tokio::test]
async fn accounts_are_listed_by_external_id_with_balances_and_pages() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(10)).await;
    for key in ["k_a", "k_b", "k_c"] {
        app.put(&format!("/v1/accounts/{key}"))
            .json(json!({"plan": "pro", "external_id": "org_1"}))
            .send()
            .await
            .assert_status(201);
    }
    app.put("/v1/accounts/k_other")
        .json(json!({"plan": "pro", "external_id": "org_2"}))
        .send()
        .await
        .assert_status(201);

    let page = app
        .get("/v1/accounts?external_id=org_1&limit=2")
        .token(SERVICE)
        .send()
        .await;
    page.assert_status(200);
    let keys: Vec<&str> = page.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["k_a", "k_b"]);
    assert_eq!(page.body["data"][0]["balance"]["pools"][0]["available"], 10);
    let cursor = page.body["next_cursor"].as_str().unwrap().to_owned();
    let next = app
        .get(&format!(
            "/v1/accounts?external_id=org_1&limit=2&cursor={cursor}"
        ))
        .send()
        .await;
    assert_eq!(next.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(next.body["data"][0]["key_id"], "k_c");
    assert_eq!(next.body["next_cursor"], serde_json::Value::Null);

    let none = app.get("/v1/accounts?external_id=org_404").send().await;
    assert_eq!(none.body["data"], json!([]));
}

#[tokio::test]
async fn an_unlimited_pool_shows_null_available() {
    let app = spawn_app().await;
    app.create_plan("internal", None).await;
    let account = app.create_account("key_1", "internal").await;
    let pool = &account["balance"]["pools"][0];
    assert_eq!(pool["available"], serde_json::Value::Null);
    assert_eq!(pool["allowance"], serde_json::Value::Null);
    assert_eq!(pool["grants"], json!([]));
}

#[tokio::test]
async fn concurrent_creates_of_one_account_make_one_account_and_one_allowance() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    let calls = (0..10).map(|_| {
        app.put("/v1/accounts/racy")
            .json(json!({"plan": "pro", "billing_anchor": "2026-11-01T00:00:00Z"}))
            .send()
    });
    let responses = futures::future::join_all(calls).await;
    let created = responses.iter().filter(|r| r.status == 201).count();
    let updated = responses.iter().filter(|r| r.status == 200).count();
    assert_eq!((created, updated), (1, 9));
    assert_eq!(app.count("accounts").await, 1);
    assert_eq!(app.count("grants").await, 1);
    assert_eq!(app.available("racy", "credits").await, Some(100));
}

#[tokio::test]
async fn several_pools_each_get_their_own_allowance() {
    let app = spawn_app().await;
    app.put_plan(
        "multi",
        json!({"name": "Multi", "interval": "week",
               "pools": {"credits": {"allowance": 100}, "ai-tokens": {"allowance": 5000}},
               "operations": {"chat": {"pool": "ai-tokens", "cost": 7}}}),
    )
    .await;
    app.create_account("key_1", "multi").await;
    assert_eq!(app.available("key_1", "credits").await, Some(100));
    assert_eq!(app.available("key_1", "ai-tokens").await, Some(5000));
    let debit = app
        .debit("key_1", json!({"operation": "chat", "quantity": 3}))
        .await;
    debit.assert_status(201);
    assert_eq!(debit.body["pool"], "ai-tokens");
    assert_eq!(app.available("key_1", "ai-tokens").await, Some(4979));
    assert_eq!(app.available("key_1", "credits").await, Some(100));
}

#[tokio::test]
async fn the_journal_filters_by_kind_and_time_and_pages_within_the_filter() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(1000)).await;
    app.create_account("key_1", "pro").await;
    let start = app.clock.now();
    for i in 0..3 {
        app.clock.advance(chrono::Duration::minutes(10));
        app.debit("key_1", json!({"cost": 1 + i}))
            .await
            .assert_status(201);
    }
    app.clock.advance(chrono::Duration::minutes(10));
    app.post("/v1/accounts/key_1/adjustments")
        .json(json!({"pool": "credits", "op": "increment", "amount": 5, "reason": "goodwill"}))
        .send()
        .await
        .assert_status(201);

    let app = &app;
    let page = |query: &str| {
        let path = format!("/v1/accounts/key_1/entries?{query}");
        async move { app.get(&path).token(SERVICE).send().await }
    };
    let kinds = |body: &serde_json::Value| -> Vec<(String, i64)> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_owned(),
                    e["amount"].as_i64().unwrap(),
                )
            })
            .collect()
    };

    let debits = page("kind=debit").await;
    debits.assert_status(200);
    let expected = |v: &[i64]| {
        v.iter()
            .map(|a| ("debit".to_owned(), *a))
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(&debits.body), expected(&[-3, -2, -1]));

    let two_kinds = page("kind=adjustment,%20grant").await;
    two_kinds.assert_status(200);
    assert_eq!(
        kinds(&two_kinds.body),
        vec![("adjustment".to_owned(), 5), ("grant".to_owned(), 1000)]
    );

    // The second and third debits: written after start + 15 min and before start + 35 min.
    let at = |m: i64| {
        (start + chrono::Duration::minutes(m)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let window = page(&format!("kind=debit&from={}&to={}", at(15), at(35))).await;
    window.assert_status(200);
    assert_eq!(kinds(&window.body), expected(&[-3, -2]));

    // A page of one, then the next page, stay within the filter.
    let first = page("kind=debit&limit=1").await;
    assert_eq!(kinds(&first.body), expected(&[-3]));
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second = page(&format!("kind=debit&limit=2&cursor={cursor}")).await;
    assert_eq!(kinds(&second.body), expected(&[-2, -1]));
    assert!(second.body["next_cursor"].is_null());

    let bad = page("kind=debit,spend").await;
    bad.assert_error(422, "invalid_request");
    assert_eq!(bad.body["error"]["details"]["field"], "kind");
    assert!(bad.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'spend' is not an entry kind"));
    let backwards = page(&format!("from={}&to={}", at(20), at(10))).await;
    backwards.assert_error(422, "invalid_request");
    assert_eq!(backwards.body["error"]["details"]["field"], "to");
}

#[tokio::test]
async fn the_balance_forecasts_when_a_pool_runs_out_at_its_recent_pace() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(1000)).await;
    app.clock.advance(-chrono::Duration::days(4));
    app.create_account("key_1", "pro").await;
    let idle = app
        .get("/v1/accounts/key_1/balance")
        .token(SERVICE)
        .send()
        .await;
    let forecast = &idle.body["pools"][0]["forecast"];
    assert!(forecast["daily_burn"].is_null() && forecast["runs_out_at"].is_null());
    for _ in 0..4 {
        app.debit("key_1", json!({"cost": 100}))
            .await
            .assert_status(201);
        app.clock.advance(chrono::Duration::days(1));
    }
    let balance = app
        .get("/v1/accounts/key_1/balance")
        .token(SERVICE)
        .send()
        .await;
    balance.assert_status(200);
    let pool = &balance.body["pools"][0];
    assert_eq!(pool["available"], 600);
    let forecast = &pool["forecast"];
    assert_eq!(
        forecast["daily_burn"], 100,
        "400 credits over the 4 days since the account began"
    );
    let runs_out = ts(&forecast["runs_out_at"]);
    let expected = app.clock.now() + chrono::Duration::days(6);
    assert!(
        (runs_out - expected).num_seconds().abs() < 120,
        "{runs_out} vs {expected}"
    );
    // The same forecast on the account.
    let account = app.get("/v1/accounts/key_1").token(SERVICE).send().await;
    assert_eq!(
        account.body["balance"]["pools"][0]["forecast"]["daily_burn"],
        100
    );
}
