//! Ledger operations: each is one transaction (or one SQL function call) that reads, applies the
//! rules and writes its journal entries together.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::{PgConnection, PgPool};
use tracing::instrument;
use uuid::Uuid;

use super::model::{Account, Balance, Debit, EntryPage, GrantSummary, PeriodView, PoolBalance};
use super::plan::{Plan, PlanDefinition};
use super::rules::{self, DebitSpec, OrderKey, PriceError};
use super::types::{InvalidField, KeyId, PlanId, PoolName};
use super::{Clock, Exhausted, LedgerError};
use crate::db;
use crate::db::accounts::{AccountRow, GrantRow, NewAccount, PoolRow};
use crate::db::idempotency::Claim;

use super::lifecycle::{self, Maintenance};

/// How often a debit is priced again when the account changed plan between the read and the
/// write. One retry is almost always enough; the bound keeps a pathological loop finite.
const STALE_PLAN_RETRIES: usize = 5;

/// The ledger: a database pool and a clock.
#[derive(Debug, Clone)]
pub struct Ledger {
    db: PgPool,
    clock: Clock,
}

/// What an account PUT asks for. `None` leaves a field as it is on update.
#[derive(Debug, Clone)]
pub struct AccountInput {
    pub plan: PlanId,
    pub billing_anchor: Option<DateTime<Utc>>,
    /// `Some(None)` clears the external id.
    pub external_id: Option<Option<String>>,
    pub metadata: Option<serde_json::Value>,
    /// Whether every Unkey key of the customer (`external_id`) draws from this account.
    pub shared: Option<bool>,
}

/// A debit request after validation.
#[derive(Debug, Clone)]
pub struct DebitRequest {
    pub spec: DebitSpec,
    pub metadata: serde_json::Value,
    pub dry_run: bool,
    /// The Unkey keyId that made the debit, when it came through `/v1/verify`.
    pub source_key_id: Option<String>,
}

/// An Idempotency-Key with the hash of the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

#[derive(Debug, Clone)]
pub enum DebitOutcome {
    /// A new debit (or, with `dry_run`, what it would be).
    Accepted(Box<Debit>),
    /// The stored answer to an earlier request with the same key and parameters.
    Replayed {
        status: u16,
        body: serde_json::Value,
    },
}

impl Ledger {
    pub fn new(db: PgPool, clock: Clock) -> Self {
        Self { db, clock }
    }

    pub fn db(&self) -> &PgPool {
        &self.db
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Creates or replaces a plan. A definition equal to the latest version changes nothing;
    /// any other makes a new version. Returns the plan and whether a version was written.
    #[instrument(skip_all, fields(plan_id = %id))]
    pub async fn put_plan(
        &self,
        id: &PlanId,
        definition: PlanDefinition,
    ) -> Result<(Plan, bool), LedgerError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let latest = db::plans::lock_head(&mut tx, id, now).await?;
        if latest > 0 {
            if let Some(current) = db::plans::get(&mut tx, id, Some(latest)).await? {
                if current.definition == definition {
                    tx.rollback().await?;
                    return Ok((current, false));
                }
            }
        }
        let plan = db::plans::insert_version(&mut tx, id, latest + 1, &definition, now).await?;
        tx.commit().await?;
        Ok((plan, true))
    }

    pub async fn get_plan(&self, id: &PlanId, version: Option<i32>) -> Result<Plan, LedgerError> {
        let mut conn = self.db.acquire().await?;
        db::plans::get(&mut conn, id, version)
            .await?
            .ok_or_else(|| LedgerError::PlanNotFound(id.clone()))
    }

    pub async fn list_plans(&self) -> Result<Vec<Plan>, LedgerError> {
        let mut conn = self.db.acquire().await?;
        Ok(db::plans::list(&mut conn).await?)
    }

    /// Creates an account (granting the allowance of the period that contains now) or updates its
    /// details. Returns the account and whether it was created.
    #[instrument(skip_all, fields(key_id = %key_id))]
    pub async fn put_account(
        &self,
        key_id: &KeyId,
        input: AccountInput,
    ) -> Result<(Account, bool), LedgerError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let plan = db::plans::get(&mut tx, &input.plan, None)
            .await?
            .ok_or_else(|| LedgerError::PlanNotFound(input.plan.clone()))?;

        let mut existing = db::accounts::lock(&mut tx, key_id.as_str()).await?;
        let mut created = false;
        if existing.is_none() {
            let anchor = input.billing_anchor.unwrap_or_else(|| now.trunc_subsecs(0));
            let period = rules::period_containing(anchor, plan.interval, now).ok_or_else(|| {
                InvalidField::new("billing_anchor", "is too far from now to compute periods")
            })?;
            let metadata = input
                .metadata
                .clone()
                .unwrap_or_else(|| serde_json::json!({}));
            let external_id = input.external_id.clone().flatten();
            let shared = input.shared.unwrap_or(false);
            check_shared(&mut tx, key_id, shared, external_id.as_deref()).await?;
            let new = NewAccount {
                key_id: key_id.as_str(),
                plan_id: plan.id.as_str(),
                billing_anchor: anchor,
                period_start: period.start,
                period_end: period.end,
                external_id: external_id.as_deref(),
                shared,
                metadata: &metadata,
                now,
            };
            if db::accounts::insert(&mut tx, &new).await? {
                created = true;
                lifecycle::open_account_pools(
                    &mut tx,
                    key_id.as_str(),
                    &plan,
                    period.start,
                    period.end,
                    now,
                )
                .await?;
            } else {
                // Another request created it a moment ago: treat this one as an update.
                existing = db::accounts::lock(&mut tx, key_id.as_str()).await?;
            }
        }
        if let Some(row) = existing {
            lifecycle::catch_up(&mut tx, &row, now).await?;
            if row.plan_id != plan.id.as_str() {
                return Err(LedgerError::Conflict {
                    code: "plan_change_requires_proration",
                    message: format!(
                        "account {key_id} is on plan {}; change its plan with \
                         POST /v1/accounts/{key_id}/plan, which says how to prorate",
                        row.plan_id
                    ),
                });
            }
            if let Some(anchor) = input.billing_anchor {
                if anchor.trunc_subsecs(6) != row.billing_anchor {
                    return Err(LedgerError::Conflict {
                        code: "billing_anchor_immutable",
                        message: format!(
                            "account {key_id} bills from {}; its billing_anchor cannot change",
                            row.billing_anchor.to_rfc3339()
                        ),
                    });
                }
            }
            let external_id = match input.external_id {
                Some(value) => value,
                None => row.external_id.clone(),
            };
            let metadata = input.metadata.unwrap_or(row.metadata.0);
            let shared = input.shared.unwrap_or(row.shared);
            check_shared(&mut tx, key_id, shared, external_id.as_deref()).await?;
            db::accounts::update_details(
                &mut tx,
                key_id.as_str(),
                external_id.as_deref(),
                shared,
                &metadata,
                now,
            )
            .await?;
        }
        let account = load_accounts(&mut tx, &[key_id.to_string()], now)
            .await?
            .pop()
            .ok_or_else(|| LedgerError::AccountNotFound(key_id.clone()))?;
        tx.commit().await?;
        Ok((account, created))
    }

    pub async fn get_account(&self, key_id: &KeyId) -> Result<Account, LedgerError> {
        let now = self.now();
        self.ensure_current(key_id.as_str(), now).await?;
        let mut conn = self.db.acquire().await?;
        load_accounts(&mut conn, &[key_id.to_string()], now)
            .await?
            .pop()
            .ok_or_else(|| LedgerError::AccountNotFound(key_id.clone()))
    }

    /// Accounts in key order; `after` is the last key of the previous page.
    pub async fn list_accounts(
        &self,
        external_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<Account>, Option<String>), LedgerError> {
        let now = self.now();
        let mut conn = self.db.acquire().await?;
        let rows = db::accounts::list(&mut conn, external_id, after, limit + 1).await?;
        let more = rows.len() as i64 > limit;
        let keys: Vec<String> = rows
            .into_iter()
            .take(limit as usize)
            .map(|r| r.key_id)
            .collect();
        drop(conn);
        for key in &keys {
            self.ensure_current(key, now).await?;
        }
        let mut conn = self.db.acquire().await?;
        let accounts = load_accounts(&mut conn, &keys, now).await?;
        let next = if more {
            accounts.last().map(|a| a.key_id.to_string())
        } else {
            None
        };
        Ok((accounts, next))
    }

    pub async fn balance(&self, key_id: &KeyId) -> Result<Balance, LedgerError> {
        Ok(self.get_account(key_id).await?.balance)
    }

    /// A weighted debit: priced in Rust from the account's plan, applied by one call of the
    /// `cl_debit` SQL function, which locks the account, draws from its grants in consumption
    /// order and journals every grant it touches, all or nothing.
    #[instrument(skip_all, fields(key_id = %key_id))]
    pub async fn debit(
        &self,
        key_id: &KeyId,
        request: &DebitRequest,
        idempotency: Option<&Idempotency>,
    ) -> Result<DebitOutcome, LedgerError> {
        let idempotency = idempotency.filter(|_| !request.dry_run);
        for _ in 0..STALE_PLAN_RETRIES {
            // One connection per attempt, released before any roll (which takes its own).
            let mut conn = self.db.acquire().await?;
            let now = self.now();
            let context = db::debits::context(
                &mut conn,
                key_id.as_str(),
                idempotency.map(|i| i.key.as_str()),
                now,
            )
            .await?
            .ok_or_else(|| LedgerError::AccountNotFound(key_id.clone()))?;
            if let (Some(idem), Some(hash)) = (idempotency, &context.request_hash) {
                return replay(idem, hash, context.status, context.response.map(|j| j.0));
            }
            if context.period_end <= now || context.holds_expired {
                // Roll and release first, so the debit lands in the period that contains now
                // and sees the credits of holds that lapsed.
                drop(conn);
                self.maintain(key_id.as_str(), now).await?;
                continue;
            }
            let plan = context.plan.into_plan()?;
            let charge = rules::price(&plan, &request.spec)?;
            let call = db::debits::DebitCall {
                key_id: key_id.as_str(),
                pool: charge.pool.as_str(),
                cost: charge.cost,
                operation: request.spec.operation.as_ref().map(|o| o.as_str()),
                quantity: request.spec.quantity,
                plan_id: plan.id.as_str(),
                plan_version: plan.version,
                metadata: &request.metadata,
                dry_run: request.dry_run,
                idempotency: idempotency.map(|i| (i.key.as_str(), i.request_hash.as_str())),
                debit_id: Uuid::now_v7(),
                source_key_id: request.source_key_id.as_deref(),
                now,
            };
            let outcome = db::debits::apply(&mut conn, &call).await?;
            match outcome["outcome"].as_str() {
                Some("ok") => {
                    let debit: Debit = serde_json::from_value(outcome["debit"].clone())
                        .map_err(|e| LedgerError::Database(sqlx::Error::Decode(Box::new(e))))?;
                    if !debit.dry_run {
                        let pool = debit.pool.to_string();
                        metrics::counter!("debits_total", "pool" => pool.clone(), "outcome" => "accepted")
                            .increment(1);
                        metrics::counter!("credits_debited_total", "pool" => pool)
                            .increment(debit.cost.unsigned_abs());
                    }
                    return Ok(DebitOutcome::Accepted(Box::new(debit)));
                }
                Some("replay") => {
                    let status = outcome["status"]
                        .as_i64()
                        .and_then(|s| u16::try_from(s).ok());
                    return Ok(DebitOutcome::Replayed {
                        status: status.unwrap_or(201),
                        body: outcome["body"].clone(),
                    });
                }
                Some("idempotency_conflict") => return Err(LedgerError::IdempotencyKeyReused),
                Some("exhausted") => {
                    metrics::counter!("debits_total", "pool" => charge.pool.to_string(), "outcome" => "refused")
                        .increment(1);
                    return Err(LedgerError::CreditsExhausted(Box::new(Exhausted {
                        key_id: key_id.clone(),
                        pool: charge.pool,
                        operation: request.spec.operation.as_ref().map(|o| o.to_string()),
                        required: charge.cost,
                        available: outcome["available"].as_i64().unwrap_or(0),
                        allowed: outcome["allowed"].as_i64(),
                        used: outcome["used"].as_i64().unwrap_or(0),
                        overage_limit: outcome["overage_limit"].as_i64().unwrap_or(0),
                        reset_at: serde_json::from_value(outcome["reset_at"].clone())
                            .unwrap_or(now),
                    })));
                }
                Some("account_not_found") => {
                    return Err(LedgerError::AccountNotFound(key_id.clone()))
                }
                Some("unknown_pool") if plan.pools.contains_key(&charge.pool) => {
                    // The plan gained this pool after the account was opened: add it, retry.
                    drop(conn);
                    self.maintain(key_id.as_str(), now).await?;
                    continue;
                }
                Some("unknown_pool") => {
                    return Err(LedgerError::Price(PriceError::UnknownPool(charge.pool)))
                }
                Some("stale_plan") => continue,
                Some("period_ended") => {
                    drop(conn);
                    self.maintain(key_id.as_str(), now).await?;
                    continue;
                }
                other => {
                    return Err(LedgerError::Database(sqlx::Error::Protocol(format!(
                        "cl_debit returned an unknown outcome {other:?}"
                    ))))
                }
            }
        }
        Err(LedgerError::Conflict {
            code: "concurrent_change",
            message: format!("account {key_id} kept changing under the debit; retry it"),
        })
    }

    /// Rolls and expires what is due on the account before a read, so reads never show a period
    /// that is over. Uses connections of its own; call it holding none.
    pub(crate) async fn ensure_current(
        &self,
        key_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut conn = self.db.acquire().await?;
        let due = db::accounts::needs_maintenance(&mut conn, key_id, now).await?;
        drop(conn);
        if due {
            self.maintain(key_id, now).await?;
        }
        Ok(())
    }

    /// Brings one account up to date at `now` (rolls, expiries) in a transaction of its own.
    pub async fn maintain(
        &self,
        key_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Maintenance, LedgerError> {
        let mut tx = self.db.begin().await?;
        let Some(row) = db::accounts::lock(&mut tx, key_id).await? else {
            return Ok(Maintenance::default());
        };
        let done = lifecycle::catch_up(&mut tx, &row, now).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// The scheduler's job: rolls the periods and journals the expiries of every account that is
    /// due, in batches, skipping accounts another process is working on. Returns the totals.
    pub async fn maintain_due(&self, batch: i64) -> Result<Maintenance, LedgerError> {
        let mut total = Maintenance::default();
        loop {
            let now = self.now();
            let mut conn = self.db.acquire().await?;
            let due = db::accounts::due_for_maintenance(&mut conn, now, batch).await?;
            drop(conn);
            let mut progressed = false;
            for key_id in &due {
                let mut tx = self.db.begin().await?;
                let Some(row) = db::accounts::lock_or_skip(&mut tx, key_id).await? else {
                    continue;
                };
                // One failing account must not hold up the others.
                let done = match lifecycle::catch_up(&mut tx, &row, now).await {
                    Ok(done) => done,
                    Err(err) => {
                        tracing::error!(key_id = %key_id, error = %err, "maintenance of an account failed");
                        continue;
                    }
                };
                tx.commit().await?;
                progressed |= done.rolled > 0 || done.expired > 0;
                total.rolled += done.rolled;
                total.expired += done.expired;
            }
            if (due.len() as i64) < batch || !progressed {
                return Ok(total);
            }
        }
    }

    /// Forgets idempotency keys older than `retention` (rule 5 keeps them at least 30 days).
    pub async fn purge_idempotency_keys(
        &self,
        retention: chrono::Duration,
    ) -> Result<u64, LedgerError> {
        let mut conn = self.db.acquire().await?;
        Ok(db::idempotency::purge_older_than(&mut conn, self.now() - retention).await?)
    }

    /// Journal entries of an account, newest first.
    pub async fn entries(
        &self,
        key_id: &KeyId,
        before: Option<i64>,
        limit: i64,
    ) -> Result<EntryPage, LedgerError> {
        let mut conn = self.db.acquire().await?;
        if db::accounts::get(&mut conn, key_id.as_str())
            .await?
            .is_none()
        {
            return Err(LedgerError::AccountNotFound(key_id.clone()));
        }
        let mut data = db::entries::list(&mut conn, key_id.as_str(), before, limit + 1).await?;
        let more = data.len() as i64 > limit;
        data.truncate(limit as usize);
        let next_cursor = if more {
            data.last().map(|e| e.id.to_string())
        } else {
            None
        };
        Ok(EntryPage { data, next_cursor })
    }
}

/// A shared account needs the customer's external id, and a customer has one shared account.
async fn check_shared(
    tx: &mut PgConnection,
    key_id: &KeyId,
    shared: bool,
    external_id: Option<&str>,
) -> Result<(), LedgerError> {
    if !shared {
        return Ok(());
    }
    let Some(external_id) = external_id else {
        return Err(LedgerError::Invalid(InvalidField::new(
            "external_id",
            "is required for a shared account: it is the Unkey identity externalId whose keys share it",
        )));
    };
    if let Some(other) = db::accounts::other_shared(tx, external_id, key_id.as_str()).await? {
        return Err(LedgerError::Conflict {
            code: "shared_account_exists",
            message: format!("account {other} is already the shared account of {external_id}"),
        });
    }
    Ok(())
}

/// Claims an idempotency key inside `tx`: `Some` is the stored answer to replay.
pub(crate) async fn claim(
    tx: &mut PgConnection,
    scope: &str,
    idempotency: Option<&Idempotency>,
    now: DateTime<Utc>,
) -> Result<Option<(u16, serde_json::Value)>, LedgerError> {
    let Some(idem) = idempotency else {
        return Ok(None);
    };
    match db::idempotency::claim(tx, scope, &idem.key, &idem.request_hash, now).await? {
        Claim::Fresh => Ok(None),
        Claim::Replay { status, body } => Ok(Some((status, body))),
        Claim::Conflict => Err(LedgerError::IdempotencyKeyReused),
    }
}

/// Stores the answer of a claimed key, in the same transaction as the work.
pub(crate) async fn finish<T: serde::Serialize>(
    tx: &mut PgConnection,
    scope: &str,
    idempotency: Option<&Idempotency>,
    status: u16,
    value: &T,
) -> Result<(), LedgerError> {
    let Some(idem) = idempotency else {
        return Ok(());
    };
    let body = serde_json::to_value(value)
        .map_err(|e| LedgerError::Database(sqlx::Error::Decode(Box::new(e))))?;
    db::idempotency::finish(tx, scope, &idem.key, status, &body).await?;
    Ok(())
}

/// The result of an idempotent operation.
#[derive(Debug, Clone)]
pub enum Outcome<T> {
    Done(T),
    Replayed {
        status: u16,
        body: serde_json::Value,
    },
}

fn replay(
    idem: &Idempotency,
    stored_hash: &str,
    status: Option<i16>,
    body: Option<serde_json::Value>,
) -> Result<DebitOutcome, LedgerError> {
    if stored_hash != idem.request_hash {
        return Err(LedgerError::IdempotencyKeyReused);
    }
    Ok(DebitOutcome::Replayed {
        status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(201),
        body: body.unwrap_or(serde_json::Value::Null),
    })
}

/// Loads accounts with their balances, in the order of `key_ids`; missing ones are skipped.
pub(crate) async fn load_accounts(
    conn: &mut PgConnection,
    key_ids: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<Account>, LedgerError> {
    let mut rows = db::accounts::get_many(conn, key_ids).await?;
    let position: HashMap<&str, usize> = key_ids
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    rows.sort_by_key(|r| position.get(r.key_id.as_str()).copied());
    let pools = db::accounts::pools_of(conn, key_ids).await?;
    let grants = db::accounts::active_grants_of(conn, key_ids, now).await?;
    let reserved = db::reservations::reserved_of(conn, key_ids).await?;
    let mut balances = assemble_balances(&rows, pools, grants, reserved)?;
    rows.into_iter()
        .map(|row| {
            let balance = balances
                .remove(&row.key_id)
                .ok_or_else(|| LedgerError::Database(sqlx::Error::RowNotFound))?;
            Ok(Account {
                key_id: balance.key_id.clone(),
                plan: balance.plan.clone(),
                billing_anchor: row.billing_anchor,
                current_period: balance.period,
                external_id: row.external_id,
                shared: row.shared,
                metadata: row.metadata.0,
                created_at: row.created_at,
                updated_at: row.updated_at,
                balance,
            })
        })
        .collect()
}

fn corrupt(what: impl Into<String>) -> LedgerError {
    LedgerError::Database(sqlx::Error::Protocol(what.into()))
}

fn assemble_balances(
    accounts: &[AccountRow],
    pools: Vec<PoolRow>,
    grants: Vec<GrantRow>,
    reserved: Vec<(String, String, i64)>,
) -> Result<HashMap<String, Balance>, LedgerError> {
    let reserved: HashMap<(String, String), i64> = reserved
        .into_iter()
        .map(|(key, pool, amount)| ((key, pool), amount))
        .collect();
    let mut grants_by_pool: HashMap<(String, String), Vec<GrantRow>> = HashMap::new();
    for grant in grants {
        grants_by_pool
            .entry((grant.key_id.clone(), grant.pool.clone()))
            .or_default()
            .push(grant);
    }
    let mut balances: HashMap<String, Balance> = HashMap::new();
    for account in accounts {
        let key_id = KeyId::try_from(account.key_id.clone()).map_err(|e| corrupt(e.to_string()))?;
        let plan = PlanId::try_from(account.plan_id.clone()).map_err(|e| corrupt(e.to_string()))?;
        balances.insert(
            account.key_id.clone(),
            Balance {
                key_id,
                plan,
                period: PeriodView {
                    start: account.period_start,
                    end: account.period_end,
                },
                pools: Vec::new(),
            },
        );
    }
    for pool in pools {
        let Some(balance) = balances.get_mut(&pool.key_id) else {
            continue;
        };
        let mut grants = grants_by_pool
            .remove(&(pool.key_id.clone(), pool.pool.clone()))
            .unwrap_or_default();
        grants.sort_by(|a, b| rules::consumption_order(&order_key(a), &order_key(b)));
        // Held credits are already out of their grants; overage taken is owed below zero.
        let total: i128 = grants.iter().map(|g| i128::from(g.remaining)).sum::<i128>()
            - i128::from(pool.overage_used);
        let available = pool
            .allowance
            .map(|_| i64::try_from(total).unwrap_or(i64::MAX));
        let held = reserved
            .get(&(pool.key_id.clone(), pool.pool.clone()))
            .copied()
            .unwrap_or(0);
        balance.pools.push(PoolBalance {
            pool: PoolName::try_from(pool.pool).map_err(|e| corrupt(e.to_string()))?,
            available,
            reserved: held,
            allowance: pool.allowance,
            used: pool.used,
            overage_used: pool.overage_used,
            overage_limit: pool.overage_limit,
            grants: grants
                .into_iter()
                .map(|g| GrantSummary {
                    id: g.id,
                    kind: g.kind,
                    amount: g.amount,
                    remaining: g.remaining,
                    priority: g.priority,
                    effective_at: g.effective_at,
                    expires_at: g.expires_at,
                })
                .collect(),
        });
    }
    Ok(balances)
}

fn order_key(g: &GrantRow) -> OrderKey {
    OrderKey {
        expires_at: g.expires_at,
        priority: g.priority,
        created_at: g.created_at,
        id: g.id,
    }
}

impl Ledger {
    /// The shared account of a customer (Unkey identity `externalId`), if one is marked shared.
    pub async fn shared_account_for(
        &self,
        external_id: &str,
    ) -> Result<Option<KeyId>, LedgerError> {
        let mut conn = self.db.acquire().await?;
        db::accounts::shared_for(&mut conn, external_id)
            .await?
            .map(|k| KeyId::try_from(k).map_err(|e| corrupt(e.to_string())))
            .transpose()
    }

    /// The current plan of an account, or `None` if there is no such account.
    pub async fn plan_of(&self, key_id: &KeyId) -> Result<Option<Plan>, LedgerError> {
        let mut conn = self.db.acquire().await?;
        let Some(row) = db::accounts::get(&mut conn, key_id.as_str()).await? else {
            return Ok(None);
        };
        Ok(Some(
            lifecycle::current_plan(&mut conn, &row.plan_id).await?,
        ))
    }

    /// The account of `key_id`, created on `plan` (anchored at `anchor`, default now) if it does
    /// not exist yet. Exactly one account under concurrent first calls: a create that loses the
    /// race finds the winner's account.
    pub async fn provision(
        &self,
        key_id: &KeyId,
        plan: &PlanId,
        anchor: Option<DateTime<Utc>>,
    ) -> Result<Account, LedgerError> {
        match self.get_account(key_id).await {
            Err(LedgerError::AccountNotFound(_)) => {}
            found => return found,
        }
        let input = AccountInput {
            plan: plan.clone(),
            billing_anchor: anchor,
            external_id: None,
            metadata: None,
            shared: None,
        };
        match self.put_account(key_id, input).await {
            Ok((account, _)) => Ok(account),
            // Created meanwhile by another first call (on another plan or anchor): use it.
            Err(LedgerError::Conflict { .. }) => self.get_account(key_id).await,
            Err(err) => Err(err),
        }
    }
}
