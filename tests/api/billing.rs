//! Selling packs through Stripe, against the Stripe double: Checkout Sessions, the signed
//! webhook that grants a paid session's pack exactly once, and Stripe's failure modes.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp, TestResponse, SERVICE};
use crate::stripe_double::{signature, StripeDouble, SECRET_KEY, WEBHOOK_SECRET};

async fn billing_app(stripe: &StripeDouble) -> TestApp {
    let app = spawn_app_with(&[
        ("STRIPE_SECRET_KEY", SECRET_KEY),
        ("STRIPE_API_BASE", &stripe.base_url),
        ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ])
    .await;
    app.put_plan(
        "pro",
        json!({"name": "Pro", "interval": "month",
               "pools": {"credits": {"allowance": 100}},
               "operations": {"search": {"cost": 1}},
               "packs": {"starter": {"credits": 5000, "expires_in_days": 365,
                                     "price": {"amount": 1900, "currency": "usd"},
                                     "stripe_price": "price_1Starter"},
                         "manual": {"credits": 10}}}),
    )
    .await;
    app.put("/v1/accounts/key_1")
        .json(json!({"plan": "pro", "metadata": {"stripe_customer_id": "cus_123"}}))
        .send()
        .await
        .assert_status(201);
    stripe.add_price("price_1Starter");
    app
}

async fn checkout(app: &TestApp, pack: &str, key: Option<&str>) -> TestResponse {
    let call = app
        .post("/v1/accounts/key_1/checkout-sessions")
        .token(SERVICE)
        .json(
            json!({"pack": pack, "success_url": "https://example.com/thanks",
                     "cancel_url": "https://example.com/pricing"}),
        );
    match key {
        Some(key) => call.idempotency_key(key),
        None => call,
    }
    .send()
    .await
}

async fn deliver(app: &TestApp, event: &Value, signature_header: Option<String>) -> TestResponse {
    let body = serde_json::to_vec(event).unwrap();
    let call = app.post("/v1/stripe/webhook").no_token().raw_body(body);
    match signature_header {
        Some(header) => call.header("Stripe-Signature", &header),
        None => call,
    }
    .send()
    .await
}

fn signed(app: &TestApp, event: &Value) -> Option<String> {
    let body = serde_json::to_vec(event).unwrap();
    Some(signature(
        &body,
        WEBHOOK_SECRET,
        app.clock.now().timestamp(),
    ))
}

async fn pack_grants(app: &TestApp) -> usize {
    let grants = app.get("/v1/accounts/key_1/grants").send().await;
    grants.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["kind"] == "pack")
        .count()
}

#[tokio::test]
async fn without_stripe_settings_the_billing_routes_answer_503_naming_the_setting() {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_account("key_1", "pro").await;
    let refused = checkout(&app, "starter", None).await;
    refused.assert_error(503, "billing_unavailable");
    assert_eq!(
        refused.body["error"]["details"]["setting"],
        "STRIPE_SECRET_KEY"
    );
    let refused = deliver(&app, &json!({"id": "evt_1"}), Some("t=1,v1=00".into())).await;
    refused.assert_error(503, "billing_unavailable");
    assert_eq!(
        refused.body["error"]["details"]["setting"],
        "STRIPE_WEBHOOK_SECRET"
    );
}

#[tokio::test]
async fn checkout_then_the_signed_webhook_grants_the_pack_exactly_once() {
    let stripe = StripeDouble::start().await;
    let app = billing_app(&stripe).await;
    let session = checkout(&app, "starter", Some("order-1")).await;
    session.assert_status(201);
    let id = session.body["id"].as_str().unwrap().to_owned();
    assert!(session.body["url"]
        .as_str()
        .unwrap()
        .starts_with("https://checkout.stripe.com/"));
    let sent = &stripe.received()[0];
    assert_eq!(sent.path, "/v1/checkout/sessions");
    assert_eq!(sent.form["mode"], "payment");
    assert_eq!(sent.form["line_items[0][price]"], "price_1Starter");
    assert_eq!(sent.form["line_items[0][quantity]"], "1");
    assert_eq!(sent.form["customer"], "cus_123");
    assert_eq!(sent.form["metadata[credit_ledger_key_id]"], "key_1");
    assert_eq!(sent.form["metadata[credit_ledger_pack]"], "starter");
    assert_eq!(
        sent.idempotency_key.as_deref(),
        Some("credit-ledger:checkout:key_1:order-1")
    );
    // A retry with the same Idempotency-Key gets the same session back from Stripe.
    let again = checkout(&app, "starter", Some("order-1")).await;
    assert_eq!(again.body["id"], id.as_str());
    // The same key for another request is the ledger's usual 409, not Stripe's error.
    let reused = app
        .post("/v1/accounts/key_1/checkout-sessions")
        .token(SERVICE)
        .idempotency_key("order-1")
        .json(
            json!({"pack": "starter", "success_url": "https://example.com/other",
                     "cancel_url": "https://example.com/pricing"}),
        )
        .send()
        .await;
    reused.assert_error(409, "idempotency_key_reused");
    assert_eq!(
        pack_grants(&app).await,
        0,
        "nothing is granted before payment"
    );

    let event = stripe.completed_event(&id, "evt_1");
    let first = deliver(&app, &event, signed(&app, &event)).await;
    first.assert_status(200);
    assert_eq!(first.body["grant"]["pack"], "starter");
    assert_eq!(first.body["grant"]["amount"], 5000);
    assert_eq!(
        first.body["grant"]["metadata"],
        json!({"stripe_checkout_session": id})
    );
    // Stripe delivers again (a retry, or another event for the same session): no second grant.
    let again = deliver(&app, &event, signed(&app, &event)).await;
    again.assert_status(200);
    assert_eq!(again.body["grant"]["id"], first.body["grant"]["id"]);
    let other_event = stripe.completed_event(&id, "evt_2");
    deliver(&app, &other_event, signed(&app, &other_event))
        .await
        .assert_status(200);
    assert_eq!(pack_grants(&app).await, 1);
    assert_eq!(app.available("key_1", "credits").await, Some(5100));
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn concurrent_deliveries_of_one_paid_session_grant_once() {
    let stripe = StripeDouble::start().await;
    let app = billing_app(&stripe).await;
    let session = checkout(&app, "starter", None).await;
    let id = session.body["id"].as_str().unwrap().to_owned();
    let deliveries = (0..8).map(|i| {
        let event = stripe.completed_event(&id, &format!("evt_{i}"));
        let header = signed(&app, &event);
        let app = &app;
        async move { deliver(app, &event, header).await.status }
    });
    let statuses = futures::future::join_all(deliveries).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(pack_grants(&app).await, 1);
    assert_eq!(app.available("key_1", "credits").await, Some(5100));
}

#[tokio::test]
async fn forged_stale_or_unsigned_events_grant_nothing_and_others_are_ignored() {
    let stripe = StripeDouble::start().await;
    let app = billing_app(&stripe).await;
    let session = checkout(&app, "starter", None).await;
    let id = session.body["id"].as_str().unwrap().to_owned();
    let event = stripe.completed_event(&id, "evt_1");
    let body = serde_json::to_vec(&event).unwrap();
    let now = app.clock.now().timestamp();
    for header in [
        None,
        Some(signature(&body, "whsec_forged", now)),
        Some(signature(&body, WEBHOOK_SECRET, now - 301)),
        Some(signature(b"{\"other\": true}", WEBHOOK_SECRET, now)),
        Some("t=abc,v1=zz".to_owned()),
    ] {
        deliver(&app, &event, header)
            .await
            .assert_error(400, "invalid_signature");
    }
    // Signed, but not a paid session of ours: acknowledged, nothing granted.
    let mut unpaid = event.clone();
    unpaid["data"]["object"]["payment_status"] = json!("unpaid");
    let mut foreign = event.clone();
    foreign["data"]["object"]["metadata"] = json!({});
    let mut other_type = event.clone();
    other_type["type"] = json!("customer.created");
    for ignored in [unpaid, foreign, other_type] {
        let answer = deliver(&app, &ignored, signed(&app, &ignored)).await;
        answer.assert_status(200);
        assert!(answer.body["ignored"].is_string(), "{}", answer.body);
    }
    assert_eq!(pack_grants(&app).await, 0);
}

#[tokio::test]
async fn checkout_refusals_name_the_problem_and_stripe_failures_are_retried() {
    let stripe = StripeDouble::start().await;
    let app = billing_app(&stripe).await;
    let unknown = checkout(&app, "huge", None).await;
    unknown.assert_error(422, "unknown_pack");
    let not_for_sale = checkout(&app, "manual", None).await;
    not_for_sale.assert_error(422, "invalid_request");
    assert_eq!(not_for_sale.body["error"]["details"]["field"], "pack");
    let bad_url = app
        .post("/v1/accounts/key_1/checkout-sessions")
        .token(SERVICE)
        .json(json!({"pack": "starter", "success_url": "/thanks",
                     "cancel_url": "https://example.com"}))
        .send()
        .await;
    assert_eq!(bad_url.body["error"]["details"]["field"], "success_url");
    app.post("/v1/accounts/nobody/checkout-sessions")
        .token(SERVICE)
        .json(
            json!({"pack": "starter", "success_url": "https://example.com/a",
                     "cancel_url": "https://example.com/b"}),
        )
        .send()
        .await
        .assert_error(404, "account_not_found");
    assert!(stripe.received().is_empty(), "no refusal reached Stripe");

    // Stripe fails twice, then answers: one session, the retries carrying one Idempotency-Key.
    stripe.fail_next(2);
    let session = checkout(&app, "starter", None).await;
    session.assert_status(201);
    let keys: Vec<_> = stripe
        .received()
        .iter()
        .map(|r| r.idempotency_key.clone().unwrap())
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    // Stripe keeps failing: 503, retry later.
    stripe.fail_next(3);
    checkout(&app, "starter", None)
        .await
        .assert_error(503, "billing_unavailable");

    // Stripe refuses (a price it does not know): 502 with Stripe's own words.
    app.put_plan(
        "pro",
        json!({"name": "Pro", "interval": "month", "pools": {"credits": {"allowance": 100}},
               "packs": {"starter": {"credits": 5000, "stripe_price": "price_1Gone"}}}),
    )
    .await;
    let refused = checkout(&app, "starter", None).await;
    refused.assert_error(502, "stripe_error");
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("No such price: 'price_1Gone'"));
    assert_eq!(
        refused.body["error"]["details"]["stripe_error"]["code"],
        "resource_missing"
    );
}

async fn overage_app(stripe: &StripeDouble, customer: Option<&str>) -> TestApp {
    let app = spawn_app_with(&[
        ("STRIPE_SECRET_KEY", SECRET_KEY),
        ("STRIPE_API_BASE", &stripe.base_url),
    ])
    .await;
    app.put_plan(
        "metered",
        json!({"name": "Metered", "interval": "month",
               "pools": {"credits": {"allowance": 100, "overage_limit": 1000}}}),
    )
    .await;
    let metadata = match customer {
        Some(customer) => json!({"stripe_customer_id": customer}),
        None => json!({}),
    };
    app.put("/v1/accounts/key_1")
        .json(json!({"plan": "metered", "metadata": metadata}))
        .send()
        .await
        .assert_status(201);
    app
}

#[tokio::test]
async fn overage_is_reported_as_meter_events_once_with_retries_and_refunds_correct_it() {
    let stripe = StripeDouble::start().await;
    let app = overage_app(&stripe, Some("cus_123")).await;
    let meter = app.meter.as_ref().unwrap();
    // 150 credits on 100 of allowance: 50 of overage. Then 30 more, all overage.
    let debit = app.debit("key_1", json!({"cost": 150})).await;
    debit.assert_status(201);
    assert_eq!(debit.body["overage"], 50);
    app.debit("key_1", json!({"cost": 30}))
        .await
        .assert_status(201);
    assert_eq!(app.count("stripe_meter_events").await, 2);

    // Stripe fails (each call and its two quick retries): both stay pending, due again later.
    stripe.fail_next(6);
    assert_eq!(meter.report_due(10).await.unwrap(), 2);
    assert!(stripe.meter_events().is_empty());
    assert_eq!(
        meter.report_due(10).await.unwrap(),
        0,
        "not due before the delay"
    );
    app.clock.advance(chrono::Duration::seconds(31));
    assert_eq!(meter.report_due(10).await.unwrap(), 2);
    let events = stripe.meter_events();
    let values: Vec<&str> = events
        .iter()
        .map(|e| e["payload"]["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["50", "30"]);
    assert!(events
        .iter()
        .all(|e| e["event_name"] == "credit_overage"
            && e["payload"]["stripe_customer_id"] == "cus_123"));
    // One identifier per journal entry across every attempt; an Idempotency-Key per scheduled
    // attempt (shared by its quick retries), since Stripe replays a saved 5xx to a reused key.
    let received = stripe.received();
    let first: Vec<_> = received
        .iter()
        .filter(|r| r.form["payload[value]"] == "50")
        .collect();
    assert_eq!(
        first.len(),
        4,
        "3 failed tries, then the attempt that got through"
    );
    assert!(first
        .iter()
        .all(|r| r.form["identifier"] == first[0].form["identifier"]));
    assert_eq!(first[0].idempotency_key, first[2].idempotency_key);
    assert_ne!(first[0].idempotency_key, first[3].idempotency_key);

    // An answer lost after Stripe counted it: the row is sent again, and Stripe drops it.
    sqlx::query("UPDATE stripe_meter_events SET status = 'pending', sent_at = NULL")
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(meter.report_due(10).await.unwrap(), 2);
    assert_eq!(stripe.meter_events().len(), 2, "no event counted twice");
    let sent: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stripe_meter_events WHERE status = 'sent'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(sent, 2);

    // Refunding the first debit pays its overage back first: a negative meter event.
    let id = debit.body["id"].as_str().unwrap();
    app.post(&format!("/v1/debits/{id}/refunds"))
        .json(json!({"amount": 20, "reason": "failed job"}))
        .send()
        .await
        .assert_status(201);
    assert_eq!(meter.report_due(10).await.unwrap(), 1);
    let last = stripe.meter_events().pop().unwrap();
    assert_eq!(last["payload"]["value"], "-20");
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn overage_of_an_account_without_a_stripe_customer_is_not_reported() {
    let stripe = StripeDouble::start().await;
    let app = overage_app(&stripe, None).await;
    app.debit("key_1", json!({"cost": 150}))
        .await
        .assert_status(201);
    assert_eq!(app.count("stripe_meter_events").await, 0);
    assert_eq!(app.meter.as_ref().unwrap().report_due(10).await.unwrap(), 0);
    assert!(stripe.received().is_empty());
}

#[tokio::test]
async fn a_stripe_that_does_not_answer_in_time_is_a_503_and_a_meter_event_waits() {
    let stripe = StripeDouble::start().await;
    let app = spawn_app_with(&[
        ("STRIPE_SECRET_KEY", SECRET_KEY),
        ("STRIPE_API_BASE", &stripe.base_url),
        ("STRIPE_TIMEOUT_MS", "200"),
    ])
    .await;
    app.put_plan(
        "pro",
        json!({"name": "Pro", "interval": "month",
               "pools": {"credits": {"allowance": 100, "overage_limit": 100}},
               "packs": {"starter": {"credits": 50, "stripe_price": "price_1Starter"}}}),
    )
    .await;
    app.put("/v1/accounts/key_1")
        .json(json!({"plan": "pro", "metadata": {"stripe_customer_id": "cus_1"}}))
        .send()
        .await
        .assert_status(201);
    stripe.add_price("price_1Starter");
    stripe.delay_answers(std::time::Duration::from_secs(2));
    // Each attempt gives up after 200 ms (the double would answer, successfully, after 2 s).
    checkout(&app, "starter", None)
        .await
        .assert_error(503, "billing_unavailable");
    app.debit("key_1", json!({"cost": 120}))
        .await
        .assert_status(201);
    let meter = app.meter.as_ref().unwrap();
    assert_eq!(meter.report_due(10).await.unwrap(), 1);
    let status: String = sqlx::query_scalar("SELECT status FROM stripe_meter_events")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "pending", "a timeout is tried again later");
    assert!(stripe.meter_events().is_empty());
}

#[tokio::test]
async fn a_paid_session_grants_what_was_sold_even_if_the_catalogue_changed() {
    let stripe = StripeDouble::start().await;
    let app = billing_app(&stripe).await;
    let session = checkout(&app, "starter", None).await;
    let id = session.body["id"].as_str().unwrap().to_owned();
    // After the sale the pack is repriced, then dropped from the catalogue.
    app.put_plan(
        "pro",
        json!({"name": "Pro", "interval": "month", "pools": {"credits": {"allowance": 100}}}),
    )
    .await;
    let event = stripe.completed_event(&id, "evt_1");
    let answer = deliver(&app, &event, signed(&app, &event)).await;
    answer.assert_status(200);
    assert_eq!(answer.body["grant"]["amount"], 5000);
    assert_eq!(answer.body["grant"]["pack"], "starter");
    let effective: chrono::DateTime<chrono::Utc> = answer.body["grant"]["effective_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let expires: chrono::DateTime<chrono::Utc> = answer.body["grant"]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(expires - effective, chrono::Duration::days(365));
    assert_eq!(app.available("key_1", "credits").await, Some(5100));
}
