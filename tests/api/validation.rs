//! Bad input gets a clear 4xx naming the problem and changes nothing.

use serde_json::json;

use reqwest::Method;

use crate::helpers::{spawn_app, TestApp, ADMIN, SERVICE};

async fn ready(app: &TestApp) {
    app.create_plan("pro", Some(1000)).await;
    app.create_account("key_1", "pro").await;
}

#[tokio::test]
async fn bad_debit_bodies_are_refused_naming_the_field_and_change_nothing() {
    let app = spawn_app().await;
    ready(&app).await;
    let before = app.snapshot().await;
    let cases = [
        (json!({"operation": "search", "quantity": 0}), "quantity"),
        (json!({"operation": "search", "quantity": -3}), "quantity"),
        (json!({"operation": "search", "quantity": 1.5}), "quantity"),
        (json!({"operation": "search", "quantity": "2"}), "quantity"),
        (
            json!({"operation": "search", "quantity": 1_000_000_000_000_000_001_i64}),
            "quantity",
        ),
        (json!({"cost": 0}), "cost"),
        (json!({"cost": -1}), "cost"),
        (json!({"cost": i64::MAX}), "cost"),
        (json!({"operation": "search", "quantty": 2}), "quantty"),
        (json!({"operation": 7}), "operation"),
        (json!({"quantity": 2}), "operation"),
        (
            json!({"operation": "search", "metadata": [1, 2]}),
            "metadata",
        ),
        (json!({"operation": "search", "dry_run": "yes"}), "dry_run"),
        (json!({"operation": "x".repeat(200)}), "operation"),
        (
            json!({"operation": "image.generate", "quantity": 200_000_000_000_000_i64}),
            "quantity",
        ),
    ];
    for (body, field) in cases {
        let response = app.debit("key_1", body.clone()).await;
        response.assert_error(422, response.error_code());
        assert_eq!(
            response.body["error"]["details"]["field"], field,
            "body {body} → {}",
            response.body
        );
        assert!(
            response.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "the message names {field}: {}",
            response.body
        );
    }
    // A number too large for any integer type.
    app.debit("key_1", json!({"operation": "search", "quantity": 1e300}))
        .await
        .assert_error(422, "invalid_request");
    app.post("/v1/accounts/key_1/debits")
        .raw_body(r#"{"operation": "search", "quantity": 99999999999999999999999}"#)
        .send()
        .await
        .assert_status(422);
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn malformed_json_is_400_invalid_json() {
    let app = spawn_app().await;
    ready(&app).await;
    let before = app.snapshot().await;
    for body in [
        "{",
        "not json",
        "",
        "[1,",
        "{\"operation\": \"search\"} trailing",
    ] {
        let response = app
            .post("/v1/accounts/key_1/debits")
            .token(SERVICE)
            .raw_body(body)
            .send()
            .await;
        response.assert_error(400, "invalid_json");
    }
    // Valid JSON of the wrong shape is a 422.
    app.post("/v1/accounts/key_1/debits")
        .raw_body("[1, 2]")
        .send()
        .await
        .assert_error(422, "invalid_request");
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn a_body_over_64_kib_is_413_in_our_error_shape() {
    let app = spawn_app().await;
    ready(&app).await;
    let before = app.snapshot().await;
    let big = json!({"operation": "search", "metadata": {"blob": "x".repeat(70 * 1024)}});
    app.debit("key_1", big)
        .await
        .assert_error(413, "payload_too_large");
    let plan = json!({"name": "x".repeat(70 * 1024), "interval": "month", "pools": {}});
    app.put("/v1/plans/big")
        .json(plan)
        .send()
        .await
        .assert_error(413, "payload_too_large");
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn over_long_and_odd_ids_are_4xx() {
    let app = spawn_app().await;
    ready(&app).await;
    let long = "k".repeat(129);
    app.get(&format!("/v1/accounts/{long}"))
        .send()
        .await
        .assert_error(422, "invalid_request");
    app.debit(&long, json!({"operation": "search"}))
        .await
        .assert_error(422, "invalid_request");
    app.put(&format!("/v1/accounts/{long}"))
        .json(json!({"plan": "pro"}))
        .send()
        .await
        .assert_error(422, "invalid_request");
    app.put(&format!("/v1/plans/{}", "p".repeat(65)))
        .json(json!({"name": "P", "interval": "month", "pools": {"credits": {"allowance": 1}}}))
        .send()
        .await
        .assert_error(422, "invalid_request");
    app.get("/v1/accounts/has%20space")
        .send()
        .await
        .assert_error(422, "invalid_request");
    app.put("/v1/accounts/key_2")
        .json(json!({"plan": "pro", "external_id": "o".repeat(256)}))
        .send()
        .await
        .assert_error(422, "invalid_request");
    assert_eq!(app.count("accounts").await, 1);
}

#[tokio::test]
async fn bad_account_bodies_name_the_field() {
    let app = spawn_app().await;
    ready(&app).await;
    let cases = [
        (
            json!({"plan": "pro", "billing_anchor": "yesterday"}),
            "billing_anchor",
        ),
        (json!({"plan": "pro", "metadata": "text"}), "metadata"),
        (json!({"plan": "pro", "colour": "red"}), "colour"),
        (json!({"billing_anchor": "2026-11-01T00:00:00Z"}), "plan"),
        (json!({"plan": 5}), "plan"),
    ];
    for (body, field) in cases {
        let response = app.put("/v1/accounts/key_9").json(body).send().await;
        response.assert_status(422);
        assert_eq!(
            response.body["error"]["details"]["field"], field,
            "{}",
            response.body
        );
    }
    assert_eq!(app.count("accounts").await, 1);
}

#[tokio::test]
async fn bad_query_parameters_are_4xx() {
    let app = spawn_app().await;
    ready(&app).await;
    app.get("/v1/accounts/key_1/entries?limit=0")
        .send()
        .await
        .assert_error(422, "invalid_request");
    app.get("/v1/accounts/key_1/entries?limit=501")
        .send()
        .await
        .assert_error(422, "invalid_request");
    app.get("/v1/accounts/key_1/entries?limit=abc")
        .send()
        .await
        .assert_error(400, "invalid_query");
    app.get("/v1/accounts/key_1/entries?cursor=-4")
        .send()
        .await
        .assert_error(422, "invalid_request");
    app.get("/v1/accounts/key_1/entries?colour=red")
        .send()
        .await
        .assert_error(400, "invalid_query");
    app.get("/v1/plans/pro?version=x")
        .send()
        .await
        .assert_error(400, "invalid_query");
}

#[tokio::test]
async fn a_nul_character_anywhere_is_422_naming_the_field_and_changes_nothing() {
    let app = spawn_app().await;
    ready(&app).await;
    let before = app.snapshot().await;
    // (method, path, body, field); plans name their own 422 code.
    let cases = [
        (
            Method::POST,
            "/v1/accounts/key_1/debits",
            r#"{"operation":"search","metadata":{"a":"x\u0000y"}}"#,
            "metadata.a",
        ),
        (
            Method::POST,
            "/v1/accounts/key_1/debits",
            r#"{"operation":"search","metadata":{"a\u0000b":"x"}}"#,
            "metadata.a\u{0}b",
        ),
        (
            Method::PUT,
            "/v1/plans/nul",
            r#"{"name":"Pro\u0000","interval":"month","pools":{}}"#,
            "name",
        ),
        (
            Method::POST,
            "/v1/accounts/key_1/adjustments",
            r#"{"op":"increment","amount":5,"reason":"goodwill \u0000"}"#,
            "reason",
        ),
        (
            Method::POST,
            "/v1/webhook-endpoints",
            r#"{"url":"http://127.0.0.1:9/hook","description":"\u0000"}"#,
            "description",
        ),
    ];
    for (method, path, body, field) in cases {
        let response = app
            .call(method, path)
            .token(ADMIN)
            .raw_body(body)
            .send()
            .await;
        let code = if path.starts_with("/v1/plans") {
            "invalid_plan"
        } else {
            "invalid_request"
        };
        response.assert_error(422, code);
        assert_eq!(
            response.body["error"]["details"]["field"], field,
            "{path} {body}: {}",
            response.body
        );
        assert!(
            response.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("NUL"),
            "{}",
            response.body
        );
    }
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn a_key_given_twice_is_422_naming_it() {
    let app = spawn_app().await;
    ready(&app).await;
    let before = app.snapshot().await;
    for (body, field) in [
        (r#"{"operation":"search","operation":"other"}"#, "operation"),
        (
            r#"{"operation":"search","metadata":{"a":1,"b":2,"a":3}}"#,
            "metadata.a",
        ),
    ] {
        let response = app
            .post("/v1/accounts/key_1/debits")
            .raw_body(body)
            .send()
            .await;
        response.assert_error(422, "invalid_request");
        assert_eq!(response.body["error"]["details"]["field"], field);
    }
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn an_array_is_not_an_object() {
    let app = spawn_app().await;
    let response = app
        .put("/v1/plans/arr")
        .token(ADMIN)
        .json(json!({"name": "Arr", "interval": "month", "pools": {"credits": [null, null]}}))
        .send()
        .await;
    response.assert_error(422, "invalid_plan");
    assert_eq!(response.body["error"]["details"]["field"], "pools.credits");
    app.get("/v1/plans/arr")
        .token(ADMIN)
        .send()
        .await
        .assert_error(404, "plan_not_found");
}

#[tokio::test]
async fn a_body_must_be_sent_as_json() {
    let app = spawn_app().await;
    ready(&app).await;
    let before = app.snapshot().await;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
    ] {
        app.post("/v1/accounts/key_1/debits")
            .header("content-type", content_type)
            .raw_body(r#"{"operation":"search"}"#)
            .send()
            .await
            .assert_error(415, "unsupported_media_type");
    }
    assert_eq!(app.snapshot().await, before);
    // Parameters and +json types are JSON.
    for content_type in [
        "application/json; charset=utf-8",
        "application/merge-patch+json",
    ] {
        app.post("/v1/accounts/key_1/debits")
            .header("content-type", content_type)
            .raw_body(r#"{"operation":"search"}"#)
            .send()
            .await
            .assert_status(201);
    }
}

#[tokio::test]
async fn a_whole_float_is_an_integer() {
    let app = spawn_app().await;
    ready(&app).await;
    let response = app
        .debit("key_1", json!({"operation": "search", "quantity": 3.0}))
        .await;
    response.assert_status(201);
    assert_eq!(response.body["quantity"], 3);
    app.debit("key_1", json!({"operation": "search", "quantity": 3.5}))
        .await
        .assert_error(422, "invalid_request");
}

#[tokio::test]
async fn metadata_numbers_at_the_ends_of_the_float_range_read_back_unchanged() {
    // PostgreSQL keeps a JSON number as an exact decimal: 1.7976931348623157e308 comes back as
    // 309 digits, which must parse back to the same float (schemathesis found a 500 here).
    let app = spawn_app().await;
    ready(&app).await;
    let metadata = json!({"max": f64::MAX, "lowest": f64::MIN, "tiny": 5e-324,
                          "big": 1e20, "nested": [{"x": -9.240820642616882e248}]});
    let grant = app
        .post("/v1/accounts/key_1/grants")
        .idempotency_key("float-ends")
        .json(json!({"kind": "pack", "amount": 5, "metadata": metadata}))
        .send()
        .await;
    grant.assert_status(201);
    assert_eq!(grant.body["metadata"], metadata);
    let grants = app.get("/v1/accounts/key_1/grants").send().await;
    grants.assert_status(200);
    assert_eq!(grants.body["data"][0]["metadata"], metadata);
    app.get("/v1/accounts/key_1/balance")
        .send()
        .await
        .assert_status(200);
    app.debit("key_1", json!({"cost": 1}))
        .await
        .assert_status(201);
}

/// Words of serde's own messages that a caller should never have to read.
const JARGON: [&str; 12] = [
    "invalid type",
    "invalid value",
    "invalid length",
    "expected",
    "struct ",
    "i64",
    "i32",
    "premature end",
    "variant",
    "missing field",
    "borrowed",
    "Failed to deserialize",
];

/// A refused request: method, path, body (none for a GET), status, field, message.
type Refusal = (
    Method,
    &'static str,
    Option<serde_json::Value>,
    u16,
    &'static str,
    &'static str,
);

#[tokio::test]
async fn refused_bodies_and_queries_are_explained_in_plain_words() {
    let app = spawn_app().await;
    ready(&app).await;
    let before = app.snapshot().await;
    let cases: Vec<Refusal> = vec![
        (
            Method::POST,
            "/v1/accounts/key_1/debits",
            Some(json!({"operation": "search", "quantity": 1.5})),
            422,
            "quantity",
            "quantity must be a whole number, got 1.5",
        ),
        (
            Method::POST,
            "/v1/accounts/key_1/debits",
            Some(json!({"operation": "search", "dry_run": "yes"})),
            422,
            "dry_run",
            "dry_run must be true or false, got 'yes'",
        ),
        (
            Method::POST,
            "/v1/accounts/key_1/debits",
            Some(json!({"operation": 7})),
            422,
            "operation",
            "operation must be a string, got 7",
        ),
        (
            Method::POST,
            "/v1/accounts/key_1/debits",
            Some(json!([])),
            422,
            ".",
            "the body must be a JSON object, got an array",
        ),
        (
            Method::POST,
            "/v1/accounts/key_1/grants",
            Some(json!({"kind": "pack", "amount": 5, "priority": 3_000_000_000_i64})),
            422,
            "priority",
            "priority must be a whole number from -2147483648 to 2147483647, got 3000000000",
        ),
        (
            Method::POST,
            "/v1/accounts/key_1/grants",
            Some(json!({"kind": "pack", "amount": 5, "expires_at": "2027-01-01"})),
            422,
            "expires_at",
            "expires_at must be an RFC 3339 timestamp such as 2026-12-01T00:00:00Z, got '2027-01-01'",
        ),
        (
            Method::PUT,
            "/v1/accounts/key_2",
            Some(json!({"plan": "pro", "billing_anchor": "2026-12-01"})),
            422,
            "billing_anchor",
            "billing_anchor must be an RFC 3339 timestamp such as 2026-12-01T00:00:00Z, got '2026-12-01'",
        ),
        (
            Method::PUT,
            "/v1/accounts/key_2",
            Some(json!({"billing_anchor": "2026-12-01T00:00:00Z"})),
            422,
            "plan",
            "plan is required",
        ),
        (
            Method::POST,
            "/v1/accounts/key_1/plan",
            Some(json!({"plan": "pro", "proration": "sometimes"})),
            422,
            "proration",
            "proration must be 'none', 'difference' or 'reset', got 'sometimes'",
        ),
        (
            Method::POST,
            "/v1/accounts/key_1/adjustments",
            Some(json!({"op": "multiply", "amount": 2, "reason": "x"})),
            422,
            "op",
            "op must be 'set', 'increment' or 'decrement', got 'multiply'",
        ),
        (
            Method::POST,
            "/v1/accounts/key_1/adjustments",
            Some(json!({"op": "increment", "amount": 2})),
            422,
            "reason",
            "reason is required",
        ),
        (
            Method::PUT,
            "/v1/plans/p2",
            Some(json!({"name": "P", "interval": "month", "pools": {},
                        "operations": {"search": {"pool": "credits"}}})),
            422,
            "operations.search.cost",
            "operations.search.cost is required",
        ),
        (
            Method::PUT,
            "/v1/plans/p2",
            Some(json!({"name": "P", "interval": "monthly", "pools": {}})),
            422,
            "interval",
            "interval must be 'day', 'week', 'month' or 'year', got 'monthly'",
        ),
        (
            Method::POST,
            "/v1/accounts/key_1/debits",
            Some(json!({"operation": "search", "quantty": 2})),
            422,
            "quantty",
            "quantty is not a known field; known fields: operation, quantity, cost, pool, metadata, dry_run",
        ),
        (
            Method::GET,
            "/v1/accounts/key_1/usage?from=2026-11-01T00:00:00Z&to=2026-12-01",
            None,
            400,
            "to",
            "to must be an RFC 3339 timestamp such as 2026-12-01T00:00:00Z, got '2026-12-01'",
        ),
        (
            Method::GET,
            "/v1/accounts/key_1/usage?interval=weekly",
            None,
            400,
            "interval",
            "interval must be 'hour', 'day' or 'month', got 'weekly'",
        ),
        (
            Method::GET,
            "/v1/accounts/key_1/entries?limit=abc",
            None,
            400,
            "limit",
            "limit must be a whole number, got 'abc'",
        ),
        (
            Method::GET,
            "/v1/accounts/key_1/entries?limit=1&limit=2",
            None,
            400,
            "limit",
            "limit is given twice; give each parameter once",
        ),
        (
            Method::GET,
            "/v1/accounts/key_1/entries?colour=red",
            None,
            400,
            "colour",
            "colour is not a known parameter; known parameters: limit, cursor, kind, from, to",
        ),
        (
            Method::GET,
            "/v1/accounts/key_1/entries?cursor=a%00b",
            None,
            400,
            "cursor",
            "cursor contains a NUL character (%00)",
        ),
        (
            Method::GET,
            "/v1/plans/pro?version=99999999999",
            None,
            400,
            "version",
            "version must be a whole number from -2147483648 to 2147483647, got '99999999999'",
        ),
    ];
    for (method, path, body, status, field, message) in cases {
        let call = app.call(method.clone(), path).token(ADMIN);
        let call = match &body {
            Some(body) => call.json(body.clone()),
            None => call,
        };
        let response = call.send().await;
        let code = if status == 400 {
            "invalid_query"
        } else if path.starts_with("/v1/plans") {
            "invalid_plan"
        } else {
            "invalid_request"
        };
        response.assert_error(status, code);
        let error = &response.body["error"];
        assert_eq!(error["message"], message, "{method} {path} {body:?}");
        assert_eq!(error["details"]["field"], field, "{method} {path}");
        let reason = error["details"]["reason"].as_str().unwrap();
        assert!(message.ends_with(reason), "{message} / {reason}");
        for word in JARGON {
            assert!(!message.contains(word), "{word:?} in {message}");
        }
    }
    assert_eq!(app.snapshot().await, before);
}
