//! Account states in sets: one round trip loads (and row-locks) the states of every account a
//! batch touches (`ledger_load_states`); one call writes back the effects of every command
//! applied to them, whatever their number (`ledger_persist`). Both are storage functions in
//! `migrations/`; neither decides anything about money.
//!
//! States come back as one JSON document per account (`to_jsonb`), and effects go as one JSON
//! document of rows per table (`jsonb_populate_recordset`), so a state's records are the same
//! Rust types in memory and in both directions, and the statements stay fixed whatever the batch
//! holds. The writer sends BEGIN with the load and COMMIT with the persist (the simple query
//! protocol, hence the arguments as literals), so a batch costs two round trips.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{Executor, PgConnection, Row};
use uuid::Uuid;

use crate::ledger::plan::Plan;
use crate::ledger::state::{
    AccountRecord, AccountState, AlertRecord, DebitRecord, Effects, GrantRecord, IdempotencyRecord,
    MemberRecord, PoolCounters, RefundRecord, ReservationRecord,
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
    /// Member keys whose records (caps, use) the commands need: the makers of debits and holds.
    pub members: Vec<String>,
    /// Load spent grants that never expire too: a balance lists every active grant, but no
    /// command changes a spent one unless it names it.
    pub with_spent: bool,
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
    #[serde(default)]
    members: Vec<MemberRecord>,
}

impl From<StoredState> for AccountState {
    fn from(s: StoredState) -> Self {
        let mut state = AccountState {
            account: s.account,
            plan: s.plan,
            base_plan: None,
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
            members: s
                .members
                .into_iter()
                .map(|m| (m.member_key_id.clone(), m))
                .collect(),
            effects: Effects::default(),
        };
        // The terms every rule reads are the plan with the account's overrides applied.
        if state.account.overrides.is_some() {
            let written = state.plan.clone();
            state.set_plan(&written);
        }
        state
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

impl Selection {
    /// The call of `ledger_load_states` for this selection, its arrays as literals (for the
    /// simple query protocol, which carries no parameters).
    fn call(&self, lock: Lock) -> String {
        let uuids = |ids: &[Uuid]| array_literal(ids.iter().map(Uuid::to_string), "uuid");
        format!(
            "SELECT account_key, state FROM ledger_load_states({}, {}, {}, {}, {}, {}, {}, {}, {})",
            array_literal(self.keys.iter().cloned(), "text"),
            uuids(&self.reservations),
            uuids(&self.debits),
            uuids(&self.grants),
            array_literal(self.idempotency_keys.iter().cloned(), "text"),
            lock != Lock::None,
            lock == Lock::SkipLocked,
            self.with_spent,
            array_literal(self.members.iter().cloned(), "text"),
        )
    }
}

/// An array as an SQL literal: each element double-quoted with `\` and `"` escaped (the array
/// syntax), the whole dollar-quoted (see `literal`) and cast to `element[]`.
fn array_literal(items: impl Iterator<Item = String>, element: &str) -> String {
    let mut text = String::from("{");
    for (i, item) in items.enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                text.push('\\');
            }
            text.push(c);
        }
        text.push('"');
    }
    text.push('}');
    format!("{}::{element}[]", dollar_quoted(&text))
}

fn states(rows: Vec<(String, Json<StoredState>)>) -> Vec<AccountState> {
    rows.into_iter().map(|(_, Json(s))| s.into()).collect()
}

/// The states of the selected accounts, in key order.
pub async fn load(
    conn: &mut PgConnection,
    selection: &Selection,
    lock: Lock,
) -> Result<Vec<AccountState>, sqlx::Error> {
    let rows = sqlx::query_as(
        "SELECT account_key, state FROM ledger_load_states($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&selection.keys)
    .bind(&selection.reservations)
    .bind(&selection.debits)
    .bind(&selection.grants)
    .bind(&selection.idempotency_keys)
    .bind(lock != Lock::None)
    .bind(lock == Lock::SkipLocked)
    .bind(selection.with_spent)
    .bind(&selection.members)
    .fetch_all(conn)
    .await?;
    Ok(states(rows))
}

/// Text as a dollar-quoted SQL string. A dollar-quoted string has no escapes: it ends only at
/// its tag, and the tag chosen does not occur in the text, so nothing in it can end it early.
fn dollar_quoted(text: &str) -> String {
    let mut tag = "$q$".to_owned();
    let mut n = 0u64;
    while text.contains(&tag) {
        n += 1;
        tag = format!("$q{n}$");
    }
    format!("{tag}{text}{tag}")
}

/// A JSON document as an SQL literal.
fn literal(document: &Value) -> String {
    format!("{}::jsonb", dollar_quoted(&document.to_string()))
}

/// Begins a transaction and loads and row-locks the selected accounts' states, in one round
/// trip: both statements go in one message (the simple query protocol, hence the document as a
/// literal). The caller must end the transaction (`persist_and_commit` or `rollback`).
pub async fn begin_and_load(
    conn: &mut PgConnection,
    selection: &Selection,
) -> Result<Vec<AccountState>, sqlx::Error> {
    let sql = format!("BEGIN; {}", selection.call(Lock::Wait));
    let rows = conn.fetch_all(sqlx::raw_sql(&sql)).await?;
    let rows = rows
        .iter()
        .map(|row| Ok((row.try_get("account_key")?, row.try_get("state")?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(states(rows))
}

/// Writes the effects of every state and commits the transaction `begin_and_load` began, in one
/// round trip. On an error the transaction is left failed: roll it back.
pub async fn persist_and_commit<'a>(
    conn: &mut PgConnection,
    states: impl IntoIterator<Item = &'a AccountState>,
) -> Result<(), PersistError> {
    let sql = match document(states)? {
        Some(doc) => format!("SELECT ledger_persist({}); COMMIT", literal(&doc)),
        None => "COMMIT".to_owned(),
    };
    conn.execute(sqlx::raw_sql(&sql)).await?;
    Ok(())
}

/// Ends a transaction `begin_and_load` began without writing anything.
pub async fn rollback(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    conn.execute(sqlx::raw_sql("ROLLBACK")).await?;
    Ok(())
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
    auto_top_ups: Vec<Value>,
    top_up_settlements: Vec<Value>,
    members: Vec<Value>,
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
        for request in &e.top_up_requests {
            self.auto_top_ups.push(row(key, request)?);
        }
        for settlement in &e.top_up_settlements {
            self.top_up_settlements.push(row(key, settlement)?);
        }
        for member in &e.members {
            if let Some(m) = state.members.get(member) {
                self.members.push(row(key, m)?);
            }
        }
        Ok(())
    }
}

/// Why the effects could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("effects do not encode: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The document `ledger_persist` takes: the rows to write, per table. `None` when no state has
/// an effect.
fn document<'a>(
    states: impl IntoIterator<Item = &'a AccountState>,
) -> Result<Option<Value>, PersistError> {
    let mut rows = Rows::default();
    let mut any = false;
    for state in states {
        if !state.effects.is_empty() {
            any = true;
            rows.add(state)?;
        }
    }
    if !any {
        return Ok(None);
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
        auto_top_ups,
        top_up_settlements,
        members,
    } = rows;
    let mut doc = serde_json::Map::new();
    for (name, rows) in [
        ("new_accounts", new_accounts),
        ("changed_accounts", changed_accounts),
        ("pools", pools),
        ("grants", grants),
        ("entries", entries),
        ("debits", debits),
        ("reservations", reservations),
        ("refunds", refunds),
        ("adjustments", adjustments),
        ("events", events),
        ("usage", usage),
        ("idempotency", idempotency),
        ("alerts", alerts),
        ("auto_top_ups", auto_top_ups),
        ("top_up_settlements", top_up_settlements),
        ("members", members),
    ] {
        // `ledger_persist` runs a statement only for the kinds of rows present.
        if !rows.is_empty() {
            doc.insert(name.to_owned(), Value::Array(rows));
        }
    }
    Ok(Some(Value::Object(doc)))
}

/// Writes the effects of every state in one statement, inside the caller's transaction. Does
/// nothing when there are none.
pub async fn persist<'a>(
    conn: &mut PgConnection,
    states: impl IntoIterator<Item = &'a AccountState>,
) -> Result<(), PersistError> {
    if let Some(doc) = document(states)? {
        sqlx::query("SELECT ledger_persist($1)")
            .bind(Json(doc))
            .execute(conn)
            .await?;
    }
    Ok(())
}
