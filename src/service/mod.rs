//! The ledger service: runs commands through the write path, and answers reads.
//!
//! The write path is the same for every change to an account: in one transaction, load and
//! row-lock the account's state (one round trip), apply the state machine (`ledger::command`),
//! persist its effects (one round trip), commit. Reads are one query of the committed state;
//! an account with a period to roll, a hold to release or a grant to expire goes through the
//! write path first, so no read ever shows a period that is over.

mod commands;
pub mod members;
pub mod portal;
mod reads;
mod writer;

pub use writer::REQUEST_STARTED;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tracing::instrument;
use uuid::Uuid;

use crate::db;
use crate::db::state::{Lock, Selection};
use crate::ledger::account::{self, AccountInput};
use crate::ledger::command::{self, Answer, Command, Idempotency, Request};
use crate::ledger::model::Account;
use crate::ledger::plan::{Plan, PlanDefinition};
use crate::ledger::roll::Maintenance;
use crate::ledger::state::AccountState;
use crate::ledger::types::{InvalidField, KeyId, PlanId};
use crate::ledger::{view, Clock, LedgerError};

/// How often a new account is tried again when another request created it meanwhile.
const CREATE_RETRIES: usize = 2;

/// One error type for the service layer: the ledger's refusal, or storage failing.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Stored data that does not decode into the ledger's records.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The batch this command was part of failed as a whole; none of it applied.
    #[error("the batch failed: {0}")]
    Batch(Arc<ServiceError>),
    #[error("the ledger is unavailable: {0}")]
    Unavailable(String),
    /// A write that could not begin in time to finish before its caller's deadline; nothing of
    /// it was applied.
    #[error("the write could not begin in time; nothing was applied")]
    Expired,
}

impl ServiceError {
    /// Whether the database gave up waiting: `lock_timeout` (55P03) or `statement_timeout`
    /// (57014). Nothing of the transaction applied.
    pub fn is_timeout(&self) -> bool {
        match self {
            ServiceError::Database(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("55P03") | Some("57014"))
            }
            ServiceError::Batch(inner) => inner.is_timeout(),
            _ => false,
        }
    }
}

impl From<db::state::PersistError> for ServiceError {
    fn from(err: db::state::PersistError) -> Self {
        match err {
            db::state::PersistError::Database(db) => ServiceError::Database(db),
            db::state::PersistError::Encode(e) => ServiceError::Corrupt(e.to_string()),
        }
    }
}

/// The result of an idempotent operation: the new value, or the stored answer of an earlier
/// request with the same Idempotency-Key and parameters.
#[derive(Debug, Clone)]
pub enum Outcome<T> {
    Done(T),
    Replayed(serde_json::Value),
}

/// Which account a command is for: by key, or through something it owns.
#[derive(Debug, Clone)]
pub enum Target {
    Account(KeyId),
    Reservation(Uuid),
    Debit(Uuid),
    Grant(Uuid),
}

impl Target {
    fn selection(&self, idempotency: Option<&Idempotency>) -> Selection {
        let mut s = Selection::default();
        self.select(&mut s, idempotency);
        s
    }

    /// Adds what a load needs for this target to `s`.
    fn select(&self, s: &mut Selection, idempotency: Option<&Idempotency>) {
        match self {
            Target::Account(key) => s.keys.push(key.to_string()),
            Target::Reservation(id) => s.reservations.push(*id),
            Target::Debit(id) => s.debits.push(*id),
            Target::Grant(id) => s.grants.push(*id),
        }
        if let Some(idem) = idempotency {
            s.idempotency_keys.push(idem.key.clone());
        }
    }

    /// Whether `state` is the account this target names.
    fn names(&self, state: &AccountState) -> bool {
        match self {
            Target::Account(key) => state.key_id() == key,
            Target::Reservation(id) => state.reservations.iter().any(|r| r.id == *id),
            Target::Debit(id) => state.debits.iter().any(|d| d.id == *id),
            Target::Grant(id) => state.grants.iter().any(|g| g.id == *id),
        }
    }

    /// The state this target names among those a load returned (a key named may have brought
    /// in the shared account it is a member of, which is not the account it names).
    fn pick(&self, states: Vec<AccountState>) -> Option<AccountState> {
        states.into_iter().find(|s| self.names(s))
    }

    fn not_found(&self) -> LedgerError {
        match self {
            Target::Account(key) => LedgerError::AccountNotFound(key.clone()),
            Target::Reservation(id) => LedgerError::ReservationNotFound(*id),
            Target::Debit(id) => LedgerError::DebitNotFound(*id),
            Target::Grant(id) => LedgerError::GrantNotFound(*id),
        }
    }
}

/// The key a debit or a hold is made for, when it is a member key of a shared account (or any
/// key through `/v1/verify`).
fn source_key(command: &Command) -> Option<&str> {
    match command {
        Command::Debit(d) => d.source_key_id.as_deref(),
        Command::Reserve(r) => r.source_key_id.as_deref(),
        _ => None,
    }
}

/// A debit or a hold addressed to a member key lands on its shared account, made for that key:
/// the state it applies to and the request as the member's.
fn as_member(
    states: &[AccountState],
    target: &Target,
    request: &Request,
) -> Option<(usize, Request)> {
    let Target::Account(key) = target else {
        return None;
    };
    let i = states
        .iter()
        .position(|s| s.members.contains_key(key.as_str()))?;
    let command = match &request.command {
        Command::Debit(d) => Command::Debit(crate::ledger::debit::DebitRequest {
            source_key_id: Some(key.to_string()),
            ..d.clone()
        }),
        Command::Reserve(r) => Command::Reserve(crate::ledger::reserve::ReservationRequest {
            source_key_id: Some(key.to_string()),
            ..r.clone()
        }),
        _ => return None,
    };
    // A member's Idempotency-Keys are its own, within the shared account's scope: two members
    // (or a member and the account) may send the same key for different requests.
    let idempotency = request.idempotency.as_ref().map(|idem| Idempotency {
        key: member_idempotency_key(key, &idem.key),
        request_hash: idem.request_hash.clone(),
    });
    Some((i, Request::new(command, idempotency)))
}

/// A member key's Idempotency-Key as stored in its shared account's scope. A line break cannot
/// occur in a header value, so no key sent on the account itself can take this form.
fn member_idempotency_key(member: &KeyId, key: &str) -> String {
    format!("member\n{member}\n{key}")
}

/// The ledger: a database pool, a clock, and the batching writer every write goes through.
#[derive(Clone)]
pub struct Ledger {
    db: PgPool,
    clock: Clock,
    writer: Option<Arc<writer::Writer>>,
    /// `LEDGER_TOP_UP_URL`, with `{key_id}` to fill in.
    top_up_url: Option<Arc<str>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger whose writes go through the batching writer, with the default number of writer
    /// tasks and batch bound (its tasks start here).
    pub fn new(db: PgPool, clock: Clock) -> Self {
        Self::with_writers(db, clock, writer::WRITERS, writer::MAX_BATCH, None)
    }

    /// A ledger whose writes go through `writers` writer tasks taking at most `max_batch`
    /// commands per transaction (its tasks start here). With `start_within`, a write whose batch
    /// has not begun that long after it was submitted is not applied: it is answered
    /// `ServiceError::Expired` instead, so that a caller who gives up at its own deadline is
    /// never charged for a write it was told failed.
    pub fn with_writers(
        db: PgPool,
        clock: Clock,
        writers: usize,
        max_batch: usize,
        start_within: Option<std::time::Duration>,
    ) -> Self {
        let direct = Self {
            db,
            clock,
            writer: None,
            top_up_url: None,
        };
        let writer = writer::Writer::start(
            direct.clone(),
            writers.max(1),
            max_batch.max(1),
            start_within,
        );
        Self {
            writer: Some(Arc::new(writer)),
            ..direct
        }
    }

    /// Where a refusal sends the customer to buy credits (`{key_id}` is filled in).
    pub fn with_top_up_url(mut self, template: Option<&str>) -> Self {
        self.top_up_url = template.map(Arc::from);
        self
    }

    pub fn db(&self) -> &PgPool {
        &self.db
    }

    /// A refusal for want of credits, told where to top up.
    fn explain(&self, err: ServiceError) -> ServiceError {
        match (err, &self.top_up_url) {
            (ServiceError::Ledger(LedgerError::CreditsExhausted(mut e)), Some(template)) => {
                let key: String =
                    url::form_urlencoded::byte_serialize(e.key_id.as_str().as_bytes()).collect();
                e.top_up_url = Some(template.replace("{key_id}", &key));
                ServiceError::Ledger(LedgerError::CreditsExhausted(e))
            }
            (err, _) => err,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The write path, and the batching writer's unit of work: in one transaction, load and
    /// lock the states of every account the commands name (one round trip), apply each command
    /// to its account's state in order, persist every effect (one round trip), commit. A refused
    /// command does not affect the others; an error here means nothing of the batch applied.
    /// Returns each command's answer and the states after them.
    pub async fn apply_batch(
        &self,
        jobs: &[(Target, Request)],
    ) -> Result<(Vec<Result<Answer, LedgerError>>, Vec<AccountState>), ServiceError> {
        let loaded = self.load_batch(jobs).await?;
        self.finish_batch(loaded, jobs).await
    }

    /// The first half of `apply_batch`: begins the transaction and loads and row-locks the
    /// states of every account `jobs` name. When this returns, the batch holds its accounts'
    /// locks, so a batch loaded after it that names one of them waits for its commit.
    pub(super) async fn load_batch(
        &self,
        jobs: &[(Target, Request)],
    ) -> Result<LoadedBatch, ServiceError> {
        let mut selection = Selection::default();
        for (target, request) in jobs {
            target.select(&mut selection, request.idempotency.as_ref());
            // Should the key turn out to be a member key, its Idempotency-Key is the member's.
            if let (Target::Account(key), Some(idem)) = (target, &request.idempotency) {
                selection
                    .idempotency_keys
                    .push(member_idempotency_key(key, &idem.key));
            }
            if let Some(source) = source_key(&request.command) {
                selection.members.push(source.to_owned());
            }
            // Answers that show a balance list every active grant, spent ones too.
            selection.with_spent |= matches!(
                request.command,
                Command::Inspect | Command::UpdateAccount(_) | Command::ChangePlan { .. }
            );
        }
        // A pooled connection the server dropped (a database restart) fails its first use. The
        // load has no effects, so after such a failure it is tried again on a connection that
        // answers a ping; the broken ones (the pool's others are likely broken too) are closed.
        let mut lost = 0;
        loop {
            let mut conn = self.db.acquire().await?;
            if lost > 0 && sqlx::Connection::ping(&mut *conn).await.is_err() {
                conn.close_on_drop();
                lost += 1;
                if lost > self.db.size() as usize + 1 {
                    return Err(ServiceError::Unavailable(
                        "every pooled connection was lost".into(),
                    ));
                }
                continue;
            }
            let mut tx = OpenTransaction { conn, ended: false };
            match db::state::begin_and_load(&mut tx.conn, &selection).await {
                Ok(states) => return Ok(LoadedBatch { tx, states }),
                Err(err) if lost == 0 && connection_lost(&err) => {
                    tracing::info!(error = %err, "a pooled connection was lost; loading again");
                    tx.conn.close_on_drop();
                    tx.ended = true;
                    lost = 1;
                }
                Err(err) => {
                    tx.rollback().await;
                    return Err(err.into());
                }
            }
        }
    }

    /// The second half of `apply_batch`: applies `jobs` (those `load_batch` was given) in order,
    /// persists every effect and commits.
    pub(super) async fn finish_batch(
        &self,
        loaded: LoadedBatch,
        jobs: &[(Target, Request)],
    ) -> Result<(Vec<Result<Answer, LedgerError>>, Vec<AccountState>), ServiceError> {
        let LoadedBatch { mut tx, mut states } = loaded;
        // Taken under the locks: a later batch of this process never has an earlier clock.
        let now = self.now();
        let mut results = Vec::with_capacity(jobs.len());
        for (target, request) in jobs {
            let result = match states.iter().position(|s| target.names(s)) {
                Some(i) => command::apply(&mut states[i], request, now),
                None => match as_member(&states, target, request) {
                    Some((i, request)) => command::apply(&mut states[i], &request, now),
                    None => Err(target.not_found()),
                },
            };
            results.push(result);
        }
        if let Err(err) = db::state::persist_and_commit(&mut tx.conn, states.iter()).await {
            tx.rollback().await;
            return Err(err.into());
        }
        tx.ended = true;
        for ((_, request), result) in jobs.iter().zip(&results) {
            record_metrics(&request.command, result);
        }
        Ok((results, states))
    }

    /// The write path for one command, without the writer.
    async fn run(&self, target: &Target, request: &Request) -> Result<Answer, ServiceError> {
        let jobs = [(target.clone(), request.clone())];
        let (mut results, _) = self.apply_batch(&jobs).await?;
        Ok(results.pop().unwrap_or_else(|| Err(target.not_found()))?)
    }

    /// Runs one command on the account `target` names, through the batching writer.
    #[instrument(skip_all, fields(target = ?target))]
    pub async fn execute(&self, target: Target, request: Request) -> Result<Answer, ServiceError> {
        let answer = match &self.writer {
            Some(writer) => writer.submit(target, request).await,
            None => self.run(&target, &request).await,
        };
        answer.map_err(|err| self.explain(err))
    }

    /// Creates or replaces a plan. A definition equal to the latest version changes nothing;
    /// any other makes a new version. Returns the plan and whether a version was written.
    #[instrument(skip_all, fields(plan_id = %id))]
    pub async fn put_plan(
        &self,
        id: &PlanId,
        definition: PlanDefinition,
    ) -> Result<(Plan, bool), ServiceError> {
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

    pub async fn get_plan(&self, id: &PlanId, version: Option<i32>) -> Result<Plan, ServiceError> {
        let mut conn = self.db.acquire().await?;
        Ok(db::plans::get(&mut conn, id, version)
            .await?
            .ok_or_else(|| LedgerError::PlanNotFound(id.clone()))?)
    }

    pub async fn list_plans(&self) -> Result<Vec<Plan>, ServiceError> {
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
    ) -> Result<(Account, bool), ServiceError> {
        let plan = self.get_plan(&input.plan, None).await?;
        for _ in 0..CREATE_RETRIES {
            let mut tx = self.db.begin().await?;
            // The key's membership lock first, as the member routes take it, before the load
            // (which, for a member key, locks its shared account's row): one lock order.
            db::members::lock_key(&mut tx, key_id.as_str()).await?;
            let now = self.now();
            let target = Target::Account(key_id.clone());
            let mut selection = target.selection(None);
            selection.with_spent = true;
            if let Some(mut state) =
                target.pick(db::state::load(&mut tx, &selection, Lock::Wait).await?)
            {
                let shared = input.shared.unwrap_or(state.account.shared);
                let external_id = match &input.external_id {
                    Some(value) => value.clone(),
                    None => state.account.external_id.clone(),
                };
                check_shared(&mut tx, key_id, shared, external_id.as_deref()).await?;
                let request = Request::new(Command::UpdateAccount(input.clone()), None);
                // A refused update changes nothing: the transaction rolls back as it drops.
                let Answer::Account(account) = command::apply(&mut state, &request, now)? else {
                    return Err(ServiceError::Corrupt(
                        "an update answered no account".into(),
                    ));
                };
                db::state::persist(&mut tx, [&state]).await?;
                tx.commit().await?;
                return Ok((*account, false));
            }
            // A member key draws from its shared account and has none of its own.
            if let Some(account) = db::members::account_of(&mut tx, key_id.as_str()).await? {
                return Err(LedgerError::Conflict {
                    code: "key_is_member",
                    message: format!(
                        "key {key_id} is a member of shared account {account} and draws from it; \
                         remove it there first (DELETE /v1/accounts/{account}/members/{key_id})"
                    ),
                }
                .into());
            }
            let external_id = input.external_id.clone().flatten();
            check_shared(
                &mut tx,
                key_id,
                input.shared.unwrap_or(false),
                external_id.as_deref(),
            )
            .await?;
            let state = account::open(key_id, &plan, &input, now)?;
            let account = view::account(&state, now).map_err(ServiceError::Ledger)?;
            match db::state::persist(&mut tx, [&state]).await {
                // Created a moment ago by another request: update it instead.
                Err(db::state::PersistError::Database(sqlx::Error::Database(e)))
                    if e.code().as_deref() == Some("23505") =>
                {
                    tx.rollback().await?;
                    continue;
                }
                other => other?,
            }
            tx.commit().await?;
            return Ok((account, true));
        }
        Err(ServiceError::Ledger(LedgerError::Conflict {
            code: "concurrent_change",
            message: format!("account {key_id} kept changing under the request; retry it"),
        }))
    }

    /// The account of `key_id`, created on `plan` (anchored at `anchor`, default now) if it does
    /// not exist yet. Exactly one account under concurrent first calls: a create that loses the
    /// race finds the winner's account.
    pub async fn provision(
        &self,
        key_id: &KeyId,
        plan: &PlanId,
        anchor: Option<DateTime<Utc>>,
    ) -> Result<Account, ServiceError> {
        match self.get_account(key_id).await {
            Err(ServiceError::Ledger(LedgerError::AccountNotFound(_))) => {}
            found => return found,
        }
        let input = AccountInput {
            plan: plan.clone(),
            billing_anchor: anchor,
            external_id: None,
            metadata: None,
            shared: None,
            auto_top_up: None,
            overrides: None,
        };
        match self.put_account(key_id, input).await {
            Ok((account, _)) => Ok(account),
            // Created meanwhile by another first call (on another plan or anchor): use it.
            Err(ServiceError::Ledger(LedgerError::Conflict { .. })) => {
                self.get_account(key_id).await
            }
            Err(err) => Err(err),
        }
    }

    /// Brings one account up to date at now (rolls, expiries) in a transaction of its own.
    pub async fn maintain(&self, key_id: &KeyId) -> Result<Maintenance, ServiceError> {
        match self
            .execute(
                Target::Account(key_id.clone()),
                Request::new(Command::Maintain, None),
            )
            .await?
        {
            Answer::Maintained(done) => Ok(done),
            _ => Err(ServiceError::Corrupt(
                "maintenance answered something else".into(),
            )),
        }
    }

    /// The scheduler's job: rolls the periods and journals the expiries of every account that is
    /// due, in batches, skipping accounts another process is working on. Returns the totals.
    pub async fn maintain_due(&self, batch: i64) -> Result<Maintenance, ServiceError> {
        let mut total = Maintenance::default();
        loop {
            let now = self.now();
            let mut conn = self.db.acquire().await?;
            let due = db::accounts::due_for_maintenance(&mut conn, now, batch).await?;
            drop(conn);
            let mut progressed = false;
            for key_id in &due {
                // One failing account must not hold up the others.
                match self.maintain_one(key_id).await {
                    Ok(done) => {
                        progressed |= done.rolled > 0 || done.expired > 0 || done.warned > 0;
                        total.rolled += done.rolled;
                        total.expired += done.expired;
                        total.warned += done.warned;
                    }
                    Err(err) => {
                        tracing::error!(key_id = %key_id, error = %err, "maintenance of an account failed")
                    }
                }
            }
            if total.rolled > 0 {
                metrics::counter!("period_rolls_total").increment(total.rolled as u64);
            }
            if (due.len() as i64) < batch || !progressed {
                return Ok(total);
            }
        }
    }

    async fn maintain_one(&self, key_id: &str) -> Result<Maintenance, ServiceError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let selection = Selection {
            keys: vec![key_id.to_owned()],
            ..Selection::default()
        };
        let Some(mut state) = db::state::load(&mut tx, &selection, Lock::SkipLocked)
            .await?
            .into_iter()
            .find(|s| s.key_id().as_str() == key_id)
        else {
            return Ok(Maintenance::default());
        };
        let done = match command::apply(&mut state, &Request::new(Command::Maintain, None), now)? {
            Answer::Maintained(done) => done,
            _ => {
                return Err(ServiceError::Corrupt(
                    "maintenance answered something else".into(),
                ))
            }
        };
        db::state::persist(&mut tx, [&state]).await?;
        tx.commit().await?;
        if done.rolled > 0 {
            tracing::info!(key_id, periods = done.rolled, "period rolled");
        }
        Ok(done)
    }

    /// Forgets idempotency keys older than `retention` (rule 5 keeps them at least 30 days).
    pub async fn purge_idempotency_keys(
        &self,
        retention: chrono::Duration,
    ) -> Result<u64, ServiceError> {
        let mut conn = self.db.acquire().await?;
        Ok(db::idempotency::purge_older_than(&mut conn, self.now() - retention).await?)
    }
}

/// Whether `err` says the connection itself is gone: an I/O error, or the server ending the
/// session (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now, class 08).
fn connection_lost(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            matches!(c.as_ref(), "57P01" | "57P02" | "57P03") || c.starts_with("08")
        }),
        _ => false,
    }
}

/// A batch whose transaction has begun and holds its accounts' locks.
pub(super) struct LoadedBatch {
    tx: OpenTransaction,
    states: Vec<AccountState>,
}

/// A pooled connection inside a transaction the write path began by hand (BEGIN goes with the
/// load, COMMIT with the persist). Dropped before the transaction ended (a panic, a cancelled
/// future), the connection is closed, which aborts the transaction, rather than returned to the
/// pool with its transaction and row locks open.
struct OpenTransaction {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    ended: bool,
}

impl OpenTransaction {
    async fn rollback(&mut self) {
        if db::state::rollback(&mut self.conn).await.is_ok() {
            self.ended = true;
        }
    }
}

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        if !self.ended {
            self.conn.close_on_drop();
        }
    }
}

/// A shared account needs the customer's external id, and a customer has one shared account.
async fn check_shared(
    tx: &mut sqlx::PgConnection,
    key_id: &KeyId,
    shared: bool,
    external_id: Option<&str>,
) -> Result<(), ServiceError> {
    if !shared {
        return Ok(());
    }
    let Some(external_id) = external_id else {
        return Err(LedgerError::Invalid(InvalidField::new(
            "external_id",
            "is required for a shared account: it is the Unkey identity externalId whose keys share it",
        ))
        .into());
    };
    if let Some(other) = db::accounts::other_shared(tx, external_id, key_id.as_str()).await? {
        return Err(LedgerError::Conflict {
            code: "shared_account_exists",
            message: format!("account {other} is already the shared account of {external_id}"),
        }
        .into());
    }
    Ok(())
}

/// Debits (direct, through `/v1/verify`, and commits of reservations) counted by outcome, and
/// the credits they took. Dry runs change nothing and count nothing.
fn record_metrics(command: &Command, result: &Result<Answer, LedgerError>) {
    match (command, result) {
        (Command::Debit(_) | Command::Commit { .. }, Ok(Answer::Debit(debit)))
            if !debit.dry_run =>
        {
            let pool = debit.pool.to_string();
            metrics::counter!("debits_total", "pool" => pool.clone(), "outcome" => "accepted")
                .increment(1);
            metrics::counter!("credits_debited_total", "pool" => pool)
                .increment(debit.cost.unsigned_abs());
        }
        (Command::Debit(request), Err(LedgerError::CreditsExhausted(e))) if !request.dry_run => {
            metrics::counter!("debits_total", "pool" => e.pool.to_string(), "outcome" => "refused")
                .increment(1);
        }
        _ => {}
    }
}
