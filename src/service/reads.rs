//! Reads: one query of the committed state. An account with anything due (a period to roll, a
//! hold to release, a grant to expire) goes through the write path first.

use chrono::DurationRound;
use uuid::Uuid;

use super::{Ledger, ServiceError, Target};
use crate::db;
use crate::db::state::{Lock, Selection};
use crate::ledger::command::{Command, Request};
use crate::ledger::model::{
    Account, Balance, DebitPage, DebitRecord, EntryPage, GrantPage, Reservation,
};
use crate::ledger::plan::Plan;
use crate::ledger::state::AccountState;
use crate::ledger::types::KeyId;
use crate::ledger::usage::{Usage, UsageGroup, UsageQuery};
use crate::ledger::{forecast, roll};
use crate::ledger::{view, LedgerError};

impl Ledger {
    /// The up-to-date state of the account `target` names, with every active grant.
    async fn current_state(&self, target: &Target) -> Result<AccountState, ServiceError> {
        let mut selection = target.selection(None);
        selection.with_spent = true;
        let mut conn = self.db.acquire().await?;
        let state = target
            .pick(db::state::load(&mut conn, &selection, Lock::None).await?)
            .ok_or_else(|| target.not_found())?;
        if !roll::is_due(&state, self.now()) {
            return Ok(state);
        }
        drop(conn);
        self.run(target, &Request::new(Command::Maintain, None))
            .await?;
        let mut conn = self.db.acquire().await?;
        Ok(target
            .pick(db::state::load(&mut conn, &selection, Lock::None).await?)
            .ok_or_else(|| target.not_found())?)
    }

    pub async fn get_account(&self, key_id: &KeyId) -> Result<Account, ServiceError> {
        let state = self.current_state(&Target::Account(key_id.clone())).await?;
        Ok(view::account(&state, self.now_in(&state))?)
    }

    /// One account as its own reads show it: with each pool's forecast from its recent pace
    /// (one more query, so only where the forecast is shown, not where an account is only
    /// looked up).
    pub async fn account_with_forecast(&self, key_id: &KeyId) -> Result<Account, ServiceError> {
        let state = self.current_state(&Target::Account(key_id.clone())).await?;
        let now = self.now_in(&state);
        let mut account = view::account(&state, now)?;
        let since = forecast::window_start(state.account.created_at, now);
        let mut conn = self.db.acquire().await?;
        let spent = db::debits::spent_by_pool(&mut conn, key_id.as_str(), since, now).await?;
        for pool in &mut account.balance.pools {
            let total = spent
                .iter()
                .find(|(name, _)| name == pool.pool.as_str())
                .map_or(0, |(_, total)| *total);
            pool.forecast = Some(forecast::forecast(pool.available, total, since, now));
        }
        Ok(account)
    }

    /// Now, for an account: never before its current period started (another process, its
    /// clock a little ahead, may have rolled it), as the write path does.
    fn now_in(&self, state: &AccountState) -> chrono::DateTime<chrono::Utc> {
        self.now().max(state.account.period_start)
    }

    /// An account's balance, with each pool's forecast.
    pub async fn balance(&self, key_id: &KeyId) -> Result<Balance, ServiceError> {
        Ok(self.account_with_forecast(key_id).await?.balance)
    }

    /// Accounts in key order; `after` is the last key of the previous page.
    pub async fn list_accounts(
        &self,
        external_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<Account>, Option<String>), ServiceError> {
        let now = self.now();
        let mut conn = self.db.acquire().await?;
        let mut keys = db::accounts::list_keys(&mut conn, external_id, after, limit + 1).await?;
        let more = keys.len() as i64 > limit;
        keys.truncate(limit as usize);
        let selection = Selection {
            keys,
            with_spent: true,
            ..Selection::default()
        };
        let states = db::state::load(&mut conn, &selection, Lock::None).await?;
        drop(conn);
        let mut accounts = Vec::with_capacity(states.len());
        for state in states {
            let state = if roll::is_due(&state, now) {
                self.current_state(&Target::Account(state.key_id().clone()))
                    .await?
            } else {
                state
            };
            accounts.push(view::account(&state, now.max(state.account.period_start))?);
        }
        let next = if more {
            accounts.last().map(|a| a.key_id.to_string())
        } else {
            None
        };
        Ok((accounts, next))
    }

    /// A reservation, after releasing it if its TTL has ended.
    pub async fn get_reservation(&self, id: Uuid) -> Result<Reservation, ServiceError> {
        let state = self.current_state(&Target::Reservation(id)).await?;
        let index = state
            .reservation_index(id)
            .ok_or(LedgerError::ReservationNotFound(id))?;
        Ok(view::reservation(&state, index, self.now_in(&state))?)
    }

    /// Grants of an account, newest first.
    pub async fn list_grants(
        &self,
        key_id: &KeyId,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<GrantPage, ServiceError> {
        self.current_state(&Target::Account(key_id.clone())).await?;
        let now = self.now();
        let mut conn = self.db.acquire().await?;
        let mut records = db::grants::list(&mut conn, key_id.as_str(), before, limit + 1).await?;
        let more = records.len() as i64 > limit;
        records.truncate(limit as usize);
        let data: Vec<_> = records
            .iter()
            .map(|g| view::grant(key_id.as_str(), g, now))
            .collect();
        let next_cursor = if more {
            data.last().map(|g| g.id.to_string())
        } else {
            None
        };
        Ok(GrantPage { data, next_cursor })
    }

    pub(crate) async fn require_account(&self, key_id: &KeyId) -> Result<(), ServiceError> {
        let mut conn = self.db.acquire().await?;
        if !db::accounts::exists(&mut conn, key_id.as_str()).await? {
            return Err(LedgerError::AccountNotFound(key_id.clone()).into());
        }
        Ok(())
    }

    /// One debit with its refunds.
    pub async fn debit_record(&self, id: Uuid) -> Result<DebitRecord, ServiceError> {
        let mut conn = self.db.acquire().await?;
        db::debits::find(&mut conn, id)
            .await?
            .ok_or_else(|| LedgerError::DebitNotFound(id).into())
    }

    /// An account's debits matching `filter`, newest first, with their refunds.
    pub async fn debit_records(
        &self,
        key_id: &KeyId,
        filter: &db::debits::DebitFilter,
        limit: i64,
    ) -> Result<DebitPage, ServiceError> {
        self.require_account(key_id).await?;
        let mut conn = self.db.acquire().await?;
        let mut data = db::debits::list(&mut conn, key_id.as_str(), filter, limit + 1).await?;
        let more = data.len() as i64 > limit;
        data.truncate(limit as usize);
        let next_cursor = if more {
            data.last()
                .map(|d| format!("{}.{}", d.created_at.timestamp_micros(), d.id))
        } else {
            None
        };
        Ok(DebitPage { data, next_cursor })
    }

    /// Journal entries of an account matching `filter`, newest first.
    pub async fn entries(
        &self,
        key_id: &KeyId,
        filter: &db::entries::EntryFilter,
        limit: i64,
    ) -> Result<EntryPage, ServiceError> {
        self.require_account(key_id).await?;
        let mut conn = self.db.acquire().await?;
        let mut data = db::entries::list(&mut conn, key_id.as_str(), filter, limit + 1).await?;
        let more = data.len() as i64 > limit;
        data.truncate(limit as usize);
        let next_cursor = if more {
            data.last().map(|e| e.id.to_string())
        } else {
            None
        };
        Ok(EntryPage { data, next_cursor })
    }

    pub async fn usage(&self, key_id: &KeyId, query: &UsageQuery) -> Result<Usage, ServiceError> {
        query.check().map_err(LedgerError::Invalid)?;
        self.require_account(key_id).await?;
        // The rollup is hourly: the range widens to whole hours.
        let from = query
            .from
            .duration_trunc(chrono::Duration::hours(1))
            .unwrap_or(query.from);
        let to = query
            .to
            .duration_round_up(chrono::Duration::hours(1))
            .unwrap_or(query.to);
        let mut conn = self.db.acquire().await?;
        let data = db::usage::buckets(
            &mut conn,
            key_id.as_str(),
            from,
            to,
            query.interval.as_str(),
            match query.group_by {
                UsageGroup::Operation => "operation",
                UsageGroup::Pool => "pool",
                UsageGroup::Key => "key",
            },
            query.source_key_id.as_deref(),
        )
        .await?;
        Ok(Usage { data })
    }

    /// The shared account a key draws from: the one it is a registered member of, else its
    /// customer's (Unkey identity `externalId`) if one is marked shared.
    pub async fn shared_account_for(
        &self,
        key_id: &KeyId,
        external_id: Option<&str>,
    ) -> Result<Option<KeyId>, ServiceError> {
        let mut conn = self.db.acquire().await?;
        db::accounts::shared_for(&mut conn, key_id.as_str(), external_id)
            .await?
            .map(|k| KeyId::try_from(k).map_err(|e| ServiceError::Corrupt(e.to_string())))
            .transpose()
    }

    /// The current plan of an account, or `None` if there is no such account.
    pub async fn plan_of(&self, key_id: &KeyId) -> Result<Option<Plan>, ServiceError> {
        let mut conn = self.db.acquire().await?;
        Ok(db::plans::of_account(&mut conn, key_id.as_str()).await?)
    }
}
