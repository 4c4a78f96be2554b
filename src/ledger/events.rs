//! The events the ledger announces, written through the outbox in the transaction of the change
//! that causes them: an event exists if and only if its change committed.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;

use super::LedgerError;
use crate::db;
use crate::db::grants::Expired;

pub const THRESHOLD_REACHED: &str = "credits.threshold_reached";
pub const THRESHOLD_RESOLVED: &str = "credits.threshold_resolved";
pub const EXHAUSTED: &str = "credits.exhausted";
pub const PERIOD_ROLLED: &str = "period.rolled";
pub const GRANT_CREATED: &str = "grant.created";
pub const GRANT_EXPIRED: &str = "grant.expired";
pub const RESERVATION_EXPIRED: &str = "reservation.expired";

/// Every event type, for webhook endpoint subscriptions.
pub const ALL: [&str; 7] = [
    THRESHOLD_REACHED,
    THRESHOLD_RESOLVED,
    EXHAUSTED,
    PERIOD_ROLLED,
    GRANT_CREATED,
    GRANT_EXPIRED,
    RESERVATION_EXPIRED,
];

pub(crate) async fn grants_expired(
    conn: &mut PgConnection,
    key_id: &str,
    expired: &[Expired],
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    for grant in expired {
        db::events::emit(
            conn,
            key_id,
            GRANT_EXPIRED,
            &json!({"key_id": key_id, "grant_id": grant.grant_id, "pool": grant.pool,
                    "kind": grant.kind, "expired": grant.amount}),
            now,
        )
        .await?;
    }
    Ok(())
}

/// After credits came back (a top-up, a refund, a released hold): every threshold of the period
/// the pool had reached and that its balance is now back above is announced as resolved, once.
/// A threshold of t% is resolved when more than (100 − t)% of the allowance is available again.
pub(crate) async fn check_resolved(
    conn: &mut PgConnection,
    key_id: &str,
    pool: &str,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let Some(counters) = db::accounts::pool(conn, key_id, pool).await? else {
        return Ok(());
    };
    let Some(allowance) = counters.allowance.filter(|a| *a > 0) else {
        return Ok(());
    };
    let Some(account) = db::accounts::get(conn, key_id).await? else {
        return Ok(());
    };
    let open = db::events::open_thresholds(conn, key_id, pool, account.period_start).await?;
    if open.is_empty() {
        return Ok(());
    }
    let available = db::grants::available(conn, key_id, pool, now).await? - counters.overage_used;
    for threshold in open {
        let lifted =
            i128::from(available) * 100 > i128::from(100 - threshold) * i128::from(allowance);
        if !lifted {
            continue;
        }
        db::events::mark_resolved(conn, key_id, pool, account.period_start, threshold).await?;
        db::events::emit(
            conn,
            key_id,
            THRESHOLD_RESOLVED,
            &json!({"key_id": key_id, "pool": pool, "threshold": threshold,
                    "available": available, "allowance": allowance,
                    "period": {"start": account.period_start, "end": account.period_end}}),
            now,
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn period_rolled(
    conn: &mut PgConnection,
    key_id: &str,
    previous_start: DateTime<Utc>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    pools: Vec<serde_json::Value>,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    db::events::emit(
        conn,
        key_id,
        PERIOD_ROLLED,
        &json!({"key_id": key_id,
                "previous_period": {"start": previous_start, "end": start},
                "period": {"start": start, "end": end},
                "pools": pools}),
        now,
    )
    .await?;
    Ok(())
}
