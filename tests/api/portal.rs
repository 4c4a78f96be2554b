//! The customer portal: links from `POST /v1/accounts/{key_id}/portal-sessions`, the numbers
//! `GET /v1/portal` shows for them, and the pages the binary serves.

use serde_json::json;

use crate::helpers::{spawn_app, TestApp, ADMIN, SERVICE};

/// The token in a portal link's fragment.
fn token_of(url: &str) -> String {
    url.split_once("#token=")
        .map(|(_, t)| t.to_owned())
        .unwrap_or_else(|| panic!("{url} has no token in its fragment"))
}

/// A link made a moment ago lives `seconds` from when it was made.
#[track_caller]
fn assert_lives(left: chrono::Duration, seconds: i64) {
    let ttl = chrono::Duration::seconds(seconds);
    assert!(
        left <= ttl && left > ttl - chrono::Duration::seconds(10),
        "{left} left of {ttl}"
    );
}

async fn account_with_use(app: &TestApp) {
    app.put_plan(
        "pro",
        json!({"name": "Pro", "interval": "month",
               "pools": {"credits": {"allowance": 1000}},
               "operations": {"search": {"cost": 2}, "image": {"cost": 10}},
               "packs": {"boost": {"credits": 500, "expires_in_days": 30,
                                   "price": {"amount": 900, "currency": "usd"}}}}),
    )
    .await;
    app.create_account("key_1", "pro").await;
    app.debit("key_1", json!({"operation": "search", "quantity": 3}))
        .await
        .assert_status(201);
    app.debit("key_1", json!({"operation": "image"}))
        .await
        .assert_status(201);
    app.post("/v1/accounts/key_1/grants")
        .json(json!({"pack": "boost"}))
        .send()
        .await
        .assert_status(201);
}

#[tokio::test]
async fn a_portal_link_shows_the_customers_numbers_until_it_expires() {
    let app = spawn_app().await;
    account_with_use(&app).await;
    let created = app
        .post("/v1/accounts/key_1/portal-sessions")
        .token(SERVICE)
        .json(json!({"return_url": "https://app.example.com/billing", "ttl_seconds": 600}))
        .send()
        .await;
    created.assert_status(201);
    let url = created.body["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/portal#token=pt_", app.address)),
        "{url}"
    );
    let expires_at: chrono::DateTime<chrono::Utc> = created.body["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_lives(expires_at - app.clock.now(), 600);
    let token = token_of(url);

    let view = app.get("/v1/portal").token(&token).send().await;
    view.assert_status(200);
    let body = &view.body;
    assert_eq!(body["key_id"], "key_1");
    assert_eq!(body["plan"], json!({"id": "pro", "name": "Pro"}));
    assert_eq!(body["return_url"], "https://app.example.com/billing");
    let pool = &body["balance"]["pools"][0];
    assert_eq!(pool["available"], 1000 - 6 - 10 + 500);
    assert_eq!(pool["used"], 16);
    let kinds: Vec<&str> = pool["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"pack") && kinds.contains(&"allowance"),
        "{kinds:?}"
    );
    let mut usage: Vec<(String, i64)> = body["usage"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().unwrap().to_owned(),
                r["credits"].as_i64().unwrap(),
            )
        })
        .collect();
    usage.sort();
    assert_eq!(usage, vec![("image".into(), 10), ("search".into(), 6)]);
    assert_eq!(body["entries"][0]["kind"], "grant");
    assert_eq!(body["entries"].as_array().unwrap().len(), 4);
    assert_eq!(
        body["packs"],
        json!([{"id": "boost", "pool": "credits", "credits": 500, "expires_in_days": 30,
                "price": {"amount": 900, "currency": "usd"}, "buyable": false}])
    );

    // Read-only: the token opens nothing else.
    for path in [
        "/v1/accounts/key_1",
        "/v1/accounts/key_1/entries",
        "/v1/plans",
    ] {
        app.get(path)
            .token(&token)
            .send()
            .await
            .assert_error(401, "unauthorized");
    }
    app.post("/v1/accounts/key_1/debits")
        .token(&token)
        .json(json!({"operation": "search"}))
        .send()
        .await
        .assert_error(401, "unauthorized");

    // Expired: refused, saying so.
    app.clock.advance(chrono::Duration::seconds(601));
    let expired = app.get("/v1/portal").token(&token).send().await;
    expired.assert_error(401, "unauthorized");
    let message = expired.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("expired") && message.contains("ask for a new link"),
        "{message}"
    );
    assert_eq!(
        expired.body["error"]["details"]["expired_at"],
        created.body["expires_at"]
    );
}

#[tokio::test]
async fn a_portal_token_is_stored_only_as_its_digest_and_a_forged_one_opens_nothing() {
    let app = spawn_app().await;
    account_with_use(&app).await;
    let created = app
        .post("/v1/accounts/key_1/portal-sessions")
        .token(ADMIN)
        .send()
        .await;
    created.assert_status(201);
    let token = token_of(created.body["url"].as_str().unwrap());
    let expires_at: chrono::DateTime<chrono::Utc> = created.body["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_lives(expires_at - app.clock.now(), 3600);

    let stored: Vec<(Vec<u8>, String)> =
        sqlx::query_as("SELECT token_hash, row_to_json(p)::text FROM portal_sessions p")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(stored.len(), 1);
    use sha2::Digest;
    assert_eq!(stored[0].0, sha2::Sha256::digest(token.as_bytes()).to_vec());
    let secret = token.rsplit_once('.').unwrap().1;
    assert!(
        !stored[0].1.contains(secret),
        "the token itself is not stored"
    );

    // The same account, another secret; another account, the same secret; not a token at all.
    let (named, _) = token.split_once('.').unwrap();
    let forged = format!("{named}.{}", "A".repeat(43));
    let other_account = format!("pt_a2V5XzI.{secret}");
    for bad in [
        forged.as_str(),
        other_account.as_str(),
        "pt_",
        ADMIN,
        SERVICE,
    ] {
        let refused = app.get("/v1/portal").token(bad).send().await;
        refused.assert_error(401, "unauthorized");
        assert!(
            refused.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not known"),
            "{bad}"
        );
    }
    app.get("/v1/portal")
        .no_token()
        .send()
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn portal_links_are_checked_before_anything_is_stored() {
    let app = spawn_app().await;
    account_with_use(&app).await;
    for (body, field) in [
        (json!({"ttl_seconds": 59}), "ttl_seconds"),
        (json!({"ttl_seconds": 86401}), "ttl_seconds"),
        (json!({"return_url": "javascript:alert(1)"}), "return_url"),
        (json!({"return_url": "/relative"}), "return_url"),
        (json!({"colour": "blue"}), "colour"),
    ] {
        let refused = app
            .post("/v1/accounts/key_1/portal-sessions")
            .token(SERVICE)
            .json(body.clone())
            .send()
            .await;
        refused.assert_error(422, "invalid_request");
        assert_eq!(refused.body["error"]["details"]["field"], field, "{body}");
    }
    app.post("/v1/accounts/nobody/portal-sessions")
        .token(SERVICE)
        .send()
        .await
        .assert_error(404, "account_not_found");
    assert_eq!(app.count("portal_sessions").await, 0);
}

#[tokio::test]
async fn expired_portal_links_are_forgotten_a_day_later() {
    let app = spawn_app().await;
    account_with_use(&app).await;
    for ttl in [60, 7200] {
        app.post("/v1/accounts/key_1/portal-sessions")
            .token(SERVICE)
            .json(json!({"ttl_seconds": ttl}))
            .send()
            .await
            .assert_status(201);
    }
    app.clock
        .advance(chrono::Duration::days(1) + chrono::Duration::minutes(2));
    credit_ledger::scheduler::run_once(&app.ledger).await;
    assert_eq!(app.count("portal_sessions").await, 1);
}

#[tokio::test]
async fn the_console_and_portal_pages_are_served_with_a_strict_policy() {
    let app = spawn_app().await;
    let console = app.get("/console").no_token().send().await;
    console.assert_status(200);
    assert!(console
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let csp = console.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(console.header("x-frame-options"), Some("DENY"));
    let html = console.body.as_str().unwrap();
    assert!(html.contains("assets/console.js") && !html.contains("<script>"));

    let portal = app.get("/portal").no_token().send().await;
    portal.assert_status(200);
    assert!(portal
        .header("content-security-policy")
        .unwrap()
        .contains("frame-ancestors *"));
    assert_eq!(portal.header("x-frame-options"), None);
    assert_eq!(portal.header("referrer-policy"), Some("no-referrer"));

    for (name, kind) in [
        ("ledger.css", "text/css"),
        ("common.js", "text/javascript"),
        ("console.js", "text/javascript"),
        ("portal.js", "text/javascript"),
    ] {
        let asset = app.get(&format!("/assets/{name}")).no_token().send().await;
        asset.assert_status(200);
        assert!(
            asset.header("content-type").unwrap().starts_with(kind),
            "{name}"
        );
        assert!(!asset.body.as_str().unwrap().is_empty());
    }
    app.get("/assets/secrets.txt")
        .no_token()
        .send()
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn a_portal_link_sells_the_plans_packs_through_stripe_and_back_to_the_product() {
    use crate::stripe_double::{StripeDouble, SECRET_KEY};
    let stripe = StripeDouble::start().await;
    let app = crate::helpers::spawn_app_with(&[
        ("STRIPE_SECRET_KEY", SECRET_KEY),
        ("STRIPE_API_BASE", &stripe.base_url),
    ])
    .await;
    app.put_plan(
        "pro",
        json!({"name": "Pro", "interval": "month",
               "pools": {"credits": {"allowance": 100}},
               "packs": {"starter": {"credits": 5000, "stripe_price": "price_1Starter",
                                     "price": {"amount": 1900, "currency": "usd"}},
                         "manual": {"credits": 10}}}),
    )
    .await;
    app.create_account("key_1", "pro").await;
    stripe.add_price("price_1Starter");
    let link = |body: serde_json::Value| {
        let app = &app;
        async move {
            let made = app
                .post("/v1/accounts/key_1/portal-sessions")
                .token(SERVICE)
                .json(body)
                .send()
                .await;
            made.assert_status(201);
            token_of(made.body["url"].as_str().unwrap())
        }
    };
    let token = link(json!({"return_url": "https://app.example.com/billing"})).await;

    let view = app.get("/v1/portal").token(&token).send().await;
    let buyable: Vec<(&str, bool)> = view.body["packs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["buyable"].as_bool().unwrap()))
        .collect();
    assert_eq!(buyable, vec![("manual", false), ("starter", true)]);

    let grants_before = app.count("grants").await;
    let session = app
        .post("/v1/portal/checkout-sessions")
        .token(&token)
        .idempotency_key("buy-1")
        .json(json!({"pack": "starter"}))
        .send()
        .await;
    session.assert_status(201);
    let id = session.body["id"].as_str().unwrap();
    let sent = stripe.session(id);
    assert_eq!(sent["success_url"], "https://app.example.com/billing");
    assert_eq!(sent["cancel_url"], "https://app.example.com/billing");
    assert_eq!(sent["metadata"]["credit_ledger_key_id"], "key_1");
    assert_eq!(sent["metadata"]["credit_ledger_pack"], "starter");
    assert_eq!(
        app.count("grants").await,
        grants_before,
        "nothing granted before payment"
    );

    app.post("/v1/portal/checkout-sessions")
        .token(&token)
        .json(json!({"pack": "manual"}))
        .send()
        .await
        .assert_error(422, "invalid_request");

    // A link without a way back sells nothing.
    let no_return = link(json!({})).await;
    let view = app.get("/v1/portal").token(&no_return).send().await;
    assert!(view.body["packs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["buyable"] == false));
    let refused = app
        .post("/v1/portal/checkout-sessions")
        .token(&no_return)
        .json(json!({"pack": "starter"}))
        .send()
        .await;
    refused.assert_error(422, "invalid_request");
    assert_eq!(refused.body["error"]["details"]["field"], "return_url");
}

#[tokio::test]
async fn without_stripe_the_portal_offers_no_purchase() {
    let app = spawn_app().await;
    account_with_use(&app).await;
    let made = app
        .post("/v1/accounts/key_1/portal-sessions")
        .token(SERVICE)
        .json(json!({"return_url": "https://app.example.com/billing"}))
        .send()
        .await;
    let token = token_of(made.body["url"].as_str().unwrap());
    let view = app.get("/v1/portal").token(&token).send().await;
    assert_eq!(view.body["packs"][0]["buyable"], false);
    let refused = app
        .post("/v1/portal/checkout-sessions")
        .token(&token)
        .json(json!({"pack": "boost"}))
        .send()
        .await;
    refused.assert_error(503, "billing_unavailable");
    assert_eq!(
        refused.body["error"]["details"]["setting"],
        "STRIPE_SECRET_KEY"
    );
}
