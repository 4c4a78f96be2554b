//! The life of an account's credits over time: period rolls (rule 4), grant expiry and plan
//! changes. Every function here runs inside the caller's transaction with the account's row lock
//! held, so a roll happens exactly once: a second roller waits for the lock, then finds the
//! period already moved on.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::plan::Plan;
use super::rules;
use super::types::{InvalidField, PlanId, PoolName};
use super::LedgerError;
use crate::db;
use crate::db::accounts::AccountRow;
use crate::db::grants::NewGrant;

/// What bringing an account up to date did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maintenance {
    pub rolled: usize,
    pub expired: u64,
}

fn corrupt(what: String) -> LedgerError {
    LedgerError::Database(sqlx::Error::Protocol(what))
}

pub(crate) async fn current_plan(
    conn: &mut PgConnection,
    plan_id: &str,
) -> Result<Plan, LedgerError> {
    let id = PlanId::try_from(plan_id.to_owned()).map_err(|e| corrupt(e.to_string()))?;
    db::plans::get(conn, &id, None)
        .await?
        .ok_or_else(|| corrupt(format!("plan {plan_id} of an account has no version")))
}

/// Brings a locked account up to date at `now`: rolls every period that has ended, in order, then
/// journals the grants that expired since.
pub(crate) async fn catch_up(
    conn: &mut PgConnection,
    row: &AccountRow,
    now: DateTime<Utc>,
) -> Result<Maintenance, LedgerError> {
    let mut done = Maintenance::default();
    if row.period_end <= now {
        let plan = current_plan(conn, &row.plan_id).await?;
        let periods = rules::periods_after(row.billing_anchor, plan.interval, row.period_end, now)
            .ok_or_else(|| corrupt(format!("periods of {} leave the calendar", row.key_id)))?;
        let mut old_start = row.period_start;
        for period in periods {
            // Holds that lapsed before the boundary return first, so their allowance counts as
            // unused when the roll looks.
            super::holds::release_lapsed(conn, &row.key_id, period.start, now).await?;
            roll_to(
                conn,
                &row.key_id,
                old_start,
                &plan,
                row.billing_anchor,
                period.start,
                period.end,
                false,
                now,
            )
            .await?;
            old_start = period.start;
            done.rolled += 1;
        }
        if done.rolled > 0 {
            metrics::counter!("period_rolls_total").increment(done.rolled as u64);
            tracing::info!(key_id = %row.key_id, periods = done.rolled, "period rolled");
        }
    }
    super::holds::release_lapsed(conn, &row.key_id, now, now).await?;
    let expired = db::grants::expire_due(conn, &row.key_id, now, false, now).await?;
    super::events::grants_expired(conn, &row.key_id, &expired, now).await?;
    done.expired = expired.len() as u64;
    add_missing_pools(conn, &row.key_id, now).await?;
    Ok(done)
}

/// Pools a newer version of the account's plan added get counters now (limited ones allow
/// nothing until the next period grants their allowance; unlimited ones are unlimited at once),
/// so debits priced in them work before the next roll.
async fn add_missing_pools(
    conn: &mut PgConnection,
    key_id: &str,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let Some(row) = db::accounts::get(conn, key_id).await? else {
        return Ok(());
    };
    let plan = current_plan(conn, &row.plan_id).await?;
    let existing = db::accounts::pools_of(conn, std::slice::from_ref(&row.key_id)).await?;
    for (pool, spec) in &plan.pools {
        if existing.iter().any(|p| p.pool == pool.as_str()) {
            continue;
        }
        let allowance = spec.allowance.map(|_| 0);
        db::accounts::set_pool_terms(
            conn,
            key_id,
            pool.as_str(),
            allowance,
            spec.overage_limit,
            row.period_start,
        )
        .await?;
        tracing::info!(key_id, pool = %pool, at = %now, "pool added by a plan change");
    }
    Ok(())
}

/// One period roll to `[new_start, new_end)` on `plan`: the unused allowance of the period that
/// started at `old_start` becomes a rollover grant of at most the plan's cap, expiring with the
/// new period; the old allowance and rollover grants (and anything else due by `new_start`)
/// expire with expiration entries; the new allowance is granted and the pool's counters restart.
/// `close_early` expires the old period's allowance and rollover even though their expiry lies
/// ahead (a plan change with proration `reset`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn roll_to(
    conn: &mut PgConnection,
    key_id: &str,
    old_start: DateTime<Utc>,
    plan: &Plan,
    anchor: DateTime<Utc>,
    new_start: DateTime<Utc>,
    new_end: DateTime<Utc>,
    close_early: bool,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let rows = db::accounts::pools_of(conn, &[key_id.to_owned()]).await?;
    let mut pools: BTreeSet<PoolName> = plan.pools.keys().cloned().collect();
    for row in rows {
        pools.insert(PoolName::try_from(row.pool).map_err(|e| corrupt(e.to_string()))?);
    }

    // What each pool carries over, read before the old grants expire.
    let mut carried = Vec::with_capacity(pools.len());
    for pool in &pools {
        let cap = plan
            .pools
            .get(pool)
            .filter(|spec| spec.allowance.is_some())
            .and_then(|spec| spec.rollover_cap);
        let unused =
            match db::grants::allowance_of_period(conn, key_id, pool.as_str(), old_start).await? {
                Some(grant) if grant.voided_at.is_none() => grant.remaining,
                _ => 0,
            };
        carried.push((pool, rules::rollover_amount(unused, cap)));
    }

    let expired = db::grants::expire_due(conn, key_id, new_start, close_early, now).await?;
    super::events::grants_expired(conn, key_id, &expired, now).await?;

    // The period's overage is recorded for billing in an entry of its own; the new period
    // starts from zero overage.
    let counters = db::accounts::pools_of(conn, &[key_id.to_owned()]).await?;
    let summary: Vec<serde_json::Value> = carried
        .iter()
        .map(|(pool, rollover)| {
            let expired: i64 = expired
                .iter()
                .filter(|e| e.pool == pool.as_str())
                .map(|e| e.amount)
                .sum();
            let overage = counters
                .iter()
                .find(|c| c.pool == pool.as_str())
                .map_or(0, |c| c.overage_used);
            serde_json::json!({"pool": pool, "carried": rollover, "expired": expired,
                               "overage": overage})
        })
        .collect();
    super::events::period_rolled(conn, key_id, old_start, new_start, new_end, summary, now).await?;
    for pool in counters.iter().filter(|p| p.overage_used > 0) {
        db::entries::insert(
            conn,
            &db::entries::NewEntry {
                key_id,
                pool: &pool.pool,
                kind: "overage",
                amount: pool.overage_used,
                balance_after: None,
                operation: None,
                debit_id: None,
                metadata: &serde_json::json!({
                    "settled": pool.overage_used,
                    "period_start": old_start,
                    "period_end": new_start,
                }),
                now,
            },
        )
        .await?;
    }

    let empty = serde_json::json!({});
    for (pool, rollover) in carried {
        let spec = plan.pools.get(pool);
        let grant = |kind: &'static str, amount: i64| NewGrant {
            key_id,
            id: Uuid::now_v7(),
            pool: pool.as_str(),
            kind,
            amount,
            effective_at: new_start,
            expires_at: Some(new_end),
            priority: 0,
            period_start: Some(new_start),
            metadata: &empty,
            entry_kind: "grant",
            adjustment_id: None,
            balance_at: new_start,
            now,
        };
        if rollover > 0 {
            db::grants::insert(conn, &grant("rollover", rollover)).await?;
        }
        // A pool the plan no longer has keeps its packs but gets no allowance.
        let allowance = spec.map_or(Some(0), |s| s.allowance);
        if let (Some(_), Some(amount)) = (spec, allowance) {
            db::grants::insert(conn, &grant("allowance", amount)).await?;
        }
        db::accounts::reset_pool(
            conn,
            key_id,
            pool.as_str(),
            allowance,
            spec.map_or(0, |s| s.overage_limit),
            new_start,
        )
        .await?;
    }
    db::accounts::set_period(
        conn,
        key_id,
        plan.id.as_str(),
        anchor,
        new_start,
        new_end,
        now,
    )
    .await?;
    Ok(())
}

/// How a plan change treats the period in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proration {
    /// Keep this period's allowance; the new plan's allowance comes with the next period.
    /// Prices change at once.
    None,
    /// Grant (or remove) the difference between the plans' allowances now.
    Difference,
    /// Close the period now and start a new one on the new plan, anchored now.
    Reset,
}

/// Moves a locked, up-to-date account to `plan`.
pub(crate) async fn change_plan(
    conn: &mut PgConnection,
    row: &AccountRow,
    plan: &Plan,
    proration: Proration,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let old_plan = current_plan(conn, &row.plan_id).await?;
    let key_id = row.key_id.as_str();
    match proration {
        Proration::None => {
            // Periods follow the new plan's interval from the end of this one.
            let anchor = if old_plan.interval == plan.interval {
                row.billing_anchor
            } else {
                row.period_end
            };
            let existing = db::accounts::pools_of(conn, std::slice::from_ref(&row.key_id)).await?;
            for pool in plan.pools.keys() {
                if !existing.iter().any(|p| p.pool == pool.as_str()) {
                    // A pool new to the account allows nothing until the next period.
                    db::accounts::set_pool_terms(
                        conn,
                        key_id,
                        pool.as_str(),
                        Some(0),
                        0,
                        row.period_start,
                    )
                    .await?;
                }
            }
            db::accounts::set_period(
                conn,
                key_id,
                plan.id.as_str(),
                anchor,
                row.period_start,
                row.period_end,
                now,
            )
            .await?;
        }
        Proration::Difference => {
            if old_plan.interval != plan.interval {
                return Err(LedgerError::Invalid(InvalidField::new(
                    "proration",
                    format!(
                        "difference needs plans with the same interval ({} → {}); use none or reset",
                        old_plan.interval.as_str(),
                        plan.interval.as_str()
                    ),
                )));
            }
            prorate_difference(conn, row, plan, now).await?;
            db::accounts::set_period(
                conn,
                key_id,
                plan.id.as_str(),
                row.billing_anchor,
                row.period_start,
                row.period_end,
                now,
            )
            .await?;
        }
        Proration::Reset => {
            // Anchored at this very instant (to the microsecond), so a second reset within the
            // same second still opens a period of its own.
            let anchor = now;
            if anchor <= row.period_start {
                return Err(LedgerError::Conflict {
                    code: "period_just_started",
                    message: format!(
                        "the period of account {} started at this very instant; retry the reset",
                        row.key_id
                    ),
                });
            }
            let period = rules::period_containing(anchor, plan.interval, now)
                .ok_or_else(|| corrupt("a period from now leaves the calendar".into()))?;
            roll_to(
                conn,
                key_id,
                row.period_start,
                plan,
                anchor,
                period.start,
                period.end,
                true,
                now,
            )
            .await?;
        }
    }
    Ok(())
}

async fn prorate_difference(
    conn: &mut PgConnection,
    row: &AccountRow,
    plan: &Plan,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let key_id = row.key_id.as_str();
    let existing = db::accounts::pools_of(conn, std::slice::from_ref(&row.key_id)).await?;
    let mut pools: BTreeSet<String> = existing.iter().map(|p| p.pool.clone()).collect();
    pools.extend(plan.pools.keys().map(|p| p.to_string()));
    for pool in pools {
        let spec = PoolName::try_from(pool.clone())
            .ok()
            .and_then(|name| plan.pools.get(&name).cloned());
        let old = existing
            .iter()
            .find(|p| p.pool == pool)
            .map_or(Some(0), |p| p.allowance);
        let new = spec.as_ref().map_or(Some(0), |s| s.allowance);
        let overage_limit = spec.as_ref().map_or(0, |s| s.overage_limit);
        if let Some(new_allowance) = new {
            let diff = new_allowance - old.unwrap_or(0);
            let grant =
                db::grants::allowance_of_period(conn, key_id, &pool, row.period_start).await?;
            match grant {
                Some(grant) if grant.voided_at.is_some() => {}
                Some(grant) => {
                    // What the grant already gave (debits, holds) counts against the new
                    // allowance, and stays inside its amount so a refund or a released hold
                    // always fits back in. Computed from the grant, a cut that went below zero
                    // is not forgotten by a later raise.
                    let given = grant.amount - grant.remaining;
                    let remaining = (new_allowance - given).max(0);
                    let amount = new_allowance.max(given);
                    let others =
                        db::grants::available(conn, key_id, &pool, now).await? - grant.remaining;
                    db::grants::resize(
                        conn,
                        key_id,
                        &grant,
                        amount,
                        remaining,
                        Some(others + remaining),
                        now,
                    )
                    .await?;
                }
                None if diff > 0 => {
                    let empty = serde_json::json!({});
                    db::grants::insert(
                        conn,
                        &NewGrant {
                            key_id,
                            id: Uuid::now_v7(),
                            pool: &pool,
                            kind: "allowance",
                            amount: diff,
                            effective_at: row.period_start,
                            expires_at: Some(row.period_end),
                            priority: 0,
                            period_start: Some(row.period_start),
                            metadata: &empty,
                            entry_kind: "grant",
                            adjustment_id: None,
                            balance_at: now,
                            now,
                        },
                    )
                    .await?;
                }
                None => {}
            }
        }
        db::accounts::set_pool_terms(conn, key_id, &pool, new, overage_limit, row.period_start)
            .await?;
    }
    Ok(())
}

/// Grants the allowance of every limited pool of the plan for a new account's first period.
pub(crate) async fn open_account_pools(
    conn: &mut PgConnection,
    key_id: &str,
    plan: &Plan,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let empty = serde_json::json!({});
    for (pool, spec) in &plan.pools {
        db::accounts::insert_pool(
            conn,
            key_id,
            pool.as_str(),
            spec.allowance,
            spec.overage_limit,
            start,
        )
        .await?;
        if let Some(allowance) = spec.allowance {
            db::grants::insert(
                conn,
                &NewGrant {
                    key_id,
                    id: Uuid::now_v7(),
                    pool: pool.as_str(),
                    kind: "allowance",
                    amount: allowance,
                    effective_at: start,
                    expires_at: Some(end),
                    priority: 0,
                    period_start: Some(start),
                    metadata: &empty,
                    entry_kind: "grant",
                    adjustment_id: None,
                    balance_at: now,
                    now,
                },
            )
            .await?;
        }
    }
    Ok(())
}
