//! The batching writer. Write commands from concurrent requests queue up; a few writer tasks
//! each take what is waiting (up to a bound) and run it through one transaction: load and lock
//! the accounts' states, apply every command in arrival order, persist the effects, commit. Only
//! then is each request answered.
//!
//! The queue is sharded by account, so each account has one writer per process and batches of
//! different shards never wait on each other's locks; a hot account pays one lock, one grant
//! update and one
//! commit per batch, not per command. A writer waits for the first command and then takes only
//! what is already queued: at low load a batch is one command, and no timer adds latency.
//!
//! A shard pipelines: once a batch has loaded (and so holds its accounts' locks), the shard
//! takes the next batch while the first applies, persists and commits. The next batch's load
//! waits in PostgreSQL for the locks of any account the two share, so an account's commands
//! still apply one batch after the other, in arrival order.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

use super::{Ledger, ServiceError, Target};
use crate::ledger::command::{Answer, Request};
use crate::ledger::types::KeyId;

/// Writer tasks (queue shards) per process, by default (`LEDGER_WRITERS`). With two batches in
/// flight each, two writers kept a 2-core machine busiest in the benchmark (BENCHMARKS.md).
pub const WRITERS: usize = 2;
/// The most commands one batch takes, by default (`LEDGER_WRITE_BATCH`).
pub const MAX_BATCH: usize = 256;
/// Batches of one shard in flight at once: while one persists and commits, the next loads (and
/// waits for the locks of any account the two share). Each holds a database connection.
const IN_FLIGHT: usize = 2;
/// Commands that may wait in one shard's queue before callers wait to enqueue.
const QUEUE: usize = 4096;
/// Reservations made here whose account is remembered, so a commit finds its account's shard,
/// and for how long. A commit of one no longer remembered goes to the shard of its id: still
/// correct (its account's row lock orders it), only batched apart from the account's other
/// commands. Small and timed, so that memory stays flat under a steady stream of reservations.
const KNOWN_RESERVATIONS: u64 = 10_000;
const REMEMBER_RESERVATION: std::time::Duration = std::time::Duration::from_secs(600);

tokio::task_local! {
    /// When the request being served began (set by the API's middleware): a write's deadline
    /// counts from it, not from when the write was queued, so time the request spent before
    /// (verifying a key with Unkey, say) is counted too.
    pub static REQUEST_STARTED: tokio::time::Instant;
}

struct Job {
    /// After this instant the job is not started (`ServiceError::Expired`).
    deadline: Option<tokio::time::Instant>,
    target: Target,
    /// What the job's account is known by here: its key, or the id it is named through.
    group: String,
    request: Request,
    reply: oneshot::Sender<Result<Answer, ServiceError>>,
}

pub(super) struct Writer {
    shards: Vec<mpsc::Sender<Job>>,
    start_within: Option<std::time::Duration>,
    /// Reservation id → account, for reservations this process made.
    reservations: moka::sync::Cache<Uuid, KeyId>,
}

impl Writer {
    /// Starts the writer tasks. `ledger` must be one without a writer: the tasks apply batches
    /// through it directly.
    pub(super) fn start(
        ledger: Ledger,
        writers: usize,
        max_batch: usize,
        start_within: Option<std::time::Duration>,
    ) -> Self {
        let shards = (0..writers)
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(run_shard(ledger.clone(), rx, max_batch));
                tx
            })
            .collect();
        Writer {
            shards,
            start_within,
            reservations: moka::sync::Cache::builder()
                .max_capacity(KNOWN_RESERVATIONS)
                .time_to_live(REMEMBER_RESERVATION)
                .build(),
        }
    }

    /// The account's key if known here (by key, or through a reservation this process made),
    /// else the id the command names it by.
    fn group_of(&self, target: &Target) -> String {
        match target {
            Target::Account(key) => key.to_string(),
            Target::Reservation(id) => match self.reservations.get(id) {
                Some(key) => key.to_string(),
                None => id.to_string(),
            },
            Target::Debit(id) | Target::Grant(id) => id.to_string(),
        }
    }

    fn shard_of(&self, group: &str) -> usize {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        group.hash(&mut hasher);
        (hasher.finish() % self.shards.len() as u64) as usize
    }

    /// Queues a command and waits for its answer, given after its batch committed.
    pub(super) async fn submit(
        &self,
        target: Target,
        request: Request,
    ) -> Result<Answer, ServiceError> {
        let group = self.group_of(&target);
        let shard = self.shard_of(&group);
        let key = match &target {
            Target::Account(key) => Some(key.clone()),
            _ => None,
        };
        let (reply, answer) = oneshot::channel();
        self.shards[shard]
            .send(Job {
                deadline: self.start_within.map(|within| {
                    REQUEST_STARTED
                        .try_with(|started| *started)
                        .unwrap_or_else(|_| tokio::time::Instant::now())
                        + within
                }),
                target,
                group,
                request,
                reply,
            })
            .await
            .map_err(|_| ServiceError::Unavailable("the writer has stopped".into()))?;
        let answer = answer
            .await
            .map_err(|_| ServiceError::Unavailable("the writer dropped a command".into()))??;
        if let (Answer::Reservation(r), Some(key)) = (&answer, key) {
            self.reservations.insert(r.id, key);
        }
        Ok(answer)
    }
}

async fn run_shard(ledger: Ledger, mut queue: mpsc::Receiver<Job>, max_batch: usize) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut jobs = Vec::with_capacity(max_batch);
    while let Some(first) = queue.recv().await {
        jobs.push(first);
        // While every slot is busy, what arrives joins this batch.
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        while jobs.len() < max_batch {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // A caller that has gone (its request timed out) gets no effect it cannot learn of, and
        // one whose deadline has passed is answered before it could be cut off mid-commit.
        expire(&mut jobs);
        if jobs.is_empty() {
            continue;
        }
        metrics::histogram!("write_batch_size").record(jobs.len() as f64);
        let Split {
            groups,
            deadlines,
            work,
            replies,
        } = split(jobs.drain(..));
        // The load takes the batch's locks before the next batch's load asks for them, so an
        // account's commands apply in arrival order; the rest of the batch runs beside the next.
        let batch = match ledger.load_batch(&work).await {
            Ok(batch) => batch,
            Err(err) if err.is_timeout() && distinct(&groups) > 1 => {
                // One account stayed locked past lock_timeout (held elsewhere): rather than fail
                // its neighbours with it, run each account's commands on their own, in order.
                // Only the stuck account's wait for its lock is paid again.
                drop(slot);
                let split = Split {
                    groups,
                    deadlines,
                    work,
                    replies,
                };
                one_account_at_a_time(&ledger, split).await;
                continue;
            }
            Err(err) => {
                fail(replies, err);
                continue;
            }
        };
        let ledger = ledger.clone();
        tokio::spawn(async move {
            match ledger.finish_batch(batch, &work).await {
                Ok((results, _)) => answer(replies, results),
                Err(err) => fail(replies, err),
            }
            drop(slot);
        });
    }
}

type Reply = oneshot::Sender<Result<Answer, ServiceError>>;
/// One account's commands, with where to answer each.
type Group = (Vec<(Target, Request)>, Vec<Reply>);

/// A batch's commands, and beside them each one's account, deadline and reply.
struct Split {
    groups: Vec<String>,
    deadlines: Vec<Option<tokio::time::Instant>>,
    work: Vec<(Target, Request)>,
    replies: Vec<Reply>,
}

fn split(jobs: impl Iterator<Item = Job>) -> Split {
    let mut split = Split {
        groups: Vec::new(),
        deadlines: Vec::new(),
        work: Vec::new(),
        replies: Vec::new(),
    };
    for job in jobs {
        split.groups.push(job.group);
        split.deadlines.push(job.deadline);
        split.work.push((job.target, job.request));
        split.replies.push(job.reply);
    }
    split
}

/// Drops the jobs whose caller has gone and answers those past their deadline, unapplied.
fn expire(jobs: &mut Vec<Job>) {
    let now = tokio::time::Instant::now();
    let mut kept = Vec::with_capacity(jobs.len());
    for job in jobs.drain(..) {
        if job.reply.is_closed() {
            continue;
        }
        if job.deadline.is_some_and(|d| d <= now) {
            let _ = job.reply.send(Err(ServiceError::Expired));
            continue;
        }
        kept.push(job);
    }
    *jobs = kept;
}

fn distinct(groups: &[String]) -> usize {
    groups
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// Runs the commands of each account as a batch of their own, the accounts in the order of
/// their first command, before the shard takes anything else.
async fn one_account_at_a_time(ledger: &Ledger, split: Split) {
    let mut order: Vec<String> = Vec::new();
    let mut by_group: std::collections::HashMap<String, Group> = std::collections::HashMap::new();
    let mut deadlines: std::collections::HashMap<String, Vec<Option<tokio::time::Instant>>> =
        std::collections::HashMap::new();
    let jobs = split
        .groups
        .into_iter()
        .zip(split.deadlines)
        .zip(split.work)
        .zip(split.replies);
    for (((group, deadline), job), reply) in jobs {
        let entry = by_group.entry(group.clone()).or_insert_with(|| {
            order.push(group.clone());
            (Vec::new(), Vec::new())
        });
        entry.0.push(job);
        entry.1.push(reply);
        deadlines.entry(group).or_default().push(deadline);
    }
    for group in order {
        let Some((work, replies)) = by_group.remove(&group) else {
            continue;
        };
        let now = tokio::time::Instant::now();
        let (work, replies): (Vec<_>, Vec<_>) = work
            .into_iter()
            .zip(replies)
            .zip(deadlines.remove(&group).unwrap_or_default())
            .filter_map(|((job, reply), deadline)| {
                if deadline.is_some_and(|d| d <= now) {
                    let _ = reply.send(Err(ServiceError::Expired));
                    None
                } else {
                    Some((job, reply))
                }
            })
            .unzip();
        if work.is_empty() {
            continue;
        }
        match ledger.apply_batch(&work).await {
            Ok((results, _)) => answer(replies, results),
            Err(err) => fail(replies, err),
        }
    }
}

fn answer(replies: Vec<Reply>, results: Vec<Result<Answer, crate::ledger::LedgerError>>) {
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result.map_err(ServiceError::from));
    }
}

/// The transaction failed: nothing of the batch applied. Each request may be retried with its
/// Idempotency-Key.
fn fail(replies: Vec<Reply>, err: ServiceError) {
    let err = Arc::new(err);
    for reply in replies {
        let _ = reply.send(Err(ServiceError::Batch(err.clone())));
    }
}
