//! Background jobs, on a cron schedule (tokio-cron-scheduler): roll the periods of idle accounts,
//! journal expired grants, forget old idempotency keys. Each job is one call into the ledger.
//! Safe with several processes: accounts are locked `FOR UPDATE SKIP LOCKED`, and a roll checks
//! the period under the lock, so each period is rolled exactly once.

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tracing::Instrument;

use crate::service::Ledger;

/// How many due accounts one pass reads at a time.
const BATCH: i64 = 500;
/// Idempotency keys are kept at least this long (rule 5).
pub const IDEMPOTENCY_RETENTION_DAYS: i64 = 30;

/// One pass of maintenance; what the scheduled job runs.
pub async fn run_once(ledger: &Ledger) {
    match ledger.maintain_due(BATCH).await {
        Ok(done) if done.rolled > 0 || done.expired > 0 || done.warned > 0 => {
            tracing::info!(
                periods_rolled = done.rolled,
                grants_expired = done.expired,
                grants_expiring = done.warned,
                "maintenance pass"
            );
        }
        Ok(_) => {}
        Err(err) => tracing::error!(error = %err, "maintenance pass failed"),
    }
    match ledger
        .purge_idempotency_keys(chrono::Duration::days(IDEMPOTENCY_RETENTION_DAYS))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(purged = n, "old idempotency keys forgotten"),
        Err(err) => tracing::error!(error = %err, "purging idempotency keys failed"),
    }
    match ledger.purge_portal_sessions().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(purged = n, "expired portal links forgotten"),
        Err(err) => tracing::error!(error = %err, "purging portal links failed"),
    }
}

/// Starts the maintenance job on `schedule` (cron with seconds, e.g. `0 * * * * *`).
pub async fn start(ledger: Ledger, schedule: &str) -> Result<JobScheduler, JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;
    // A pass still running when the next tick comes is not started twice in this process.
    let running = Arc::new(Mutex::new(()));
    let job = Job::new_async(schedule, move |_, _| {
        let ledger = ledger.clone();
        let running = Arc::clone(&running);
        Box::pin(async move {
            let Ok(_guard) = running.try_lock() else {
                tracing::debug!("previous maintenance pass still running; skipping this tick");
                return;
            };
            run_once(&ledger)
                .instrument(tracing::info_span!("job", name = "maintenance"))
                .await;
        })
    })?;
    scheduler.add(job).await?;
    scheduler.start().await?;
    Ok(scheduler)
}
