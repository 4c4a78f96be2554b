//! Auto top-up: a policy asks for a pack when a change leaves its pool below the threshold, in
//! the change's own transaction; one request in flight per account and pool, at most
//! `max_per_period` per period; a pack grant settles the request in flight.

use serde_json::{json, Value};
use sqlx::Connection;

use crate::helpers::{spawn_app, TestApp};

async fn app_with_policy(policy: Value) -> TestApp {
    let app = spawn_app().await;
    app.put_plan(
        "pro",
        json!({"name": "Pro", "interval": "month",
               "pools": {"credits": {"allowance": 100}},
               "operations": {"search": {"cost": 1}},
               "packs": {"starter": {"credits": 50, "price": {"amount": 500, "currency": "usd"}}}}),
    )
    .await;
    let created = app
        .put("/v1/accounts/key_1")
        .json(json!({"plan": "pro", "auto_top_up": policy}))
        .send()
        .await;
    created.assert_status(201);
    app
}

async fn requests(app: &TestApp) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT status, available FROM auto_top_ups ORDER BY created_at, id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

async fn events_of(app: &TestApp, kind: &str) -> Vec<Value> {
    sqlx::query_scalar("SELECT payload FROM events WHERE type = $1 ORDER BY seq")
        .bind(kind)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_policy_is_shown_checked_and_removed() {
    let app = app_with_policy(json!({"pack": "starter", "below": 30, "max_per_period": 2})).await;
    let account = app.get("/v1/accounts/key_1").send().await;
    assert_eq!(
        account.body["auto_top_up"],
        json!({"pack": "starter", "below": 30, "max_per_period": 2})
    );
    for (policy, code, field) in [
        (json!({"pack": "huge", "below": 30}), "unknown_pack", "pack"),
        (
            json!({"pack": "starter", "below": 0}),
            "invalid_request",
            "auto_top_up.below",
        ),
        (
            json!({"pack": "starter", "below": 5, "max_per_period": 0}),
            "invalid_request",
            "auto_top_up.max_per_period",
        ),
    ] {
        let refused = app
            .put("/v1/accounts/key_1")
            .json(json!({"plan": "pro", "auto_top_up": policy}))
            .send()
            .await;
        refused.assert_error(422, code);
        assert_eq!(refused.body["error"]["details"]["field"], field);
    }
    // max_per_period defaults to 1; null removes the policy.
    let updated = app
        .put("/v1/accounts/key_1")
        .json(json!({"plan": "pro", "auto_top_up": {"pack": "starter", "below": 10}}))
        .send()
        .await;
    assert_eq!(updated.body["auto_top_up"]["max_per_period"], 1);
    let removed = app
        .put("/v1/accounts/key_1")
        .json(json!({"plan": "pro", "auto_top_up": null}))
        .send()
        .await;
    assert_eq!(removed.body["auto_top_up"], Value::Null);
    app.debit("key_1", json!({"cost": 95}))
        .await
        .assert_status(201);
    assert!(requests(&app).await.is_empty(), "no policy, no request");
}

#[tokio::test]
async fn crossing_below_requests_the_pack_once_and_a_pack_grant_settles_it() {
    let app = app_with_policy(json!({"pack": "starter", "below": 30, "max_per_period": 2})).await;
    app.debit("key_1", json!({"cost": 60}))
        .await
        .assert_status(201);
    assert!(requests(&app).await.is_empty(), "40 left: not below 30");
    app.debit("key_1", json!({"cost": 15}))
        .await
        .assert_status(201);
    assert_eq!(requests(&app).await, [("requested".to_owned(), 25)]);
    let requested = events_of(&app, "credits.auto_top_up_requested").await;
    assert_eq!(requested.len(), 1);
    assert_eq!(requested[0]["pack"], "starter");
    assert_eq!(requested[0]["credits"], 50);
    assert_eq!(requested[0]["available"], 25);
    assert_eq!(
        requested[0]["price"],
        json!({"amount": 500, "currency": "usd"})
    );
    // In flight: further debits below the threshold ask for nothing more.
    app.debit("key_1", json!({"cost": 20}))
        .await
        .assert_status(201);
    assert_eq!(requests(&app).await.len(), 1);

    // The user's billing acts on the event and grants the pack: that settles the request.
    let grant = app
        .post("/v1/accounts/key_1/grants")
        .json(json!({"pack": "starter"}))
        .send()
        .await;
    grant.assert_status(201);
    let settled: (String, Option<uuid::Uuid>) =
        sqlx::query_as("SELECT status, grant_id FROM auto_top_ups ORDER BY created_at LIMIT 1")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(settled.0, "succeeded");
    assert_eq!(
        settled.1.unwrap().to_string(),
        grant.body["id"].as_str().unwrap()
    );
    let succeeded = events_of(&app, "credits.auto_top_up_succeeded").await;
    assert_eq!(succeeded[0]["request_id"], requested[0]["request_id"]);
    // 5 + 50 = 55 left. Down to 20: the second request of the period; then the limit holds.
    app.debit("key_1", json!({"cost": 35}))
        .await
        .assert_status(201);
    assert_eq!(requests(&app).await.len(), 2);
    app.post("/v1/accounts/key_1/grants")
        .json(json!({"pack": "starter"}))
        .send()
        .await
        .assert_status(201);
    app.debit("key_1", json!({"cost": 60}))
        .await
        .assert_status(201);
    let all = requests(&app).await;
    assert_eq!(all.len(), 2, "max_per_period is 2: {all:?}");
    assert!(all.iter().all(|(status, _)| status == "succeeded"));
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn many_debits_crossing_below_at_once_make_one_request() {
    let app = app_with_policy(json!({"pack": "starter", "below": 50, "max_per_period": 5})).await;
    let debits = (0..40).map(|_| app.debit("key_1", json!({"cost": 2})));
    let statuses: Vec<u16> = futures::future::join_all(debits)
        .await
        .iter()
        .map(|r| r.status.as_u16())
        .collect();
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    assert_eq!(app.available("key_1", "credits").await, Some(20));
    let all = requests(&app).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(
        events_of(&app, "credits.auto_top_up_requested").await.len(),
        1
    );
}

#[tokio::test]
async fn a_policy_set_below_the_balance_already_asks() {
    let app = app_with_policy(json!({"pack": "starter", "below": 500})).await;
    assert_eq!(requests(&app).await, [("requested".to_owned(), 100)]);
}

#[tokio::test]
async fn the_audit_finds_a_request_in_flight_that_does_not_match() {
    let app = app_with_policy(json!({"pack": "starter", "below": 500})).await;
    app.assert_audit_clean().await;
    sqlx::query("UPDATE account_pools SET top_up_in_flight = NULL")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let mut conn = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    let violations = credit_ledger::audit::run(&mut conn, app.clock.now())
        .await
        .unwrap();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].check, "top_up_in_flight_matches_requests");
    assert_eq!(violations[0].key_id.as_deref(), Some("key_1"));
}

#[tokio::test]
async fn a_pack_too_small_to_lift_the_pool_settles_and_asks_again_in_one_transaction() {
    let app = spawn_app().await;
    app.put_plan(
        "pro",
        json!({"name": "Pro", "interval": "month", "pools": {"credits": {"allowance": 100}},
               "packs": {"tiny": {"credits": 5}}}),
    )
    .await;
    app.put("/v1/accounts/key_1")
        .json(json!({"plan": "pro",
                     "auto_top_up": {"pack": "tiny", "below": 50, "max_per_period": 3}}))
        .send()
        .await
        .assert_status(201);
    app.debit("key_1", json!({"cost": 60}))
        .await
        .assert_status(201);
    // 40 + 5 = 45, still below 50: the grant settles the first request and makes the second.
    app.post("/v1/accounts/key_1/grants")
        .json(json!({"pack": "tiny"}))
        .send()
        .await
        .assert_status(201);
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM auto_top_ups ORDER BY created_at, id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(statuses, ["succeeded", "requested"]);
    app.assert_audit_clean().await;
}

#[tokio::test]
async fn changing_or_removing_the_policy_ends_the_request_in_flight() {
    let app = app_with_policy(json!({"pack": "starter", "below": 500, "max_per_period": 5})).await;
    assert_eq!(requests(&app).await, [("requested".to_owned(), 100)]);
    app.put("/v1/accounts/key_1")
        .json(json!({"plan": "pro", "auto_top_up": null}))
        .send()
        .await
        .assert_status(200);
    assert_eq!(requests(&app).await, [("failed".to_owned(), 100)]);
    let failed = events_of(&app, "credits.auto_top_up_failed").await;
    assert_eq!(failed[0]["reason"], "the auto_top_up policy was changed");
    // Back on, lower: the next change below the new threshold asks afresh (the period's
    // count, 1 so far, still counts against max_per_period).
    app.put("/v1/accounts/key_1")
        .json(json!({"plan": "pro",
                     "auto_top_up": {"pack": "starter", "below": 30, "max_per_period": 2}}))
        .send()
        .await
        .assert_status(200);
    app.debit("key_1", json!({"cost": 80}))
        .await
        .assert_status(201);
    assert_eq!(
        requests(&app).await,
        [("failed".to_owned(), 100), ("requested".to_owned(), 20)]
    );
    app.assert_audit_clean().await;
}

mod with_stripe {
    use std::sync::Arc;

    use serde_json::json;

    use super::{events_of, requests};
    use crate::helpers::{spawn_app_on_with, spawn_app_with, TestApp};
    use crate::stripe_double::{StripeDouble, SECRET_KEY};

    async fn app(stripe: &StripeDouble, customer: Option<&str>) -> TestApp {
        let app = spawn_app_with(&[
            ("STRIPE_SECRET_KEY", SECRET_KEY),
            ("STRIPE_API_BASE", &stripe.base_url),
        ])
        .await;
        app.put_plan(
            "pro",
            json!({"name": "Pro", "interval": "month", "pools": {"credits": {"allowance": 100}},
                   "packs": {"starter": {"credits": 50,
                                         "price": {"amount": 500, "currency": "usd"}}}}),
        )
        .await;
        let metadata = customer.map_or(json!({}), |c| json!({"stripe_customer_id": c}));
        app.put("/v1/accounts/key_1")
            .json(json!({"plan": "pro", "metadata": metadata,
                         "auto_top_up": {"pack": "starter", "below": 30, "max_per_period": 3}}))
            .send()
            .await
            .assert_status(201);
        app.debit("key_1", json!({"cost": 80}))
            .await
            .assert_status(201);
        assert_eq!(requests(&app).await, [("requested".to_owned(), 20)]);
        app
    }

    #[tokio::test]
    async fn a_request_is_charged_off_session_once_and_the_pack_granted() {
        let stripe = StripeDouble::start().await;
        stripe.add_customer("cus_ok", Some("pm_card_visa"));
        let app = app(&stripe, Some("cus_ok")).await;
        let charger = app.charger.as_ref().unwrap();
        assert_eq!(charger.charge_due(10).await.unwrap(), 1);
        assert_eq!(charger.charge_due(10).await.unwrap(), 0, "settled");
        let charges = stripe.charges();
        assert_eq!(charges.len(), 1);
        assert_eq!(charges[0]["amount"], 500);
        assert_eq!(charges[0]["currency"], "usd");
        assert_eq!(charges[0]["customer"], "cus_ok");
        let sent = stripe
            .received()
            .into_iter()
            .find(|r| r.path == "/v1/payment_intents")
            .unwrap();
        assert_eq!(sent.form["off_session"], "true");
        assert_eq!(sent.form["confirm"], "true");
        assert_eq!(sent.form["payment_method"], "pm_card_visa");
        assert!(sent
            .idempotency_key
            .unwrap()
            .starts_with("credit-ledger-auto-top-up-"));
        assert_eq!(requests(&app).await, [("succeeded".to_owned(), 20)]);
        assert_eq!(app.available("key_1", "credits").await, Some(70));
        let grants = app.get("/v1/accounts/key_1/grants").send().await;
        let pack = &grants.body["data"][0];
        assert_eq!(pack["pack"], "starter");
        assert_eq!(pack["metadata"]["stripe_payment_intent"], charges[0]["id"]);
        assert_eq!(
            events_of(&app, "credits.auto_top_up_succeeded").await.len(),
            1
        );
        app.assert_audit_clean().await;
    }

    #[tokio::test]
    async fn a_declined_card_ends_the_request_failed_and_grants_nothing() {
        let stripe = StripeDouble::start().await;
        stripe.add_customer("cus_declined", Some("pm_card_chargeDeclined"));
        let app = app(&stripe, Some("cus_declined")).await;
        assert_eq!(
            app.charger.as_ref().unwrap().charge_due(10).await.unwrap(),
            1
        );
        assert_eq!(requests(&app).await, [("failed".to_owned(), 20)]);
        assert!(stripe.charges().is_empty());
        assert_eq!(app.available("key_1", "credits").await, Some(20));
        let failed = events_of(&app, "credits.auto_top_up_failed").await;
        let reason = failed[0]["reason"].as_str().unwrap();
        assert!(
            reason.contains("Your card was declined") && reason.contains("generic_decline"),
            "{reason}"
        );
        // Not asked again at once; the next change below the threshold asks (2 of 3).
        app.debit("key_1", json!({"cost": 1}))
            .await
            .assert_status(201);
        assert_eq!(requests(&app).await.len(), 2);
        app.assert_audit_clean().await;
    }

    #[tokio::test]
    async fn without_a_customer_or_a_payment_method_the_request_fails_with_the_reason() {
        let stripe = StripeDouble::start().await;
        stripe.add_customer("cus_bare", None);
        for (customer, reason) in [
            (None, "no metadata.stripe_customer_id"),
            (Some("cus_bare"), "no default payment method"),
            (Some("cus_missing"), "No such customer"),
        ] {
            let app = app(&stripe, customer).await;
            app.charger.as_ref().unwrap().charge_due(10).await.unwrap();
            assert_eq!(requests(&app).await, [("failed".to_owned(), 20)]);
            let failed = events_of(&app, "credits.auto_top_up_failed").await;
            let text = failed[0]["reason"].as_str().unwrap();
            assert!(text.contains(reason), "{text}");
        }
        assert!(stripe.charges().is_empty());
    }

    #[tokio::test]
    async fn a_stripe_outage_waits_and_two_workers_charge_once() {
        let stripe = StripeDouble::start().await;
        stripe.add_customer("cus_ok", Some("pm_card_visa"));
        let app = app(&stripe, Some("cus_ok")).await;
        // Stripe answers 500 to the first call and its two quick retries: the request waits.
        stripe.fail_next(3);
        assert_eq!(
            app.charger.as_ref().unwrap().charge_due(10).await.unwrap(),
            1
        );
        assert_eq!(requests(&app).await, [("requested".to_owned(), 20)]);
        assert_eq!(
            app.charger.as_ref().unwrap().charge_due(10).await.unwrap(),
            0
        );
        // A minute later two replicas run their workers at once: one charge, one grant.
        let other = spawn_app_on_with(
            Arc::clone(&app.db),
            &[
                ("STRIPE_SECRET_KEY", SECRET_KEY),
                ("STRIPE_API_BASE", &stripe.base_url),
            ],
        )
        .await;
        app.clock.advance(chrono::Duration::seconds(61));
        other.clock.advance(chrono::Duration::seconds(61));
        let (a, b) = tokio::join!(
            app.charger.as_ref().unwrap().charge_due(10),
            other.charger.as_ref().unwrap().charge_due(10)
        );
        assert_eq!(a.unwrap() + b.unwrap(), 1);
        assert_eq!(stripe.charges().len(), 1);
        assert_eq!(requests(&app).await, [("succeeded".to_owned(), 20)]);
        assert_eq!(app.available("key_1", "credits").await, Some(70));
        app.assert_audit_clean().await;
    }

    #[tokio::test]
    async fn a_paid_request_is_granted_as_requested_even_if_the_catalogue_changed() {
        let stripe = StripeDouble::start().await;
        stripe.add_customer("cus_ok", Some("pm_card_visa"));
        let app = app(&stripe, Some("cus_ok")).await;
        // The pack leaves the catalogue after the request was made.
        app.put_plan(
            "pro",
            json!({"name": "Pro", "interval": "month", "pools": {"credits": {"allowance": 100}}}),
        )
        .await;
        let charger = app.charger.as_ref().unwrap();
        assert_eq!(charger.charge_due(10).await.unwrap(), 1);
        assert_eq!(charger.charge_due(10).await.unwrap(), 0);
        assert_eq!(stripe.charges().len(), 1, "charged once");
        assert_eq!(requests(&app).await, [("succeeded".to_owned(), 20)]);
        assert_eq!(app.available("key_1", "credits").await, Some(70));
    }

    #[tokio::test]
    async fn a_processing_payment_is_looked_at_again_and_never_charged_twice() {
        let stripe = StripeDouble::start().await;
        stripe.add_customer("cus_bank", Some("pm_processing"));
        let app = app(&stripe, Some("cus_bank")).await;
        let charger = app.charger.as_ref().unwrap();
        assert_eq!(charger.charge_due(10).await.unwrap(), 1);
        assert_eq!(requests(&app).await, [("requested".to_owned(), 20)]);
        let intent = stripe.charges()[0]["id"].as_str().unwrap().to_owned();
        // An hour later it is still processing, then it goes through.
        app.clock.advance(chrono::Duration::seconds(3_601));
        assert_eq!(charger.charge_due(10).await.unwrap(), 1);
        assert_eq!(requests(&app).await, [("requested".to_owned(), 20)]);
        stripe.complete_payment(&intent);
        app.clock.advance(chrono::Duration::seconds(3_601));
        assert_eq!(charger.charge_due(10).await.unwrap(), 1);
        assert_eq!(requests(&app).await, [("succeeded".to_owned(), 20)]);
        assert_eq!(stripe.charges().len(), 1, "one PaymentIntent in all");
        assert_eq!(app.available("key_1", "credits").await, Some(70));
        app.assert_audit_clean().await;
    }
}
