//! `credit-ledger audit`: every invariant of the ledger, checked against the live database.
//!
//! Each check is one set-based, read-only query (a scan or a grouped join, never a round trip per
//! row), so the audit stays fast on millions of rows. The SQL lives here rather than in `db`
//! because it belongs to the audit alone and writes nothing. All checks run in one read-only,
//! repeatable-read transaction, so they see one snapshot of a database that keeps serving.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{Connection, PgConnection};

/// How long an overdue expiry or period roll may stay pending before the audit calls it a
/// violation. The scheduler journals expiries and rolls periods every minute, and reads and
/// debits do both lazily for the account they touch, so a grant just past its expiry (or a period
/// just past its end) is normal for a minute or two; five minutes leaves room for a slow tick.
pub const GRACE: TimeDelta = TimeDelta::minutes(5);

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The check that found it, one of [`CHECKS`].
    pub check: &'static str,
    /// The account it concerns; `None` when the row belongs to no account.
    pub key_id: Option<String>,
    /// The row at fault: a grant, a debit, a pool, a period, an idempotency key.
    pub subject: String,
    /// What is wrong, with the expected and the actual numbers.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.check)?;
        if let Some(key_id) = &self.key_id {
            write!(f, "key_id={key_id} ")?;
        }
        // One line, whatever the database holds.
        let one_line = |s: &str| s.replace(['\n', '\r'], " ");
        write!(f, "{}: {}", one_line(&self.subject), one_line(&self.detail))
    }
}

/// Every check the audit runs, in the order it reports them.
pub const CHECKS: &[&str] = &[
    "grant_remaining_matches_entries",
    "grant_remaining_in_range",
    "one_allowance_per_period",
    "expired_grant_unjournaled",
    "period_not_rolled",
    "allowance_missing",
    "debit_entries_match_cost",
    "used_matches_debits",
    "entry_grant_exists",
    "idempotency_claim_unfinished",
    "overage_matches_entries",
    "hold_entries_match_reservation",
    "refunds_match_debit",
    "usage_matches_debits",
    "top_up_in_flight_matches_requests",
    "allowance_used_matches_debits",
    "member_used_matches_debits",
];

/// A check: a query returning `(key_id, subject, detail)` rows ordered by key_id, one row per
/// violation. `$1`, where used, is the cutoff `now - GRACE`.
struct Check {
    name: &'static str,
    uses_cutoff: bool,
    sql: &'static str,
}

const QUERIES: &[Check] = &[
    // Rule 6: for every grant, remaining = the sum of its journal entries.
    Check {
        name: "grant_remaining_matches_entries",
        uses_cutoff: false,
        sql: "SELECT g.key_id,
                     format('grant %s (%s, pool %s)', g.id, g.kind, g.pool),
                     format('remaining is %s but its entries sum to %s (difference %s)',
                            g.remaining, coalesce(e.total, 0), g.remaining - coalesce(e.total, 0))
                FROM grants g
                LEFT JOIN (SELECT key_id, grant_id, sum(amount) AS total
                             FROM entries
                            WHERE grant_id IS NOT NULL
                            GROUP BY key_id, grant_id) e
                       ON e.key_id = g.key_id AND e.grant_id = g.id
               WHERE g.remaining <> coalesce(e.total, 0)
               ORDER BY g.key_id, g.id",
    },
    Check {
        name: "grant_remaining_in_range",
        uses_cutoff: false,
        sql: "SELECT key_id,
                     format('grant %s (%s, pool %s)', id, kind, pool),
                     format('remaining is %s, expected between 0 and its amount %s',
                            remaining, amount)
                FROM grants
               WHERE remaining < 0 OR remaining > amount
               ORDER BY key_id, id",
    },
    Check {
        name: "one_allowance_per_period",
        uses_cutoff: false,
        sql: "SELECT key_id,
                     format('pool %s, period starting %s', pool, coalesce(period_start::text, '(none)')),
                     format('%s allowance grants, expected 1: %s',
                            count(*), string_agg(id::text, ', ' ORDER BY id))
                FROM grants
               WHERE kind = 'allowance'
               GROUP BY key_id, pool, period_start
              HAVING count(*) > 1
               ORDER BY key_id, pool, period_start",
    },
    Check {
        name: "expired_grant_unjournaled",
        uses_cutoff: true,
        sql: "SELECT key_id,
                     format('grant %s (%s, pool %s)', id, kind, pool),
                     format('expired at %s with %s credits remaining and no expiration entry; \
                             expected remaining 0 after the expiry is journaled',
                            expires_at, remaining)
                FROM grants
               WHERE remaining > 0 AND voided_at IS NULL AND expires_at <= $1
               ORDER BY key_id, id",
    },
    Check {
        name: "period_not_rolled",
        uses_cutoff: true,
        sql: "SELECT key_id,
                     format('period %s to %s', period_start, period_end),
                     format('the period ended at %s and was not rolled', period_end)
                FROM accounts
               WHERE period_end <= $1
               ORDER BY key_id",
    },
    // A pool that allows nothing this period (one the plan dropped, or one a plan change added
    // until its next period) needs no allowance grant.
    Check {
        name: "allowance_missing",
        uses_cutoff: false,
        sql: "SELECT p.key_id,
                     format('pool %s', p.pool),
                     format('allowance %s, but no allowance grant for the current period \
                             starting %s', p.allowance, a.period_start)
                FROM account_pools p
                JOIN accounts a ON a.key_id = p.key_id
               WHERE p.allowance > 0
                 AND NOT EXISTS (SELECT 1 FROM grants g
                                  WHERE g.key_id = p.key_id AND g.pool = p.pool
                                    AND g.kind = 'allowance' AND g.period_start = a.period_start)
               ORDER BY p.key_id, p.pool",
    },
    // Both ways: a debit whose entries do not add up, and debit entries whose debit is missing.
    // A debit's cost is journaled as `debit` entries against grants plus, below zero, an
    // `overage` entry.
    Check {
        name: "debit_entries_match_cost",
        uses_cutoff: false,
        sql: "SELECT coalesce(d.key_id, e.key_id),
                     format('debit %s', coalesce(d.id, e.debit_id)),
                     CASE WHEN d.id IS NULL
                          THEN format('no such debit, yet its debit entries sum to %s \
                                       (entries: %s)', e.total, e.n)
                          ELSE format('cost %s (pool %s, operation %s): expected debit entries \
                                       summing to %s, found %s (entries: %s)',
                                      d.cost, d.pool, coalesce(d.operation, '(none)'), -d.cost,
                                      coalesce(e.total, 0), coalesce(e.n, 0))
                     END
                FROM debits d
                FULL JOIN (SELECT key_id, debit_id, count(*) AS n, sum(amount) AS total
                             FROM entries
                            WHERE (kind = 'debit' OR (kind = 'overage' AND amount < 0))
                              AND debit_id IS NOT NULL
                            GROUP BY key_id, debit_id) e
                       ON e.key_id = d.key_id AND e.debit_id = d.id
               WHERE d.id IS NULL OR coalesce(e.total, 0) <> -d.cost
               ORDER BY 1, 2",
    },
    // Debits only ever happen inside the current period, and a roll resets used to 0. A debit
    // records the period it counts in (`period_start`); one stored before that column belongs to
    // the current period when it was made since its start and priced against its end.
    Check {
        name: "used_matches_debits",
        uses_cutoff: false,
        sql: "SELECT p.key_id,
                     format('pool %s', p.pool),
                     format('used is %s but the debits of the period starting %s cost %s \
                             net of refunds (debits: %s)', p.used, a.period_start, coalesce(d.total, 0),
                            coalesce(d.n, 0))
                FROM account_pools p
                JOIN accounts a ON a.key_id = p.key_id
                LEFT JOIN (SELECT d.key_id, d.pool, count(*) AS n,
                                  sum(d.cost - d.refunded) AS total
                             FROM debits d
                             JOIN accounts a ON a.key_id = d.key_id
                            WHERE coalesce(d.period_start = a.period_start,
                                           d.created_at >= a.period_start
                                           AND d.reset_at = a.period_end)
                            GROUP BY d.key_id, d.pool) d
                       ON d.key_id = p.key_id AND d.pool = p.pool
               WHERE p.used <> coalesce(d.total, 0)
               ORDER BY p.key_id, p.pool",
    },
    Check {
        name: "entry_grant_exists",
        uses_cutoff: false,
        sql: "SELECT o.key_id,
                     format('grant %s', o.grant_id),
                     format('entries %s to %s (count: %s) refer to a grant %s',
                            o.first_id, o.last_id, o.n,
                            CASE WHEN EXISTS (SELECT 1 FROM grants g WHERE g.id = o.grant_id)
                                 THEN 'of another account'
                                 ELSE 'that does not exist' END)
                FROM (SELECT e.key_id, e.grant_id, count(*) AS n, min(e.id) AS first_id,
                             max(e.id) AS last_id
                        FROM entries e
                       WHERE e.grant_id IS NOT NULL
                         AND NOT EXISTS (SELECT 1 FROM grants g
                                          WHERE g.key_id = e.key_id AND g.id = e.grant_id)
                       GROUP BY e.key_id, e.grant_id) o
               ORDER BY o.key_id, o.grant_id",
    },
    // A claim is written and finished (or deleted) in one transaction: a committed status 0 is a
    // bug. Scopes are account keys, or routes for account-less calls.
    Check {
        name: "idempotency_claim_unfinished",
        uses_cutoff: false,
        sql: "SELECT a.key_id,
                     format('idempotency key %s in scope %s', i.key, i.scope),
                     format('status 0 (claimed, never finished) since %s', i.created_at)
                FROM idempotency_keys i
                LEFT JOIN accounts a ON a.key_id = i.scope
               WHERE i.status = 0
               ORDER BY a.key_id NULLS LAST, i.scope, i.key",
    },
    // Overage taken is journaled as negative `overage` entries; a refund of overage and the
    // settlement at each roll are positive ones. What is still owed is what the pool shows.
    Check {
        name: "overage_matches_entries",
        uses_cutoff: false,
        sql: "SELECT p.key_id,
                     format('pool %s', p.pool),
                     format('overage_used is %s but the overage entries sum to %s',
                            p.overage_used, coalesce(e.total, 0))
                FROM account_pools p
                LEFT JOIN (SELECT key_id, pool, sum(amount) AS total FROM entries
                            WHERE kind = 'overage' GROUP BY key_id, pool) e
                       ON e.key_id = p.key_id AND e.pool = p.pool
               WHERE p.overage_used <> -coalesce(e.total, 0)
               ORDER BY p.key_id, p.pool",
    },
    // An active hold's `hold` and `release` entries sum to minus what it holds; a finished one's
    // to zero (everything was released, then debited or expired by entries of those kinds). A hold
    // made while its pool was unlimited drew from no grant and has no such entries: whether it
    // drew is its own record's to say, not the pool's terms today.
    Check {
        name: "hold_entries_match_reservation",
        uses_cutoff: false,
        sql: "SELECT r.key_id,
                     format('reservation %s (%s)', r.id, r.status),
                     format('holds %s but its hold and release entries sum to %s',
                            CASE WHEN r.status = 'active' THEN r.amount ELSE 0 END,
                            -coalesce(e.total, 0))
                FROM reservations r
                LEFT JOIN (SELECT key_id, reservation_id, sum(amount) AS total FROM entries
                            WHERE kind IN ('hold', 'release') AND reservation_id IS NOT NULL
                            GROUP BY key_id, reservation_id) e
                       ON e.key_id = r.key_id AND e.reservation_id = r.id
               WHERE coalesce(e.total, 0)
                     <> CASE WHEN r.status = 'active' AND jsonb_array_length(r.drawn) > 0
                             THEN -r.amount ELSE 0 END
               ORDER BY r.key_id, r.id",
    },
    Check {
        name: "refunds_match_debit",
        uses_cutoff: false,
        sql: "SELECT d.key_id,
                     format('debit %s', d.id),
                     format('refunded is %s of cost %s, but its refunds sum to %s',
                            d.refunded, d.cost, coalesce(r.total, 0))
                FROM debits d
                LEFT JOIN (SELECT key_id, debit_id, sum(amount) AS total FROM refunds
                            GROUP BY key_id, debit_id) r
                       ON r.key_id = d.key_id AND r.debit_id = d.id
               WHERE d.refunded <> coalesce(r.total, 0) OR d.refunded > d.cost
               ORDER BY d.key_id, d.id",
    },
    // The hourly usage rollup adds up to the debits it summarizes.
    Check {
        name: "usage_matches_debits",
        uses_cutoff: false,
        sql: "SELECT coalesce(u.key_id, d.key_id),
                     format('pool %s', coalesce(u.pool, d.pool)),
                     format('usage rollup has %s credits in %s debits, the debits cost %s in %s',
                            coalesce(u.credits, 0), coalesce(u.n, 0),
                            coalesce(d.credits, 0), coalesce(d.n, 0))
                FROM (SELECT key_id, pool, sum(credits) AS credits, sum(count) AS n
                        FROM usage_hourly GROUP BY key_id, pool) u
                FULL JOIN (SELECT key_id, pool, sum(cost) AS credits, count(*) AS n
                             FROM debits GROUP BY key_id, pool) d
                       ON d.key_id = u.key_id AND d.pool = u.pool
               WHERE coalesce(u.credits, 0) <> coalesce(d.credits, 0)
                  OR coalesce(u.n, 0) <> coalesce(d.n, 0)
               ORDER BY 1, 2",
    },
    // The auto top-up request a pool holds in flight is the one `requested` row of that pool.
    Check {
        name: "top_up_in_flight_matches_requests",
        uses_cutoff: false,
        sql: "SELECT coalesce(p.key_id, t.key_id),
                     format('pool %s', coalesce(p.pool, t.pool)),
                     format('the pool holds request %s in flight, the requested row is %s',
                            coalesce(p.top_up_in_flight::text, 'none'),
                            coalesce(t.id::text, 'none'))
                FROM (SELECT key_id, pool, top_up_in_flight FROM account_pools
                       WHERE top_up_in_flight IS NOT NULL) p
                FULL JOIN (SELECT key_id, pool, id FROM auto_top_ups
                            WHERE status = 'requested') t
                       ON t.key_id = p.key_id AND t.pool = p.pool
               WHERE p.top_up_in_flight IS DISTINCT FROM t.id
               ORDER BY 1, 2",
    },
    // allowance_used is what this period's debits drew from this period's allowance grant, less
    // what their refunds gave back to it.
    Check {
        name: "allowance_used_matches_debits",
        uses_cutoff: false,
        sql: "SELECT p.key_id,
                     format('pool %s', p.pool),
                     format('allowance_used is %s but the debits of the period starting %s drew \
                             %s from allowance grants net of refunds', p.allowance_used,
                            a.period_start, coalesce(d.total, 0) - coalesce(f.total, 0))
                FROM account_pools p
                JOIN accounts a ON a.key_id = p.key_id
                LEFT JOIN (SELECT d.key_id, d.pool, sum((x->>'amount')::bigint) AS total
                             FROM debits d
                             JOIN accounts a ON a.key_id = d.key_id
                            CROSS JOIN LATERAL jsonb_array_elements(d.drawn) x
                             JOIN grants g ON g.key_id = d.key_id
                                          AND g.id = (x->>'grant_id')::uuid
                            WHERE d.period_start = a.period_start AND g.kind = 'allowance'
                              AND g.period_start = a.period_start
                            GROUP BY d.key_id, d.pool) d
                       ON d.key_id = p.key_id AND d.pool = p.pool
                LEFT JOIN (SELECT f.key_id, d.pool, sum((x->>'amount')::bigint) AS total
                             FROM refunds f
                             JOIN debits d ON d.key_id = f.key_id AND d.id = f.debit_id
                             JOIN accounts a ON a.key_id = d.key_id
                            CROSS JOIN LATERAL jsonb_array_elements(f.parts) x
                             JOIN grants g ON g.key_id = f.key_id
                                          AND g.id = (x->>'grant_id')::uuid
                            WHERE d.period_start = a.period_start AND g.kind = 'allowance'
                              AND g.period_start = a.period_start
                            GROUP BY f.key_id, d.pool) f
                       ON f.key_id = p.key_id AND f.pool = p.pool
               WHERE p.allowance_used <> coalesce(d.total, 0) - coalesce(f.total, 0)
               ORDER BY p.key_id, p.pool",
    },
    // A member's use this period is what the debits counted in its membership cost, net of
    // refunds.
    Check {
        name: "member_used_matches_debits",
        uses_cutoff: false,
        sql: "WITH spent AS (
                  SELECT m.key_id, m.member_key_id, d.pool::text AS pool,
                         sum(d.cost - d.refunded) AS total
                    FROM members m
                    JOIN accounts a ON a.key_id = m.key_id
                    JOIN debits d ON d.key_id = m.key_id AND d.source_key_id = m.member_key_id
                                 AND d.period_start = a.period_start
                                 AND d.member_since = m.created_at
                   GROUP BY 1, 2, 3),
              counted AS (
                  SELECT m.key_id, m.member_key_id, u.key AS pool, u.value::bigint AS used
                    FROM members m
                    JOIN accounts a ON a.key_id = m.key_id
                   CROSS JOIN LATERAL jsonb_each_text(m.used) u
                   WHERE m.period_start = a.period_start)
              SELECT coalesce(s.key_id, c.key_id),
                     format('member %s, pool %s', coalesce(s.member_key_id, c.member_key_id),
                            coalesce(s.pool, c.pool)),
                     format('used is %s but its debits of the period cost %s net of refunds',
                            coalesce(c.used, 0), coalesce(s.total, 0))
                FROM spent s
                FULL JOIN counted c ON c.key_id = s.key_id
                                   AND c.member_key_id = s.member_key_id AND c.pool = s.pool
               WHERE coalesce(c.used, 0) <> coalesce(s.total, 0)
               ORDER BY 1, 2",
    },
];

/// Runs every check at `now` and returns the violations, ordered by check (as in [`CHECKS`])
/// then by key_id. `conn` must not be inside a transaction: the audit opens its own, read-only.
pub async fn run(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<Vec<Violation>, sqlx::Error> {
    let cutoff = now - GRACE;
    let mut tx = conn.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    // Timestamps in details print in UTC, ISO style, whatever the server's defaults.
    sqlx::query("SET LOCAL TimeZone = 'UTC'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL DateStyle = 'ISO, YMD'")
        .execute(&mut *tx)
        .await?;
    let mut violations = Vec::new();
    for check in QUERIES {
        let mut query = sqlx::query_as::<_, (Option<String>, String, String)>(check.sql);
        if check.uses_cutoff {
            query = query.bind(cutoff);
        }
        let rows = query.fetch_all(&mut *tx).await?;
        violations.extend(rows.into_iter().map(|(key_id, subject, detail)| Violation {
            check: check.name,
            key_id,
            subject,
            detail,
        }));
    }
    tx.rollback().await?;
    Ok(violations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_has_one_query_in_the_listed_order() {
        let names: Vec<&str> = QUERIES.iter().map(|q| q.name).collect();
        assert_eq!(names, CHECKS);
    }

    #[test]
    fn only_the_time_checks_take_the_cutoff() {
        for check in QUERIES {
            assert_eq!(
                check.sql.contains("$1"),
                check.uses_cutoff,
                "{}",
                check.name
            );
        }
    }

    #[test]
    fn a_violation_displays_on_one_line_naming_check_and_account() {
        let violation = Violation {
            check: "grant_remaining_in_range",
            key_id: Some("key_1".to_owned()),
            subject: "grant g (pack, pool credits)".to_owned(),
            detail: "remaining is -1,\nexpected between 0 and 10".to_owned(),
        };
        assert_eq!(
            violation.to_string(),
            "grant_remaining_in_range: key_id=key_1 grant g (pack, pool credits): \
             remaining is -1, expected between 0 and 10"
        );
        let accountless = Violation {
            key_id: None,
            ..violation
        };
        assert!(accountless
            .to_string()
            .starts_with("grant_remaining_in_range: grant g"));
    }
}
