//! `/v1/verify` and `/v1/me/*` against the Unkey test double.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp, TestResponse, ADMIN, SERVICE};
use crate::unkey_double::{Key, UnkeyDouble, ROOT_KEY};

async fn setup(extra: &[(&str, &str)]) -> (TestApp, UnkeyDouble) {
    let unkey = UnkeyDouble::start().await;
    let mut settings = vec![
        ("UNKEY_BASE_URL", unkey.base_url.as_str()),
        ("UNKEY_ROOT_KEY", ROOT_KEY),
        ("UNKEY_TIMEOUT_MS", "300"),
        ("UNKEY_RETRIES", "1"),
    ];
    settings.extend_from_slice(extra);
    let app = spawn_app_with(&settings).await;
    app.put_plan(
        "pro",
        json!({"name": "Pro", "interval": "month",
               "pools": {"credits": {"allowance": 100}},
               "operations": {"search": {"cost": 1}, "image.generate": {"cost": 10}}}),
    )
    .await;
    (app, unkey)
}

async fn verify(app: &TestApp, key: &str, body: Value) -> TestResponse {
    let mut body = body;
    body["key"] = json!(key);
    app.post("/v1/verify")
        .token(SERVICE)
        .json(body)
        .send()
        .await
}

#[tokio::test]
async fn a_valid_key_is_verified_then_debited_on_its_plan() {
    let (app, unkey) = setup(&[]).await;
    unkey.valid("sk_live_1", "key_1", json!({"plan": "pro"}));
    let response = verify(
        &app,
        "sk_live_1",
        json!({"operation": "image.generate", "quantity": 2}),
    )
    .await;
    response.assert_status(200);
    assert_eq!(response.body["valid"], true);
    assert_eq!(response.body["key_id"], "key_1");
    assert_eq!(response.body["account_key_id"], "key_1");
    assert_eq!(response.body["debit"]["cost"], 20);
    assert_eq!(response.body["debit"]["source_key_id"], "key_1");
    assert_eq!(response.header("x-credits-remaining"), Some("80"));

    // Exactly what the contract says to send.
    let sent = unkey.received_on("/v2/keys.verifyKey");
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].authorization.as_deref(),
        Some(&*format!("Bearer {ROOT_KEY}"))
    );
    assert_eq!(
        sent[0].body,
        json!({"key": "sk_live_1", "credits": {"cost": 0}})
    );
    // No burst limits on this plan: no ratelimit call.
    assert!(unkey.received_on("/v2/ratelimit.limit").is_empty());
    let account = app.get("/v1/accounts/key_1").send().await;
    assert_eq!(account.body["plan"], "pro");
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn plan_burst_limits_go_through_unkey_and_a_refusal_leaves_the_ledger_alone() {
    let (app, unkey) = setup(&[]).await;
    app.put_plan(
        "bursty",
        json!({"name": "Bursty", "interval": "month", "pools": {"credits": {"allowance": 100}},
               "operations": {"search": {"cost": 1}},
               "ratelimits": [{"name": "burst", "limit": 2, "duration_ms": 60000}]}),
    )
    .await;
    unkey.valid("sk_b", "key_b", json!({"plan": "bursty"}));
    for remaining in ["1", "0"] {
        let ok = verify(&app, "sk_b", json!({"operation": "search"})).await;
        ok.assert_status(200);
        assert_eq!(ok.header("x-ratelimit-limit"), Some("2"));
        assert_eq!(ok.header("x-ratelimit-remaining"), Some(remaining));
        assert!(ok.header("x-ratelimit-reset").is_some());
        assert_eq!(ok.body["ratelimit"]["limit"], 2);
    }
    let limited = verify(&app, "sk_b", json!({"operation": "search"})).await;
    limited.assert_error(429, "rate_limited");
    let retry: i64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(app.count("debits").await, 2);
    let sent = unkey.received_on("/v2/ratelimit.limit");
    assert_eq!(
        sent[0].body,
        json!({"namespace": "credit-ledger", "identifier": "key_b", "limit": 2,
               "duration": 60000, "cost": 1})
    );
}

#[tokio::test]
async fn refused_keys_are_401_invalid_key_with_the_unkey_code_and_touch_nothing() {
    let (app, unkey) = setup(&[]).await;
    for code in [
        "DISABLED",
        "EXPIRED",
        "FORBIDDEN",
        "INSUFFICIENT_PERMISSIONS",
        "A_CODE_FROM_THE_FUTURE",
    ] {
        unkey.add_key(
            &format!("sk_{code}"),
            Key::Refused {
                code: code.to_owned(),
                key_id: Some("key_x".to_owned()),
            },
        );
    }
    let before = app.snapshot().await;
    for code in [
        "DISABLED",
        "EXPIRED",
        "FORBIDDEN",
        "INSUFFICIENT_PERMISSIONS",
        "A_CODE_FROM_THE_FUTURE",
    ] {
        let refused = verify(&app, &format!("sk_{code}"), json!({"operation": "search"})).await;
        refused.assert_error(401, "invalid_key");
        assert_eq!(refused.body["error"]["details"]["unkey_code"], code);
    }
    let unknown = verify(&app, "sk_nobody", json!({"operation": "search"})).await;
    unknown.assert_error(401, "invalid_key");
    assert_eq!(unknown.body["error"]["details"]["unkey_code"], "NOT_FOUND");
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn rate_limited_and_usage_exceeded_verdicts_map_to_429_and_402() {
    let (app, unkey) = setup(&[]).await;
    let reset_ms = chrono::Utc::now().timestamp_millis() + 30_000;
    unkey.add_key(
        "sk_fast",
        Key::RateLimited {
            key_id: "key_f".into(),
            reset_ms,
        },
    );
    unkey.add_key(
        "sk_used",
        Key::Refused {
            code: "USAGE_EXCEEDED".into(),
            key_id: Some("key_u".into()),
        },
    );
    let limited = verify(&app, "sk_fast", json!({"operation": "search"})).await;
    limited.assert_error(429, "rate_limited");
    let retry: i64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((29..=31).contains(&retry), "{retry}");
    assert_eq!(limited.header("x-ratelimit-limit"), Some("10"));
    let used = verify(&app, "sk_used", json!({"operation": "search"})).await;
    used.assert_error(402, "credits_exhausted");
    assert_eq!(
        used.body["error"]["details"]["unkey_code"],
        "USAGE_EXCEEDED"
    );
    assert_eq!(app.count("accounts").await, 0);
}

#[tokio::test]
async fn a_slow_unkey_is_503_auth_unavailable_fail_closed() {
    let (app, unkey) = setup(&[("UNKEY_RETRIES", "0")]).await;
    unkey.valid("sk_1", "key_1", json!({"plan": "pro"}));
    unkey.delay_answers(std::time::Duration::from_millis(800));
    let slow = verify(&app, "sk_1", json!({"operation": "search"})).await;
    slow.assert_error(503, "auth_unavailable");
    assert_eq!(app.count("accounts").await, 0);
}

#[tokio::test]
async fn unkey_5xx_is_retried_once_then_503() {
    let (app, unkey) = setup(&[]).await;
    unkey.valid("sk_1", "key_1", json!({"plan": "pro"}));
    unkey.fail_next(1, 500);
    verify(&app, "sk_1", json!({"operation": "search"}))
        .await
        .assert_status(200);
    assert_eq!(
        unkey.received_on("/v2/keys.verifyKey").len(),
        2,
        "one failure, one retry"
    );
    unkey.fail_next(2, 503);
    verify(&app, "sk_1", json!({"operation": "search"}))
        .await
        .assert_error(503, "auth_unavailable");
    unkey.fail_next(2, 429);
    verify(&app, "sk_1", json!({"operation": "search"}))
        .await
        .assert_error(503, "auth_unavailable");
    assert_eq!(app.count("debits").await, 1);
}

#[tokio::test]
async fn a_wrong_root_key_is_503_and_not_retried() {
    let unkey = UnkeyDouble::start().await;
    let app = spawn_app_with(&[
        ("UNKEY_BASE_URL", unkey.base_url.as_str()),
        ("UNKEY_ROOT_KEY", "not-the-root-key"),
    ])
    .await;
    unkey.valid("sk_1", "key_1", json!({"plan": "pro"}));
    verify(&app, "sk_1", json!({"operation": "search"}))
        .await
        .assert_error(503, "auth_unavailable");
    assert_eq!(unkey.received().len(), 1);
}

#[tokio::test]
async fn unreachable_unkey_is_503() {
    let app = spawn_app_with(&[
        ("UNKEY_BASE_URL", "http://127.0.0.1:9"),
        ("UNKEY_ROOT_KEY", ROOT_KEY),
        ("UNKEY_RETRIES", "0"),
    ])
    .await;
    verify(&app, "sk_1", json!({"operation": "search"}))
        .await
        .assert_error(503, "auth_unavailable");
}

#[tokio::test]
async fn a_key_without_a_plan_is_402_unless_a_default_plan_is_set() {
    let (app, unkey) = setup(&[]).await;
    unkey.valid("sk_1", "key_1", json!({}));
    unkey.valid("sk_2", "key_2", json!({"plan": "platinum"}));
    let none = verify(&app, "sk_1", json!({"operation": "search"})).await;
    none.assert_error(402, "no_plan");
    assert!(none.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no plan"));
    verify(&app, "sk_2", json!({"operation": "search"}))
        .await
        .assert_error(402, "no_plan");
    assert_eq!(app.count("accounts").await, 0);

    let (app, unkey) = setup(&[("LEDGER_DEFAULT_PLAN", "pro")]).await;
    unkey.valid(
        "sk_1",
        "key_1",
        json!({"billing_cycle_start": "2026-01-15T00:00:00Z"}),
    );
    verify(&app, "sk_1", json!({"operation": "search"}))
        .await
        .assert_status(200);
    let account = app.get("/v1/accounts/key_1").send().await;
    assert_eq!(account.body["plan"], "pro");
    assert_eq!(account.body["billing_anchor"], "2026-01-15T00:00:00Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_calls_for_a_new_key_make_one_account() {
    let (app, unkey) = setup(&[]).await;
    unkey.valid("sk_new", "key_new", json!({"plan": "pro"}));
    let calls = (0..20).map(|_| verify(&app, "sk_new", json!({"operation": "search"})));
    let responses = futures::future::join_all(calls).await;
    assert!(
        responses.iter().all(|r| r.status == 200),
        "{:?}",
        responses.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    assert_eq!(app.count("accounts").await, 1);
    assert_eq!(app.count("grants").await, 1);
    assert_eq!(app.available("key_new", "credits").await, Some(80));
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn keys_of_a_customer_draw_from_its_shared_account_and_keep_their_own_usage() {
    let (app, unkey) = setup(&[]).await;
    app.put("/v1/accounts/org_1_pool")
        .json(json!({"plan": "pro", "external_id": "org_1", "shared": true}))
        .send()
        .await
        .assert_status(201);
    for (key, key_id) in [("sk_a", "key_a"), ("sk_b", "key_b")] {
        unkey.add_key(
            key,
            Key::Valid {
                key_id: key_id.into(),
                meta: json!({}),
                external_id: Some("org_1".into()),
            },
        );
    }
    let a = verify(&app, "sk_a", json!({"cost": 30})).await;
    a.assert_status(200);
    assert_eq!(a.body["account_key_id"], "org_1_pool");
    let b = verify(&app, "sk_b", json!({"cost": 20})).await;
    assert_eq!(b.header("x-credits-remaining"), Some("50"));
    assert_eq!(app.count("accounts").await, 1, "no per-key accounts");

    let usage = app
        .get("/v1/accounts/org_1_pool/usage?group_by=key")
        .token(SERVICE)
        .send()
        .await;
    usage.assert_status(200);
    let mut per_key: Vec<(String, i64)> = usage.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key_id"].as_str().unwrap().to_owned(),
                r["credits"].as_i64().unwrap(),
            )
        })
        .collect();
    per_key.sort();
    assert_eq!(per_key, vec![("key_a".into(), 30), ("key_b".into(), 20)]);

    // Each key sees the shared balance, and only its own usage.
    let mine = app.get("/v1/me/usage").token("sk_b").send().await;
    mine.assert_status(200);
    let credits: i64 = mine.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["credits"].as_i64().unwrap())
        .sum();
    assert_eq!(credits, 20);
    let balance = app.get("/v1/me/balance").token("sk_a").send().await;
    assert_eq!(balance.body["key_id"], "org_1_pool");
    assert_eq!(balance.body["pools"][0]["available"], 50);
    // And only its own entries.
    for (key, key_id, amount) in [("sk_a", "key_a", -30), ("sk_b", "key_b", -20)] {
        let entries = app.get("/v1/me/entries").token(key).send().await;
        entries.assert_status(200);
        let data = entries.body["data"].as_array().unwrap();
        assert_eq!(data.len(), 1, "{key}: {}", entries.body);
        assert_eq!(data[0]["source_key_id"], key_id);
        assert_eq!(data[0]["amount"], amount);
    }
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn a_shared_account_needs_an_external_id_and_is_one_per_customer() {
    let (app, _unkey) = setup(&[]).await;
    let missing = app
        .put("/v1/accounts/pool_1")
        .json(json!({"plan": "pro", "shared": true}))
        .send()
        .await;
    missing.assert_error(422, "invalid_request");
    assert_eq!(missing.body["error"]["details"]["field"], "external_id");
    app.put("/v1/accounts/pool_1")
        .json(json!({"plan": "pro", "shared": true, "external_id": "org_1"}))
        .send()
        .await
        .assert_status(201);
    app.put("/v1/accounts/pool_2")
        .json(json!({"plan": "pro", "shared": true, "external_id": "org_1"}))
        .send()
        .await
        .assert_error(409, "shared_account_exists");
}

#[tokio::test]
async fn me_routes_show_only_the_keys_own_data() {
    let (app, unkey) = setup(&[]).await;
    unkey.valid("sk_a", "key_a", json!({"plan": "pro"}));
    unkey.valid("sk_b", "key_b", json!({"plan": "pro"}));
    verify(&app, "sk_a", json!({"operation": "image.generate"}))
        .await
        .assert_status(200);
    verify(&app, "sk_b", json!({"operation": "search", "quantity": 3}))
        .await
        .assert_status(200);

    let balance = app.get("/v1/me/balance").token("sk_a").send().await;
    balance.assert_status(200);
    assert_eq!(balance.body["key_id"], "key_a");
    assert_eq!(balance.body["pools"][0]["available"], 90);
    let entries = app
        .get("/v1/me/entries?limit=10")
        .token("sk_b")
        .send()
        .await;
    entries.assert_status(200);
    let data = entries.body["data"].as_array().unwrap();
    assert!(data.iter().all(|e| e["key_id"] == "key_b"), "{data:?}");
    assert_eq!(data[0]["amount"], -3);
    let usage = app
        .get("/v1/me/usage?interval=hour&group_by=pool")
        .token("sk_b")
        .send()
        .await;
    usage.assert_status(200);
    assert_eq!(usage.body["data"][0]["credits"], 3);
    assert_eq!(usage.body["data"][0]["count"], 1);

    app.get("/v1/me/balance")
        .token("sk_unknown")
        .send()
        .await
        .assert_error(401, "invalid_key");
    app.get("/v1/me/balance")
        .no_token()
        .send()
        .await
        .assert_error(401, "unauthorized");
    // A ledger token is not a customer key, and is not passed on to Unkey.
    let calls = unkey.received().len();
    app.get("/v1/me/balance")
        .token(SERVICE)
        .send()
        .await
        .assert_error(401, "unauthorized");
    assert_eq!(unkey.received().len(), calls);
}

#[tokio::test]
async fn keys_of_one_shared_account_do_not_replay_each_others_debits() {
    let (app, unkey) = setup(&[]).await;
    app.put("/v1/accounts/pool_1")
        .json(json!({"plan": "pro", "external_id": "org_1", "shared": true}))
        .send()
        .await
        .assert_status(201);
    for (key, key_id) in [("sk_a", "key_a"), ("sk_b", "key_b")] {
        unkey.add_key(
            key,
            Key::Valid {
                key_id: key_id.into(),
                meta: json!({}),
                external_id: Some("org_1".into()),
            },
        );
    }
    let send = |key: &'static str| {
        app.post("/v1/verify")
            .token(SERVICE)
            .idempotency_key("job-7")
            .json(json!({"key": key, "operation": "search"}))
            .send()
    };
    let a = send("sk_a").await;
    a.assert_status(200);
    send("sk_b")
        .await
        .assert_error(409, "idempotency_key_reused");
    let again = send("sk_a").await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body["debit"], a.body["debit"]);
}

#[tokio::test]
async fn a_slow_unkey_answers_503_once_the_budget_is_spent() {
    let (app, unkey) = setup(&[
        ("UNKEY_TIMEOUT_MS", "400"),
        ("UNKEY_RETRIES", "3"),
        ("UNKEY_BUDGET_MS", "600"),
    ])
    .await;
    unkey.valid("sk_1", "key_1", json!({"plan": "pro"}));
    unkey.delay_answers(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    verify(&app, "sk_1", json!({"operation": "search"}))
        .await
        .assert_error(503, "auth_unavailable");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn dashboards_within_the_cache_window_verify_once() {
    let (app, unkey) = setup(&[("LEDGER_KEY_CACHE_SECS", "30")]).await;
    unkey.valid("sk_a", "key_a", json!({"plan": "pro"}));
    verify(&app, "sk_a", json!({"operation": "search"}))
        .await
        .assert_status(200);
    for _ in 0..3 {
        app.get("/v1/me/balance")
            .token("sk_a")
            .send()
            .await
            .assert_status(200);
    }
    // One verification for /v1/verify (never cached), one for the three dashboard reads.
    assert_eq!(unkey.received_on("/v2/keys.verifyKey").len(), 2);
    // The debits of /v1/verify are not cached: each one verifies.
    verify(&app, "sk_a", json!({"operation": "search"}))
        .await
        .assert_status(200);
    assert_eq!(unkey.received_on("/v2/keys.verifyKey").len(), 3);
}

#[tokio::test]
async fn without_a_root_key_the_unkey_routes_are_503_naming_the_setting() {
    let app = spawn_app().await;
    let verify = app
        .post("/v1/verify")
        .token(SERVICE)
        .json(json!({"key": "sk_1", "operation": "search"}))
        .send()
        .await;
    verify.assert_error(503, "auth_unavailable");
    assert!(verify.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("UNKEY_ROOT_KEY"));
    app.get("/v1/me/balance")
        .token("sk_1")
        .send()
        .await
        .assert_error(503, "auth_unavailable");
}

#[tokio::test]
async fn verify_validates_its_body_before_calling_unkey() {
    let (app, unkey) = setup(&[]).await;
    for body in [
        json!({"key": "", "operation": "search"}),
        json!({"key": "k".repeat(513), "operation": "search"}),
        json!({"key": "sk", "operation": "search", "quantity": 0}),
        json!({"key": "sk"}),
        json!({"key": "sk", "operation": "search", "extra": 1}),
        // A ledger token is never passed on to Unkey.
        json!({"key": ADMIN, "operation": "search"}),
        json!({"key": SERVICE, "operation": "search"}),
    ] {
        app.post("/v1/verify")
            .token(SERVICE)
            .json(body)
            .send()
            .await
            .assert_error(422, "invalid_request");
    }
    assert!(unkey.received().is_empty());
    app.post("/v1/verify")
        .token("nope")
        .json(json!({"key": "sk", "operation": "search"}))
        .send()
        .await
        .assert_error(401, "unauthorized");
}

/// The value of one Prometheus sample, e.g. `credits_debited_total{pool="p"}`; 0 when absent.
async fn sample(app: &TestApp, series: &str) -> f64 {
    let text = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_every_way_credits_are_debited() {
    // The metrics are the process's: a pool no other test uses keeps this test's counts apart.
    let (app, unkey) = setup(&[]).await;
    app.put_plan(
        "metered",
        json!({"name": "Metered", "interval": "month",
               "pools": {"metrics_probe": {"allowance": 1000}},
               "operations": {"search": {"pool": "metrics_probe", "cost": 1}}}),
    )
    .await;
    app.create_account("key_m", "metered").await;
    unkey.valid("sk_live_m", "key_m", json!({"plan": "metered"}));
    let credits = r#"credits_debited_total{pool="metrics_probe"}"#;
    let accepted = r#"debits_total{pool="metrics_probe",outcome="accepted"}"#;
    let refused = r#"debits_total{pool="metrics_probe",outcome="refused"}"#;

    // A debit, a dry run (not counted), a reservation committed in part, a verification.
    app.debit("key_m", json!({"operation": "search", "quantity": 100}))
        .await
        .assert_status(201);
    app.debit(
        "key_m",
        json!({"operation": "search", "quantity": 7, "dry_run": true}),
    )
    .await
    .assert_status(200);
    let held = app
        .post("/v1/accounts/key_m/reservations")
        .token(SERVICE)
        .json(json!({"operation": "search", "quantity": 50}))
        .send()
        .await;
    held.assert_status(201);
    app.post(&format!(
        "/v1/reservations/{}/commit",
        held.body["id"].as_str().unwrap()
    ))
    .token(SERVICE)
    .json(json!({"amount": 30}))
    .send()
    .await
    .assert_status(200);
    verify(
        &app,
        "sk_live_m",
        json!({"operation": "search", "quantity": 100}),
    )
    .await
    .assert_status(200);
    assert_eq!(sample(&app, credits).await, 230.0);
    assert_eq!(sample(&app, accepted).await, 3.0);

    // A refusal is counted, a refused dry run is not (it refuses nothing).
    app.debit(
        "key_m",
        json!({"operation": "search", "quantity": 5000, "dry_run": true}),
    )
    .await
    .assert_status(402);
    assert_eq!(sample(&app, refused).await, 0.0);
    verify(
        &app,
        "sk_live_m",
        json!({"operation": "search", "quantity": 5000}),
    )
    .await
    .assert_status(402);
    assert_eq!(sample(&app, refused).await, 1.0);
    assert_eq!(sample(&app, credits).await, 230.0);
}

#[tokio::test]
async fn a_registered_member_key_verifies_against_its_shared_account_within_its_cap() {
    let (app, unkey) = setup(&[]).await;
    app.create_account("org_pool", "pro").await;
    app.put("/v1/accounts/org_pool/members/key_m")
        .json(json!({"caps": {"credits": 15}}))
        .send()
        .await
        .assert_status(201);
    // No Unkey identity: the registration alone routes the key.
    unkey.valid("sk_m", "key_m", json!({"plan": "pro"}));
    let first = verify(&app, "sk_m", json!({"operation": "image.generate"})).await;
    first.assert_status(200);
    assert_eq!(first.body["account_key_id"], "org_pool");
    assert_eq!(
        app.count("accounts").await,
        1,
        "no account provisioned for the member"
    );
    let capped = verify(&app, "sk_m", json!({"operation": "image.generate"})).await;
    capped.assert_error(402, "credits_exhausted");
    assert_eq!(capped.body["error"]["details"]["reason"], "key_cap");
    assert_eq!(capped.body["error"]["details"]["key_used"], 10);
    verify(&app, "sk_m", json!({"operation": "search", "quantity": 5}))
        .await
        .assert_status(200);

    // Another debit on the account is not the member's.
    app.debit("org_pool", json!({"cost": 7}))
        .await
        .assert_status(201);
    let entries = app.get("/v1/me/entries").token("sk_m").send().await;
    entries.assert_status(200);
    let amounts: Vec<i64> = entries.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(
        amounts,
        [-5, -10],
        "only the member's own entries, newest first"
    );
    let balance = app.get("/v1/me/balance").token("sk_m").send().await;
    assert_eq!(balance.body["key_id"], "org_pool");
    assert_eq!(balance.body["pools"][0]["available"], 78);
    app.assert_audit_clean().await;
}
