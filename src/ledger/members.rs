//! Per-key caps in a shared account. A member key's debits and holds land on the shared
//! account; a member with a cap on a pool may use at most that many of its credits per period.
//! Its use is counted with the account's state, under the account's lock, so the cap is enforced
//! atomically with the debit however many requests race.

use chrono::{DateTime, Utc};

use super::error::{checked, Exhausted, KeyCap, LedgerError};
use super::state::{AccountState, DebitRecord};
use super::types::{PoolName, ReservationStatus};

/// What `member_key_id` used of `pool` in the current period: accepted debits and committed
/// holds less refunds, plus the credits its active holds take.
pub fn key_used(state: &AccountState, member_key_id: &str, pool: &PoolName) -> i64 {
    let counted = state
        .members
        .get(member_key_id)
        .filter(|m| m.period_start == Some(state.account.period_start))
        .and_then(|m| m.used.get(pool).copied())
        .unwrap_or(0);
    let held: i64 = state
        .reservations
        .iter()
        .filter(|r| {
            r.status == ReservationStatus::Active
                && r.pool == *pool
                && r.source_key_id.as_deref() == Some(member_key_id)
        })
        .map(|r| r.amount)
        .sum();
    counted.saturating_add(held)
}

/// Refuses a cost that would take a member key past its cap on `pool` this period: the 402 of
/// the pool, with `key_cap` saying why. `refusal` builds the pool's refusal.
pub fn check_cap(
    state: &AccountState,
    source_key_id: Option<&str>,
    pool: &PoolName,
    cost: i64,
    refusal: impl FnOnce() -> Result<Exhausted, LedgerError>,
) -> Result<(), LedgerError> {
    let Some(member) = source_key_id else {
        return Ok(());
    };
    let Some(cap) = state
        .members
        .get(member)
        .and_then(|m| m.caps.get(pool).copied())
    else {
        return Ok(());
    };
    let used = key_used(state, member, pool);
    if used.saturating_add(cost) <= cap {
        return Ok(());
    }
    let mut refused = refusal()?;
    refused.key_cap = Some(KeyCap {
        member_key_id: member.to_owned(),
        cap,
        key_used: used,
    });
    Err(LedgerError::CreditsExhausted(Box::new(refused)))
}

/// A refund of `amount` of a debit of this period gives its member key that much use back, if
/// the debit counted in the key's current membership (one made before it counted nothing).
pub fn refund_use(
    state: &mut AccountState,
    debit: &DebitRecord,
    amount: i64,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let Some(member) = debit.source_key_id.as_deref() else {
        return Ok(());
    };
    let counted = state
        .members
        .get(member)
        .is_some_and(|m| debit.member_since == Some(m.created_at));
    if !counted {
        return Ok(());
    }
    add_use(state, Some(member), &debit.pool, -amount, now).map(|_| ())
}

/// Counts `delta` credits (negative for a refund) as used by a member key this period. Keys
/// that are not registered members count nothing. Returns the membership counted in (its
/// `created_at`), if any.
pub fn add_use(
    state: &mut AccountState,
    source_key_id: Option<&str>,
    pool: &PoolName,
    delta: i64,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, LedgerError> {
    let Some(member_key_id) = source_key_id else {
        return Ok(None);
    };
    let period_start = state.account.period_start;
    let Some(member) = state.members.get_mut(member_key_id) else {
        return Ok(None);
    };
    let since = member.created_at;
    if member.period_start != Some(period_start) {
        member.period_start = Some(period_start);
        member.used.clear();
    }
    let used = member.used.entry(pool.clone()).or_insert(0);
    *used = checked(used.checked_add(delta), "a member's use")?.max(0);
    member.updated_at = now;
    state.effects.members.insert(member_key_id.to_owned());
    Ok(Some(since))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{Duration, TimeZone, Utc};
    use proptest::prelude::*;
    use uuid::Uuid;

    use super::*;
    use crate::ledger::account::{self, AccountInput};
    use crate::ledger::command::{apply, Answer, Command, Request};
    use crate::ledger::debit::DebitRequest;
    use crate::ledger::plan::{Plan, PoolSpec};
    use crate::ledger::pricing::DebitSpec;
    use crate::ledger::reserve::ReservationRequest;
    use crate::ledger::state::MemberRecord;
    use crate::ledger::types::{KeyId, PlanId};

    const MEMBERS: [(&str, Option<i64>); 3] = [("m1", Some(50)), ("m2", Some(30)), ("m3", None)];

    #[derive(Debug, Clone)]
    enum Step {
        Debit { member: usize, cost: i64 },
        Reserve { member: usize, cost: i64 },
        Commit { pick: usize, part: Option<i64> },
        Release { pick: usize },
        Refund { pick: usize, amount: Option<i64> },
        Advance { hours: i64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..3usize, 1..25i64).prop_map(|(member, cost)| Step::Debit { member, cost }),
            2 => (0..3usize, 1..25i64).prop_map(|(member, cost)| Step::Reserve { member, cost }),
            2 => (any::<usize>(), proptest::option::of(1..25i64))
                .prop_map(|(pick, part)| Step::Commit { pick, part }),
            1 => any::<usize>().prop_map(|pick| Step::Release { pick }),
            2 => (any::<usize>(), proptest::option::of(1..25i64))
                .prop_map(|(pick, amount)| Step::Refund { pick, amount }),
            1 => (1..400i64).prop_map(|hours| Step::Advance { hours }),
        ]
    }

    fn spec(cost: i64) -> DebitSpec {
        DebitSpec {
            operation: None,
            quantity: 1,
            cost: Some(cost),
            pool: None,
        }
    }

    fn opened() -> AccountState {
        let pool = PoolName::default_pool();
        let plan = Plan::for_tests(
            BTreeMap::from([(pool.clone(), PoolSpec::limited(1000))]),
            BTreeMap::new(),
        );
        let input = AccountInput {
            plan: PlanId::parse("plan", "test").unwrap(),
            billing_anchor: None,
            external_id: None,
            metadata: None,
            shared: Some(true),
            auto_top_up: None,
            overrides: None,
        };
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let key = KeyId::parse("key_id", "org").unwrap();
        let mut state = account::open(&key, &plan, &input, now).unwrap();
        for (member, cap) in MEMBERS {
            state.members.insert(
                member.to_owned(),
                MemberRecord {
                    member_key_id: member.to_owned(),
                    caps: cap.map(|c| (pool.clone(), c)).into_iter().collect(),
                    period_start: None,
                    used: BTreeMap::new(),
                    created_at: now,
                    updated_at: now,
                },
            );
        }
        state
    }

    proptest! {
        /// Whatever members do, none passes its cap in a period (its holds counted), and what
        /// each is counted as using is what its debits of the period cost net of refunds.
        #[test]
        fn a_member_never_passes_its_cap_and_its_use_is_its_debits(
            steps in proptest::collection::vec(step(), 1..60)
        ) {
            let pool = PoolName::default_pool();
            let mut state = opened();
            let mut now = state.account.period_start;
            let mut holds: Vec<Uuid> = Vec::new();
            let mut debits: Vec<Uuid> = Vec::new();
            for step in steps {
                let command = match step {
                    Step::Debit { member, cost } => Command::Debit(DebitRequest {
                        spec: spec(cost),
                        metadata: serde_json::json!({}),
                        dry_run: false,
                        source_key_id: Some(MEMBERS[member].0.to_owned()),
                    }),
                    Step::Reserve { member, cost } => Command::Reserve(ReservationRequest {
                        spec: spec(cost),
                        ttl_seconds: 3600,
                        metadata: serde_json::json!({}),
                        source_key_id: Some(MEMBERS[member].0.to_owned()),
                    }),
                    Step::Commit { pick, part } if !holds.is_empty() => Command::Commit {
                        reservation_id: holds[pick % holds.len()],
                        amount: part,
                    },
                    Step::Release { pick } if !holds.is_empty() => Command::Release {
                        reservation_id: holds[pick % holds.len()],
                    },
                    Step::Refund { pick, amount } if !debits.is_empty() => Command::Refund {
                        debit_id: debits[pick % debits.len()],
                        amount,
                        reason: None,
                    },
                    Step::Advance { hours } => {
                        now += Duration::hours(hours);
                        Command::Maintain
                    }
                    _ => continue,
                };
                match apply(&mut state, &Request::new(command, None), now) {
                    Ok(Answer::Reservation(r)) if r.status == ReservationStatus::Active => {
                        holds.push(r.id)
                    }
                    Ok(Answer::Debit(d)) => debits.extend(d.id),
                    Ok(_) => {}
                    Err(LedgerError::Corrupt(what)) => {
                        return Err(TestCaseError::fail(format!("corrupt: {what}")))
                    }
                    Err(_) => {}
                }
                for (member, cap) in MEMBERS {
                    let used = key_used(&state, member, &pool);
                    if let Some(cap) = cap {
                        prop_assert!(used <= cap, "{member} used {used} of its cap {cap}");
                    }
                    let expected: i64 = state
                        .debits
                        .iter()
                        .filter(|d| d.source_key_id.as_deref() == Some(member))
                        .filter(|d| d.period_start == Some(state.account.period_start))
                        .map(|d| d.cost - d.refunded)
                        .sum();
                    let counted = state
                        .members
                        .get(member)
                        .filter(|m| m.period_start == Some(state.account.period_start))
                        .and_then(|m| m.used.get(&pool).copied())
                        .unwrap_or(0);
                    prop_assert_eq!(counted, expected, "{}", member);
                }
            }
        }
    }
}
