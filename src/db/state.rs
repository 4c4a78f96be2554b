//! Account states in sets: one round trip loads (and row-locks) the states of every account a
//! batch touches; one statement writes back the effects of every command applied to them,
//! whatever their number.
//!
//! Rows travel as JSON arrays of records (`jsonb_populate_recordset` on the way in,
//! `to_jsonb` on the way out), so a state's records are the same Rust types in memory and in
//! both directions, and the statements stay fixed whatever the batch holds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ledger::plan::Plan;
use crate::ledger::state::{
    AccountRecord, AccountState, AlertRecord, DebitRecord, Effects, GrantRecord, IdempotencyRecord,
    PoolCounters, RefundRecord, ReservationRecord,
};
use crate::ledger::types::KeyId;

/// What a load names: accounts by key, and accounts through what they own.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub keys: Vec<String>,
    pub reservations: Vec<Uuid>,
    pub debits: Vec<Uuid>,
    pub grants: Vec<Uuid>,
    pub idempotency_keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct StoredState {
    account: AccountRecord,
    plan: Plan,
    pools: Vec<PoolCounters>,
    grants: Vec<GrantRecord>,
    reservations: Vec<ReservationRecord>,
    debits: Vec<DebitRecord>,
    refunds: Vec<RefundRecord>,
    idempotency: Vec<IdempotencyRecord>,
    alerts: Vec<AlertRecord>,
}

impl From<StoredState> for AccountState {
    fn from(s: StoredState) -> Self {
        AccountState {
            account: s.account,
            plan: s.plan,
            pools: s.pools.into_iter().map(|p| (p.pool.clone(), p)).collect(),
            grants: s.grants,
            reservations: s.reservations,
            debits: s.debits,
            refunds: s.refunds,
            idempotency: s
                .idempotency
                .into_iter()
                .map(|i| (i.key.clone(), i))
                .collect(),
            alerts: s
                .alerts
                .into_iter()
                .map(|a| ((a.pool.clone(), a.period_start), a))
                .collect(),
            effects: Effects::default(),
        }
    }
}

/// How a load treats the accounts' row locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// A read of the committed state.
    None,
    /// Row-locked until the end of the caller's transaction, waiting for other holders.
    Wait,
    /// Row-locked, leaving out accounts another transaction holds.
    SkipLocked,
}

/// The states of the selected accounts, in key order.
pub async fn load(
    conn: &mut PgConnection,
    selection: &Selection,
    lock: Lock,
) -> Result<Vec<AccountState>, sqlx::Error> {
    let rows: Vec<(String, Json<StoredState>)> = sqlx::query_as(
        "SELECT account_key, state FROM ledger_load_states($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&selection.keys)
    .bind(&selection.reservations)
    .bind(&selection.debits)
    .bind(&selection.grants)
    .bind(&selection.idempotency_keys)
    .bind(lock != Lock::None)
    .bind(lock == Lock::SkipLocked)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(_, Json(s))| s.into()).collect())
}

/// A record with the key of its account, as the tables store it.
#[derive(Serialize)]
struct Keyed<'a, T: Serialize> {
    key_id: &'a KeyId,
    #[serde(flatten)]
    row: &'a T,
}

#[derive(Default)]
struct Rows {
    new_accounts: Vec<Value>,
    changed_accounts: Vec<Value>,
    pools: Vec<Value>,
    grants: Vec<Value>,
    entries: Vec<Value>,
    debits: Vec<Value>,
    reservations: Vec<Value>,
    refunds: Vec<Value>,
    adjustments: Vec<Value>,
    events: Vec<Value>,
    usage: Vec<Value>,
    idempotency: Vec<Value>,
    alerts: Vec<Value>,
}

fn row<T: Serialize>(key_id: &KeyId, row: &T) -> Result<Value, serde_json::Error> {
    serde_json::to_value(Keyed { key_id, row })
}

impl Rows {
    fn add(&mut self, state: &AccountState) -> Result<(), serde_json::Error> {
        let key = state.key_id();
        let e = &state.effects;
        if e.account_created {
            self.new_accounts
                .push(serde_json::to_value(&state.account)?);
        } else if e.account_changed {
            self.changed_accounts
                .push(serde_json::to_value(&state.account)?);
        }
        for pool in &e.pools {
            if let Some(p) = state.pools.get(pool) {
                self.pools.push(row(key, p)?);
            }
        }
        for id in &e.grants {
            if let Some(g) = state.grants.iter().find(|g| g.id == *id) {
                self.grants.push(row(key, g)?);
            }
        }
        for entry in &e.entries {
            self.entries.push(row(key, entry)?);
        }
        for id in &e.debits {
            if let Some(d) = state.debits.iter().find(|d| d.id == *id) {
                self.debits.push(row(key, d)?);
            }
        }
        for id in &e.reservations {
            if let Some(r) = state.reservations.iter().find(|r| r.id == *id) {
                self.reservations.push(row(key, r)?);
            }
        }
        for refund in &e.refunds {
            self.refunds.push(row(key, refund)?);
        }
        for adjustment in &e.adjustments {
            self.adjustments.push(row(key, adjustment)?);
        }
        for event in &e.events {
            self.events.push(row(key, event)?);
        }
        for (bucket, count) in &e.usage {
            let mut value = row(key, bucket)?;
            if let Value::Object(map) = &mut value {
                map.insert("credits".into(), count.credits.into());
                map.insert("count".into(), count.count.into());
            }
            self.usage.push(value);
        }
        for k in &e.idempotency {
            if let Some(record) = state.idempotency.get(k) {
                let mut value = serde_json::to_value(record)?;
                if let Value::Object(map) = &mut value {
                    map.insert("scope".into(), key.as_str().into());
                }
                self.idempotency.push(value);
            }
        }
        let alerts: BTreeMap<_, _> = e
            .alerts
            .iter()
            .filter_map(|k| state.alerts.get(k).map(|a| (k, a)))
            .collect();
        for alert in alerts.values() {
            self.alerts.push(row(key, alert)?);
        }
        Ok(())
    }
}

const PERSIST: &str = "
WITH
w_new_accounts AS (
    INSERT INTO accounts (key_id, plan_id, billing_anchor, period_start, period_end, external_id,
                          metadata, created_at, updated_at, shared)
    SELECT key_id, plan_id, billing_anchor, period_start, period_end, external_id, metadata,
           created_at, updated_at, shared
      FROM jsonb_populate_recordset(NULL::accounts, $1)),
w_accounts AS (
    UPDATE accounts a
       SET plan_id = r.plan_id, billing_anchor = r.billing_anchor, period_start = r.period_start,
           period_end = r.period_end, external_id = r.external_id, metadata = r.metadata,
           updated_at = r.updated_at, shared = r.shared
      FROM jsonb_populate_recordset(NULL::accounts, $2) r
     WHERE a.key_id = r.key_id),
w_pools AS (
    INSERT INTO account_pools (key_id, pool, allowance, used, overage_limit, overage_used,
                               period_start)
    SELECT key_id, pool, allowance, used, overage_limit, overage_used, period_start
      FROM jsonb_populate_recordset(NULL::account_pools, $3)
    ON CONFLICT (key_id, pool) DO UPDATE
       SET allowance = EXCLUDED.allowance, used = EXCLUDED.used,
           overage_limit = EXCLUDED.overage_limit, overage_used = EXCLUDED.overage_used,
           period_start = EXCLUDED.period_start),
w_grants AS (
    INSERT INTO grants (key_id, id, pool, kind, amount, remaining, effective_at, expires_at,
                        priority, period_start, metadata, created_at, voided_at)
    SELECT key_id, id, pool, kind, amount, remaining, effective_at, expires_at, priority,
           period_start, metadata, created_at, voided_at
      FROM jsonb_populate_recordset(NULL::grants, $4)
    ON CONFLICT (key_id, id) DO UPDATE
       SET amount = EXCLUDED.amount, remaining = EXCLUDED.remaining,
           expires_at = EXCLUDED.expires_at, voided_at = EXCLUDED.voided_at),
w_entries AS (
    INSERT INTO entries (key_id, pool, kind, amount, balance_after, grant_id, operation, debit_id,
                         reservation_id, metadata, created_at, adjustment_id, source_key_id)
    SELECT e.key_id, e.pool, e.kind, e.amount, e.balance_after, e.grant_id, e.operation,
           e.debit_id, e.reservation_id, e.metadata, e.created_at, e.adjustment_id,
           e.source_key_id
      FROM jsonb_populate_recordset(NULL::entries, $5) WITH ORDINALITY e
     ORDER BY e.ordinality),
w_debits AS (
    INSERT INTO debits (key_id, id, pool, operation, quantity, cost, plan_id, plan_version,
                        remaining, reset_at, drawn, metadata, created_at, reservation_id, refunded,
                        overage, source_key_id)
    SELECT key_id, id, pool, operation, quantity, cost, plan_id, plan_version, remaining, reset_at,
           drawn, metadata, created_at, reservation_id, refunded, overage, source_key_id
      FROM jsonb_populate_recordset(NULL::debits, $6)
    ON CONFLICT (key_id, id) DO UPDATE SET refunded = EXCLUDED.refunded),
w_reservations AS (
    INSERT INTO reservations (key_id, id, pool, operation, quantity, amount, status, expires_at,
                              plan_id, plan_version, drawn, metadata, debit_id, committed_amount,
                              created_at, updated_at)
    SELECT key_id, id, pool, operation, quantity, amount, status, expires_at, plan_id,
           plan_version, drawn, metadata, debit_id, committed_amount, created_at, updated_at
      FROM jsonb_populate_recordset(NULL::reservations, $7)
    ON CONFLICT (key_id, id) DO UPDATE
       SET status = EXCLUDED.status, debit_id = EXCLUDED.debit_id,
           committed_amount = EXCLUDED.committed_amount, updated_at = EXCLUDED.updated_at),
w_refunds AS (
    INSERT INTO refunds (key_id, id, debit_id, pool, amount, reason, parts, created_at)
    SELECT key_id, id, debit_id, pool, amount, reason, parts, created_at
      FROM jsonb_populate_recordset(NULL::refunds, $8)),
w_adjustments AS (
    INSERT INTO adjustments (key_id, id, pool, op, amount, delta, reason, available_after,
                             created_at)
    SELECT key_id, id, pool, op, amount, delta, reason, available_after, created_at
      FROM jsonb_populate_recordset(NULL::adjustments, $9)),
w_events AS (
    INSERT INTO events (key_id, id, type, payload, created_at)
    SELECT e.key_id, e.id, e.type, e.payload, e.created_at
      FROM jsonb_populate_recordset(NULL::events, $10) WITH ORDINALITY e
     ORDER BY e.ordinality
    RETURNING key_id, id, seq, type, created_at),
w_deliveries AS (
    INSERT INTO webhook_deliveries (key_id, endpoint_id, event_id, event_seq, event_type, status,
                                    next_attempt_at, created_at)
    SELECT ev.key_id, w.id, ev.id, ev.seq, ev.type, 'pending', ev.created_at, ev.created_at
      FROM w_events ev
      JOIN webhook_endpoints w ON cardinality(w.events) = 0 OR ev.type = ANY (w.events)),
w_usage AS (
    INSERT INTO usage_hourly (key_id, hour, pool, operation, source_key_id, credits, count)
    SELECT key_id, hour, pool, operation, source_key_id, credits, count
      FROM jsonb_populate_recordset(NULL::usage_hourly, $11)
    ON CONFLICT (key_id, hour, pool, operation, source_key_id) DO UPDATE
       SET credits = usage_hourly.credits + EXCLUDED.credits,
           count = usage_hourly.count + EXCLUDED.count),
w_idempotency AS (
    INSERT INTO idempotency_keys (scope, key, request_hash, status, response, created_at)
    SELECT scope, key, request_hash, 1, response, created_at
      FROM jsonb_populate_recordset(NULL::idempotency_keys, $12)),
w_alerts AS (
    INSERT INTO pool_alerts (key_id, pool, period_start, thresholds_reached, thresholds_resolved,
                             exhausted_at)
    SELECT key_id, pool, period_start, thresholds_reached, thresholds_resolved, exhausted_at
      FROM jsonb_populate_recordset(NULL::pool_alerts, $13)
    ON CONFLICT (key_id, pool, period_start) DO UPDATE
       SET thresholds_reached = EXCLUDED.thresholds_reached,
           thresholds_resolved = EXCLUDED.thresholds_resolved,
           exhausted_at = EXCLUDED.exhausted_at)
SELECT 1";

/// Why the effects could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("effects do not encode: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Writes the effects of every state in one statement. Does nothing when there are none.
pub async fn persist<'a>(
    conn: &mut PgConnection,
    states: impl IntoIterator<Item = &'a AccountState>,
) -> Result<(), PersistError> {
    let mut rows = Rows::default();
    let mut any = false;
    for state in states {
        if !state.effects.is_empty() {
            any = true;
            rows.add(state)?;
        }
    }
    if !any {
        return Ok(());
    }
    let Rows {
        new_accounts,
        changed_accounts,
        pools,
        grants,
        entries,
        debits,
        reservations,
        refunds,
        adjustments,
        events,
        usage,
        idempotency,
        alerts,
    } = rows;
    sqlx::query(PERSIST)
        .bind(Json(new_accounts))
        .bind(Json(changed_accounts))
        .bind(Json(pools))
        .bind(Json(grants))
        .bind(Json(entries))
        .bind(Json(debits))
        .bind(Json(reservations))
        .bind(Json(refunds))
        .bind(Json(adjustments))
        .bind(Json(events))
        .bind(Json(usage))
        .bind(Json(idempotency))
        .bind(Json(alerts))
        .execute(conn)
        .await?;
    Ok(())
}
