//! `credit-ledger audit`: a ledger built through the API audits clean, and each invariant, broken
//! on purpose with SQL, is reported by its own check and names the account.

use std::collections::BTreeSet;
use std::process::Command;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::json;
use uuid::Uuid;

use credit_ledger::audit::{self, Violation};

use crate::helpers::{spawn_app, TestApp};

/// The ledger every test starts from:
/// - `key_a` on `pro` (allowance 100), mid-period (anchored 10 days ago), with a 500-credit pack;
///   three debits, one under an Idempotency-Key, the last drawing from the allowance and the pack;
/// - `key_b` on `pro`, created now, with one debit;
/// - `key_c` on `internal`, an unlimited pool: debits journaled against no grant.
async fn ledger() -> TestApp {
    let app = spawn_app().await;
    app.create_plan("pro", Some(100)).await;
    app.create_plan("internal", None).await;

    let anchor = (Utc::now() - Duration::days(10)).to_rfc3339();
    app.put("/v1/accounts/key_a")
        .json(json!({"plan": "pro", "billing_anchor": anchor}))
        .send()
        .await
        .assert_status(201);
    app.create_account("key_b", "pro").await;
    app.create_account("key_c", "internal").await;

    app.debit(
        "key_a",
        json!({"operation": "image.generate", "quantity": 3}),
    )
    .await
    .assert_status(201);
    app.post("/v1/accounts/key_a/debits")
        .token(crate::helpers::SERVICE)
        .idempotency_key("job-1")
        .json(json!({"operation": "search", "quantity": 5}))
        .send()
        .await
        .assert_status(201);
    add_pack(&app, "key_a", 500).await;
    let spill = app.debit("key_a", json!({"cost": 80})).await;
    spill.assert_status(201);
    assert_eq!(
        spill.body["drawn"].as_array().map(Vec::len),
        Some(2),
        "the last debit draws from the allowance and the pack: {}",
        spill.body
    );

    app.debit("key_b", json!({"operation": "search", "quantity": 7}))
        .await
        .assert_status(201);
    app.debit(
        "key_c",
        json!({"operation": "image.generate", "quantity": 2}),
    )
    .await
    .assert_status(201);
    app
}

/// A pack created a day ago, as a debit must partly draw from it.
async fn add_pack(app: &TestApp, key_id: &str, amount: i64) -> Uuid {
    let created_at = Utc::now() - Duration::days(1);
    app.insert_grant(key_id, "pack", amount, None, 0, created_at)
        .await
        .id
}

async fn grant_of(app: &TestApp, key_id: &str, kind: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM grants WHERE key_id = $1 AND kind = $2::grant_kind")
        .bind(key_id)
        .bind(kind)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

/// Runs one or more statements (no parameters).
async fn sql(app: &TestApp, statement: &str) {
    sqlx::raw_sql(statement)
        .execute(&app.db.pool)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// Drops every CHECK constraint of a table, so that a test can store what they forbid.
async fn drop_check_constraints(app: &TestApp, table: &str) {
    sql(
        app,
        &format!(
            "DO $$ DECLARE c record; BEGIN
                 FOR c IN SELECT conname FROM pg_constraint
                           WHERE conrelid = '{table}'::regclass AND contype = 'c' LOOP
                     EXECUTE format('ALTER TABLE {table} DROP CONSTRAINT %I', c.conname);
                 END LOOP;
             END $$"
        ),
    )
    .await;
}

async fn audit_at(app: &TestApp, now: DateTime<Utc>) -> Vec<Violation> {
    let mut conn = app.db.pool.acquire().await.unwrap();
    audit::run(&mut conn, now).await.expect("the audit runs")
}

async fn audit_now(app: &TestApp) -> Vec<Violation> {
    audit_at(app, Utc::now()).await
}

fn lines(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("\n  {v}"))
        .collect::<String>()
}

/// Every violation is of `check`, and each of `key_ids` is named by one.
#[track_caller]
fn assert_only(violations: &[Violation], check: &str, key_ids: &[&str]) {
    assert!(
        !violations.is_empty(),
        "expected {check} to be reported; the audit was clean"
    );
    let checks: BTreeSet<&str> = violations.iter().map(|v| v.check).collect();
    assert_eq!(
        checks,
        BTreeSet::from([check]),
        "only {check} is broken:{}",
        lines(violations)
    );
    let named: BTreeSet<&str> = violations
        .iter()
        .filter_map(|v| v.key_id.as_deref())
        .collect();
    assert_eq!(
        named,
        key_ids.iter().copied().collect(),
        "the violations name the corrupted accounts:{}",
        lines(violations)
    );
}

#[tokio::test]
async fn a_ledger_built_through_the_api_audits_clean() {
    let app = ledger().await;
    let violations = audit_now(&app).await;
    assert!(violations.is_empty(), "clean:{}", lines(&violations));
    assert_eq!(audit::CHECKS.len(), 17);
}

#[tokio::test]
async fn a_grant_whose_remaining_differs_from_its_entries_is_reported() {
    let app = ledger().await;
    let pack = grant_of(&app, "key_a", "pack").await;
    sql(
        &app,
        "UPDATE grants SET remaining = remaining - 1 WHERE key_id = 'key_a' AND kind = 'pack'",
    )
    .await;
    let violations = audit_now(&app).await;
    assert_only(&violations, "grant_remaining_matches_entries", &["key_a"]);
    assert!(violations[0].subject.contains(&pack.to_string()));
    assert!(
        violations[0].detail.contains("484") && violations[0].detail.contains("485"),
        "actual and expected: {}",
        violations[0]
    );
}

#[tokio::test]
async fn a_grant_with_remaining_above_its_amount_or_below_zero_is_reported() {
    let app = ledger().await;
    drop_check_constraints(&app, "grants").await;
    // key_a: the pack has 485 left of a stated 400; its entries still sum to 485.
    sql(
        &app,
        "UPDATE grants SET amount = 400 WHERE key_id = 'key_a' AND kind = 'pack'",
    )
    .await;
    // key_b: the allowance (93 left) goes to -10, with the entry that says so.
    let allowance = grant_of(&app, "key_b", "allowance").await;
    sqlx::query(
        "INSERT INTO entries (key_id, pool, kind, amount, grant_id, created_at)
         VALUES ('key_b', 'credits', 'adjustment', -103, $1, now())",
    )
    .bind(allowance)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sql(
        &app,
        "UPDATE grants SET remaining = -10 WHERE key_id = 'key_b' AND kind = 'allowance'",
    )
    .await;
    let violations = audit_now(&app).await;
    assert_only(&violations, "grant_remaining_in_range", &["key_a", "key_b"]);
    assert!(violations[0].detail.contains("485") && violations[0].detail.contains("400"));
    assert!(violations[1].detail.contains("-10"));
}

#[tokio::test]
async fn a_second_allowance_grant_for_the_same_period_is_reported() {
    let app = ledger().await;
    sql(&app, "DROP INDEX grants_one_allowance_per_period").await;
    let twin = Uuid::now_v7();
    sqlx::query(
        "WITH g AS (
             INSERT INTO grants (key_id, id, pool, kind, amount, remaining, effective_at,
                                 expires_at, period_start, created_at)
             SELECT key_id, $1, pool, kind, amount, amount, effective_at, expires_at,
                    period_start, now()
               FROM grants WHERE key_id = 'key_b' AND kind = 'allowance'
             RETURNING key_id, pool, amount)
         INSERT INTO entries (key_id, pool, kind, amount, grant_id, created_at)
         SELECT key_id, pool, 'grant', amount, $1, now() FROM g",
    )
    .bind(twin)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let violations = audit_now(&app).await;
    assert_only(&violations, "one_allowance_per_period", &["key_b"]);
    assert!(violations[0].detail.contains(&twin.to_string()));
    assert!(violations[0].detail.starts_with("2 allowance grants"));
}

#[tokio::test]
async fn an_active_grant_past_its_expiry_beyond_the_grace_is_reported() {
    let app = ledger().await;
    sql(
        &app,
        "UPDATE grants SET expires_at = now() - interval '10 minutes'
          WHERE key_id = 'key_a' AND kind = 'pack'",
    )
    .await;
    let violations = audit_now(&app).await;
    assert_only(&violations, "expired_grant_unjournaled", &["key_a"]);
    assert!(violations[0].detail.contains("485 credits remaining"));
}

#[tokio::test]
async fn an_account_whose_period_ended_beyond_the_grace_is_reported() {
    let app = ledger().await;
    // As the ledger would stand had the period really ended then: its debits say so too.
    sql(
        &app,
        "UPDATE accounts SET period_end = now() - interval '10 minutes' WHERE key_id = 'key_a';
         UPDATE debits d SET reset_at = a.period_end FROM accounts a
          WHERE a.key_id = 'key_a' AND d.key_id = a.key_id",
    )
    .await;
    let violations = audit_now(&app).await;
    assert_only(&violations, "period_not_rolled", &["key_a"]);
}

#[tokio::test]
async fn an_expiry_or_period_end_within_the_grace_is_not_yet_a_violation() {
    let app = ledger().await;
    sql(
        &app,
        "UPDATE grants SET expires_at = now() - interval '1 minute'
          WHERE key_id = 'key_a' AND kind = 'pack'",
    )
    .await;
    sql(
        &app,
        "UPDATE accounts SET period_end = now() - interval '1 minute' WHERE key_id = 'key_a';
         UPDATE debits d SET reset_at = a.period_end FROM accounts a
          WHERE a.key_id = 'key_a' AND d.key_id = a.key_id",
    )
    .await;
    let now = Utc::now();
    let violations = audit_at(&app, now).await;
    assert!(
        violations.is_empty(),
        "the scheduler still has time:{}",
        lines(&violations)
    );
    // The same rows, audited once the grace has passed.
    let later = audit_at(&app, now + audit::GRACE).await;
    let checks: BTreeSet<&str> = later.iter().map(|v| v.check).collect();
    assert_eq!(
        checks,
        BTreeSet::from(["expired_grant_unjournaled", "period_not_rolled"]),
        "{}",
        lines(&later)
    );
}

#[tokio::test]
async fn an_allowance_pool_without_the_current_periods_allowance_grant_is_reported() {
    let app = ledger().await;
    // The only allowance grant now belongs to the previous period (so none of this period's
    // use came from this period's allowance: allowance_used agrees, to break only this check).
    sql(
        &app,
        "UPDATE grants SET period_start = period_start - interval '1 month'
          WHERE key_id = 'key_b' AND kind = 'allowance';
         UPDATE account_pools SET allowance_used = 0 WHERE key_id = 'key_b'",
    )
    .await;
    let violations = audit_now(&app).await;
    assert_only(&violations, "allowance_missing", &["key_b"]);
    assert!(violations[0].subject.contains("credits"));
}

#[tokio::test]
async fn a_debit_whose_entries_do_not_add_up_to_its_cost_is_reported() {
    let app = ledger().await;
    // key_c (unlimited pool): the debit claims 21 credits, its entry says 20; used agrees with
    // the debit so that only this invariant is broken.
    sql(
        &app,
        "UPDATE debits SET cost = cost + 1 WHERE key_id = 'key_c';
         UPDATE account_pools SET used = used + 1 WHERE key_id = 'key_c';
         UPDATE usage_hourly SET credits = credits + 1 WHERE key_id = 'key_c'",
    )
    .await;
    // key_b: a debit entry whose debit does not exist.
    sql(
        &app,
        "INSERT INTO entries (key_id, pool, kind, amount, debit_id, created_at)
         VALUES ('key_b', 'credits', 'debit', -3, gen_random_uuid(), now())",
    )
    .await;
    let violations = audit_now(&app).await;
    assert_only(&violations, "debit_entries_match_cost", &["key_b", "key_c"]);
    assert!(
        violations[0].detail.contains("no such debit"),
        "{}",
        violations[0]
    );
    assert!(
        violations[1].detail.contains("-21") && violations[1].detail.contains("-20"),
        "{}",
        violations[1]
    );
}

#[tokio::test]
async fn used_that_differs_from_the_periods_debits_is_reported() {
    let app = ledger().await;
    sql(
        &app,
        "UPDATE account_pools SET used = used + 7 WHERE key_id = 'key_b'",
    )
    .await;
    let violations = audit_now(&app).await;
    assert_only(&violations, "used_matches_debits", &["key_b"]);
    assert!(
        violations[0].detail.contains("used is 14") && violations[0].detail.contains("cost 7"),
        "{}",
        violations[0]
    );
}

#[tokio::test]
async fn an_entry_naming_a_missing_or_another_accounts_grant_is_reported() {
    let app = ledger().await;
    let foreign = grant_of(&app, "key_a", "pack").await;
    sqlx::query(
        "INSERT INTO entries (key_id, pool, kind, amount, grant_id, created_at)
         VALUES ('key_b', 'credits', 'adjustment', 0, $1, now()),
                ('key_c', 'credits', 'adjustment', 0, gen_random_uuid(), now())",
    )
    .bind(foreign)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let violations = audit_now(&app).await;
    assert_only(&violations, "entry_grant_exists", &["key_b", "key_c"]);
    assert!(violations[0].detail.contains("of another account"));
    assert!(violations[1].detail.contains("does not exist"));
}

#[tokio::test]
async fn an_idempotency_claim_left_unfinished_is_reported() {
    let app = ledger().await;
    let updated = sqlx::query("UPDATE idempotency_keys SET status = 0 WHERE scope = 'key_a'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        updated.rows_affected(),
        1,
        "the ledger holds one finished key"
    );
    let violations = audit_now(&app).await;
    assert_only(&violations, "idempotency_claim_unfinished", &["key_a"]);
    assert!(violations[0].subject.contains("job-1"));
}

#[tokio::test]
async fn violations_come_ordered_by_check_then_key_id() {
    let app = ledger().await;
    sql(
        &app,
        "UPDATE account_pools SET used = used + 1 WHERE key_id IN ('key_b', 'key_a');
         UPDATE grants SET remaining = remaining - 1 WHERE key_id = 'key_b' AND kind = 'allowance'",
    )
    .await;
    let violations = audit_now(&app).await;
    let order: Vec<(&str, Option<&str>)> = violations
        .iter()
        .map(|v| (v.check, v.key_id.as_deref()))
        .collect();
    assert_eq!(
        order,
        [
            ("grant_remaining_matches_entries", Some("key_b")),
            ("used_matches_debits", Some("key_a")),
            ("used_matches_debits", Some("key_b")),
        ]
    );
}

/// The audit agrees with the ledger's own writes over its whole life: rolls (lazy and catch-up),
/// rollover, packs that expire, voids, adjustments, and plan changes (one dropping a pool, one
/// resetting the period within the second of a debit).
#[tokio::test]
async fn a_ledger_through_rolls_expiries_voids_adjustments_and_plan_changes_audits_clean() {
    let app = spawn_app().await;
    let daily = |allowance: i64| {
        json!({"name": "Daily", "interval": "day",
               "pools": {"credits": {"allowance": allowance, "rollover_cap": 40},
                         "exports": {"allowance": 5}},
               "operations": {"job": {"cost": 1}, "export": {"pool": "exports", "cost": 1}}})
    };
    app.put_plan("daily", daily(100)).await;
    app.put_plan(
        "lite",
        json!({"name": "Lite", "interval": "day",
               "pools": {"credits": {"allowance": 50}}, "operations": {"job": {"cost": 1}}}),
    )
    .await;
    app.create_account("key_1", "daily").await;
    let admin = |path: &str, body: serde_json::Value| {
        app.post(&format!("/v1/accounts/key_1/{path}")).json(body)
    };

    app.debit("key_1", json!({"operation": "job", "quantity": 90}))
        .await
        .assert_status(201);
    app.debit("key_1", json!({"operation": "export", "quantity": 2}))
        .await
        .assert_status(201);
    let expires = (app.clock.now() + Duration::days(2)).to_rfc3339();
    admin(
        "grants",
        json!({"kind": "pack", "amount": 200, "expires_at": expires}),
    )
    .send()
    .await
    .assert_status(201);
    let doomed = admin("grants", json!({"kind": "promotional", "amount": 50}))
        .send()
        .await;
    doomed.assert_status(201);
    for (op, amount) in [("increment", 30), ("decrement", 10)] {
        admin(
            "adjustments",
            json!({"pool": "credits", "op": op, "amount": amount, "reason": "ticket"}),
        )
        .send()
        .await
        .assert_status(201);
    }

    // A debit after the period ended rolls first; then a void.
    app.clock.advance(Duration::days(1) + Duration::seconds(1));
    app.debit("key_1", json!({"operation": "job", "quantity": 20}))
        .await
        .assert_status(201);
    let id = doomed.body["id"].as_str().unwrap();
    app.post(&format!("/v1/grants/{id}/void"))
        .send()
        .await
        .assert_status(200);
    let violations = audit_at(&app, app.clock.now()).await;
    assert!(
        violations.is_empty(),
        "after the void:{}",
        lines(&violations)
    );

    // A plan without the exports pool: the next roll leaves that pool allowing nothing.
    admin("plan", json!({"plan": "lite", "proration": "none"}))
        .send()
        .await
        .assert_status(200);
    app.clock.advance(Duration::days(1));
    app.available("key_1", "credits").await;
    let violations = audit_at(&app, app.clock.now()).await;
    assert!(
        violations.is_empty(),
        "after the roll:{}",
        lines(&violations)
    );

    // A reset right after a debit, in the same second: the new period starts at the whole second.
    let instant = app.clock.now().trunc_subsecs(0) + Duration::milliseconds(500);
    app.clock.freeze_at(instant);
    app.debit("key_1", json!({"operation": "job", "quantity": 5}))
        .await
        .assert_status(201);
    admin("plan", json!({"plan": "daily", "proration": "reset"}))
        .send()
        .await
        .assert_status(200);
    app.debit("key_1", json!({"operation": "job", "quantity": 3}))
        .await
        .assert_status(201);
    let violations = audit_at(&app, app.clock.now()).await;
    assert!(
        violations.is_empty(),
        "after the reset:{}",
        lines(&violations)
    );
    app.clock.unfreeze();

    // Three idle days: catch-up rolls, and the pack expires on the way.
    app.clock.advance(Duration::days(3) + Duration::hours(1));
    app.available("key_1", "credits").await;

    let kinds: Vec<String> = app
        .all_entries("key_1")
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    for kind in ["grant", "debit", "adjustment", "void", "expiration"] {
        assert!(kinds.iter().any(|k| k == kind), "a {kind} entry: {kinds:?}");
    }
    let violations = audit_at(&app, app.clock.now()).await;
    assert!(violations.is_empty(), "clean:{}", lines(&violations));
}

fn binary(database_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_credit-ledger"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .arg("audit");
    command
}

#[tokio::test]
async fn the_audit_command_exits_0_when_clean_and_1_printing_each_violation() {
    let app = ledger().await;
    let clean = binary(&app.db.url).output().unwrap();
    let stdout = String::from_utf8(clean.stdout).unwrap();
    assert_eq!(clean.status.code(), Some(0), "{stdout}");
    assert_eq!(stdout.trim_end(), "audit: clean, 17 checks");

    sql(
        &app,
        "UPDATE account_pools SET used = used + 7 WHERE key_id = 'key_b'",
    )
    .await;
    let broken = binary(&app.db.url).output().unwrap();
    let stdout = String::from_utf8(broken.stdout).unwrap();
    assert_eq!(broken.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one line per violation, then the summary: {stdout}"
    );
    assert!(
        lines[0].starts_with("used_matches_debits: key_id=key_b "),
        "{stdout}"
    );
    assert_eq!(lines[1], "audit: 1 violation in 1 check");
}

#[test]
fn the_audit_command_on_an_unreachable_database_is_a_one_line_error_and_exit_1() {
    let output = binary("postgres://postgres@127.0.0.1:1/credit_ledger")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "no audit output");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}

#[tokio::test]
async fn overage_used_that_differs_from_the_overage_entries_is_reported() {
    let app = ledger().await;
    sql(
        &app,
        "UPDATE account_pools SET overage_used = 5 WHERE key_id = 'key_a'",
    )
    .await;
    let violations = audit_now(&app).await;
    assert_only(&violations, "overage_matches_entries", &["key_a"]);
}

#[tokio::test]
async fn a_reservation_whose_hold_entries_differ_from_its_amount_is_reported() {
    let app = ledger().await;
    app.post("/v1/accounts/key_b/reservations")
        .json(json!({"cost": 10}))
        .send()
        .await
        .assert_status(201);
    assert!(audit_now(&app).await.is_empty());
    sql(
        &app,
        "UPDATE reservations SET amount = amount + 1 WHERE key_id = 'key_b'",
    )
    .await;
    let violations = audit_now(&app).await;
    assert_only(&violations, "hold_entries_match_reservation", &["key_b"]);
}

#[tokio::test]
async fn refunds_that_differ_from_the_debits_refunded_are_reported() {
    let app = ledger().await;
    let debit = app.debit("key_b", json!({"cost": 3})).await;
    let id = debit.body["id"].as_str().unwrap();
    app.post(&format!("/v1/debits/{id}/refunds"))
        .json(json!({"amount": 2}))
        .send()
        .await
        .assert_status(201);
    assert!(audit_now(&app).await.is_empty());
    sql(&app, "UPDATE refunds SET amount = amount + 1").await;
    let violations = audit_now(&app).await;
    assert_only(&violations, "refunds_match_debit", &["key_b"]);
}

#[tokio::test]
async fn a_usage_rollup_that_differs_from_the_debits_is_reported() {
    let app = ledger().await;
    sql(
        &app,
        "UPDATE usage_hourly SET credits = credits + 1 WHERE key_id = 'key_b'",
    )
    .await;
    let violations = audit_now(&app).await;
    assert_only(&violations, "usage_matches_debits", &["key_b"]);
}

#[tokio::test]
async fn allowance_used_that_differs_from_what_debits_drew_from_the_allowance_is_reported() {
    let app = ledger().await;
    // key_a's debits drew its whole allowance of 100 and then the pack.
    let used: i64 =
        sqlx::query_scalar("SELECT allowance_used FROM account_pools WHERE key_id = 'key_a'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(used, 100);
    sql(
        &app,
        "UPDATE account_pools SET allowance_used = 60 WHERE key_id = 'key_a'",
    )
    .await;
    let violations = audit_now(&app).await;
    assert_only(&violations, "allowance_used_matches_debits", &["key_a"]);
    assert!(
        violations[0].detail.contains("allowance_used is 60")
            && violations[0].detail.contains("drew 100"),
        "{}",
        violations[0]
    );
}

#[tokio::test]
async fn a_members_use_that_differs_from_its_debits_is_reported() {
    let app = ledger().await;
    app.put("/v1/accounts/key_b/members/key_m")
        .json(json!({"caps": {"credits": 50}}))
        .send()
        .await
        .assert_status(201);
    let debit = app.debit("key_m", json!({"cost": 9})).await;
    debit.assert_status(201);
    let id = debit.body["id"].as_str().unwrap();
    app.post(&format!("/v1/debits/{id}/refunds"))
        .json(json!({"amount": 4}))
        .send()
        .await
        .assert_status(201);
    assert!(audit_now(&app).await.is_empty());
    sql(
        &app,
        r#"UPDATE members SET used = '{"credits": 2}' WHERE member_key_id = 'key_m'"#,
    )
    .await;
    let violations = audit_now(&app).await;
    assert_only(&violations, "member_used_matches_debits", &["key_b"]);
    assert!(
        violations[0].detail.contains("used is 2") && violations[0].detail.contains("cost 5"),
        "{}",
        violations[0]
    );
}
