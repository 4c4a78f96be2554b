use serde_json::json;

use crate::helpers::{spawn_app, SERVICE};

fn pro() -> serde_json::Value {
    json!({
        "name": "Pro", "interval": "month",
        "pools": {"credits": {"allowance": 10000, "rollover_cap": 5000, "overage_limit": 0}},
        "operations": {"image.generate": {"pool": "credits", "cost": 10}, "search": {"cost": 1}},
        "ratelimits": [{"name": "burst", "limit": 600, "duration_ms": 60000}]
    })
}

#[tokio::test]
async fn put_creates_a_plan_and_get_returns_it_with_defaults_filled_in() {
    let app = spawn_app().await;
    let plan = app.put_plan("pro", pro()).await;
    assert_eq!(plan["id"], "pro");
    assert_eq!(plan["version"], 1);
    assert_eq!(plan["operations"]["search"]["pool"], "credits");
    assert_eq!(plan["ratelimits"][0]["limit"], 600);

    let fetched = app.get("/v1/plans/pro").token(SERVICE).send().await;
    fetched.assert_status(200);
    assert_eq!(fetched.body, plan);
}

#[tokio::test]
async fn replacing_a_plan_makes_a_new_version_and_keeps_the_old_one() {
    let app = spawn_app().await;
    app.put_plan("pro", pro()).await;
    let mut cheaper = pro();
    cheaper["operations"]["image.generate"]["cost"] = json!(5);
    let v2 = app.put_plan("pro", cheaper).await;
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["operations"]["image.generate"]["cost"], 5);

    let v1 = app.get("/v1/plans/pro?version=1").send().await;
    v1.assert_status(200);
    assert_eq!(v1.body["operations"]["image.generate"]["cost"], 10);
    let latest = app.get("/v1/plans/pro").send().await;
    assert_eq!(latest.body["version"], 2);
}

#[tokio::test]
async fn putting_the_same_plan_again_makes_no_new_version() {
    let app = spawn_app().await;
    let first = app.put_plan("pro", pro()).await;
    let again = app.put_plan("pro", pro()).await;
    assert_eq!(again["version"], 1);
    assert_eq!(again, first);
    assert_eq!(app.count("plans").await, 1);
}

#[tokio::test]
async fn list_returns_the_latest_version_of_every_plan() {
    let app = spawn_app().await;
    app.put_plan("pro", pro()).await;
    let mut v2 = pro();
    v2["name"] = json!("Pro 2");
    app.put_plan("pro", v2).await;
    app.create_plan("free", Some(100)).await;
    let list = app.get("/v1/plans").token(SERVICE).send().await;
    list.assert_status(200);
    let data = list.body["data"].as_array().unwrap();
    let ids: Vec<(&str, i64)> = data
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["version"].as_i64().unwrap()))
        .collect();
    assert_eq!(ids, vec![("free", 1), ("pro", 2)]);
}

#[tokio::test]
async fn unknown_plans_and_versions_are_404() {
    let app = spawn_app().await;
    app.get("/v1/plans/nope")
        .send()
        .await
        .assert_error(404, "plan_not_found");
    app.put_plan("pro", pro()).await;
    app.get("/v1/plans/pro?version=7")
        .send()
        .await
        .assert_error(404, "plan_not_found");
}

#[tokio::test]
async fn invalid_plans_are_422_invalid_plan_naming_the_field_and_write_nothing() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"name": "P", "interval": "fortnight", "pools": {"credits": {"allowance": 1}}}),
            "interval",
        ),
        (
            json!({"name": "P", "interval": "month", "pools": {"credits": {"allowance": -5}}}),
            "pools.credits.allowance",
        ),
        (
            json!({"name": "P", "interval": "month", "pools": {"credits": {"allowance": 5}}, "operations": {"x": {"pool": "tokens", "cost": 1}}}),
            "operations.x.pool",
        ),
        (
            json!({"name": "P", "interval": "month", "pools": {"credits": {"allowance": 5}}, "operations": {"x": {"cost": 0}}}),
            "operations.x.cost",
        ),
        (
            json!({"name": "P", "interval": "month", "pools": {"credits": {"allowance": 5, "bonus": 1}}}),
            "pools.credits.bonus",
        ),
        (json!({"name": "P", "interval": "month"}), "pools"),
    ];
    for (body, field) in cases {
        let response = app.put("/v1/plans/bad").json(body).send().await;
        response.assert_error(422, "invalid_plan");
        assert_eq!(
            response.body["error"]["details"]["field"], field,
            "{}",
            response.body
        );
    }
    assert_eq!(app.count("plans").await, 0);
    assert_eq!(app.count("plan_heads").await, 0);
}

#[tokio::test]
async fn an_unlimited_pool_is_a_null_allowance() {
    let app = spawn_app().await;
    let plan = app.create_plan("internal", None).await;
    assert_eq!(
        plan["pools"]["credits"]["allowance"],
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn only_admins_may_put_plans() {
    let app = spawn_app().await;
    app.put("/v1/plans/pro")
        .token(SERVICE)
        .json(pro())
        .send()
        .await
        .assert_error(403, "forbidden");
    app.put("/v1/plans/pro")
        .no_token()
        .json(pro())
        .send()
        .await
        .assert_error(401, "unauthorized");
    assert_eq!(app.count("plans").await, 0);
}
