//! Rule 2: consumption order. Active grants of a pool are spent soonest `expires_at` first
//! (never-expiring last), then higher `priority`, then oldest.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What consumption order looks at in a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderKey {
    pub expires_at: Option<DateTime<Utc>>,
    pub priority: i32,
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

/// Consumption order (rule 2): soonest `expires_at` first with never-expiring last, then higher
/// `priority`, then oldest; the id breaks ties so the order is total. This is the only place the
/// order is written: storage loads grants unordered.
pub fn consumption_order(a: &OrderKey, b: &OrderKey) -> Ordering {
    let expiry = match (a.expires_at, b.expires_at) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    expiry
        .then_with(|| b.priority.cmp(&a.priority))
        .then_with(|| a.created_at.cmp(&b.created_at))
        .then_with(|| a.id.cmp(&b.id))
}

/// Takes `amount` from grants in consumption order: `(grant id, taken)` for each grant touched.
/// `None` when the grants cannot cover it.
pub fn draw(grants: &[(OrderKey, i64)], amount: i64) -> Option<Vec<(Uuid, i64)>> {
    let mut ordered: Vec<&(OrderKey, i64)> = grants.iter().filter(|(_, r)| *r > 0).collect();
    ordered.sort_by(|a, b| consumption_order(&a.0, &b.0));
    let mut need = amount;
    let mut taken = Vec::new();
    for (key, remaining) in ordered {
        if need == 0 {
            break;
        }
        let take = need.min(*remaining);
        taken.push((key.id, take));
        need -= take;
    }
    (need == 0).then_some(taken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn draw_takes_in_consumption_order_and_refuses_what_it_cannot_cover() {
        let base = t("2026-11-01T00:00:00Z");
        let g = |n: u128, expires: Option<&str>, remaining: i64| {
            (
                OrderKey {
                    expires_at: expires.map(t),
                    priority: 0,
                    created_at: base,
                    id: Uuid::from_u128(n),
                },
                remaining,
            )
        };
        let grants = [
            g(1, None, 50),
            g(2, Some("2026-12-01T00:00:00Z"), 10),
            g(3, Some("2026-11-15T00:00:00Z"), 0),
        ];
        assert_eq!(
            draw(&grants, 25),
            Some(vec![(Uuid::from_u128(2), 10), (Uuid::from_u128(1), 15)])
        );
        assert_eq!(draw(&grants, 61), None);
        assert_eq!(draw(&grants, 0), Some(vec![]));
    }

    #[test]
    fn consumption_order_spends_soonest_expiry_then_priority_then_oldest() {
        let base = t("2026-11-01T00:00:00Z");
        let key = |n: u128, expires: Option<&str>, priority: i32, age: i64| OrderKey {
            expires_at: expires.map(t),
            priority,
            created_at: base - Duration::days(age),
            id: Uuid::from_u128(n),
        };
        let pack = key(1, None, 0, 30);
        let allowance = key(2, Some("2026-12-01T00:00:00Z"), 0, 1);
        let rollover = key(3, Some("2026-11-30T00:00:00Z"), 0, 0);
        let promo_high = key(4, None, 5, 0);
        let newer_pack = key(5, None, 0, 2);
        let mut grants = [pack, newer_pack, allowance, promo_high, rollover];
        grants.sort_by(consumption_order);
        let ids: Vec<u128> = grants.iter().map(|g| g.id.as_u128()).collect();
        assert_eq!(ids, vec![3, 2, 4, 1, 5]);
    }
}
