//! Rule 3: period arithmetic. Period k of an account starts at `billing_anchor + k × interval`,
//! months clamp to the month's last day and are always computed from the anchor, in UTC. And the
//! one number rule 4 takes from it: what a roll carries over.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};

use super::types::Interval;

/// A billing period `[start, end)` and its index k from the anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub index: i64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Start of period `k` of an account: `anchor + k × interval` (rule 3). Months and years are
/// always computed from the anchor and clamp to the month's last day (Jan 31 → Feb 28/29 →
/// Mar 31). `None` when the result leaves the calendar chrono supports.
pub fn period_start(anchor: DateTime<Utc>, interval: Interval, k: i64) -> Option<DateTime<Utc>> {
    match interval {
        Interval::Day => anchor.checked_add_signed(Duration::try_days(k)?),
        Interval::Week => anchor.checked_add_signed(Duration::try_weeks(k)?),
        Interval::Month => add_months_clamped(anchor, k),
        Interval::Year => add_months_clamped(anchor, k.checked_mul(12)?),
    }
}

fn add_months_clamped(anchor: DateTime<Utc>, months: i64) -> Option<DateTime<Utc>> {
    let total = i64::from(anchor.year())
        .checked_mul(12)?
        .checked_add(i64::from(anchor.month0()))?
        .checked_add(months)?;
    let year = i32::try_from(total.div_euclid(12)).ok()?;
    let month = u32::try_from(total.rem_euclid(12)).ok()? + 1;
    let day = anchor.day().min(days_in_month(year, month)?);
    let date = NaiveDate::from_ymd_opt(year, month, day)?;
    Some(date.and_time(anchor.time()).and_utc())
}

fn days_in_month(year: i32, month: u32) -> Option<u32> {
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year.checked_add(1)?, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)?
    };
    u32::try_from(next.signed_duration_since(first).num_days()).ok()
}

/// The period of an account that contains `now`. Works for anchors in the past and the future.
pub fn period_containing(
    anchor: DateTime<Utc>,
    interval: Interval,
    now: DateTime<Utc>,
) -> Option<Period> {
    let elapsed = now.signed_duration_since(anchor);
    // An estimate that is off by at most one or two; the loops below make it exact.
    let mut k = match interval {
        Interval::Day => elapsed.num_seconds().div_euclid(86_400),
        Interval::Week => elapsed.num_seconds().div_euclid(7 * 86_400),
        Interval::Month => {
            (i64::from(now.year()) - i64::from(anchor.year())) * 12 + i64::from(now.month0())
                - i64::from(anchor.month0())
        }
        Interval::Year => i64::from(now.year()) - i64::from(anchor.year()),
    };
    while period_start(anchor, interval, k)? > now {
        k -= 1;
    }
    while period_start(anchor, interval, k + 1)? <= now {
        k += 1;
    }
    Some(Period {
        index: k,
        start: period_start(anchor, interval, k)?,
        end: period_start(anchor, interval, k + 1)?,
    })
}

/// The periods that follow one ending at `current_end`, up to the one that contains `now`, in
/// order: what a roll must catch up on. Empty when `current_end` is still in the future. When
/// `current_end` is not a boundary of the anchor (the anchor moved), the first period runs from
/// `current_end` to the next boundary.
pub fn periods_after(
    anchor: DateTime<Utc>,
    interval: Interval,
    current_end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<Vec<Period>> {
    let mut periods = Vec::new();
    if current_end > now {
        return Some(periods);
    }
    let first = period_containing(anchor, interval, current_end)?;
    let last = period_containing(anchor, interval, now)?;
    for k in first.index..=last.index {
        let start = period_start(anchor, interval, k)?.max(current_end);
        let end = period_start(anchor, interval, k + 1)?;
        periods.push(Period {
            index: k,
            start,
            end,
        });
    }
    Some(periods)
}

/// What a period roll carries over: the unused allowance up to the plan's cap (rule 4). A pool
/// without a cap carries nothing.
pub fn rollover_amount(unused_allowance: i64, rollover_cap: Option<i64>) -> i64 {
    unused_allowance.min(rollover_cap.unwrap_or(0)).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn month_periods_clamp_to_month_end_and_come_back_from_the_anchor() {
        let anchor = t("2027-01-31T10:00:00Z");
        let cases = [
            (0, "2027-01-31T10:00:00Z"),
            (1, "2027-02-28T10:00:00Z"),
            (2, "2027-03-31T10:00:00Z"),
            (3, "2027-04-30T10:00:00Z"),
            (11, "2027-12-31T10:00:00Z"),
            (12, "2028-01-31T10:00:00Z"),
            (13, "2028-02-29T10:00:00Z"), // leap year
            (-1, "2026-12-31T10:00:00Z"),
            (-11, "2026-02-28T10:00:00Z"),
        ];
        for (k, expected) in cases {
            assert_eq!(
                period_start(anchor, Interval::Month, k),
                Some(t(expected)),
                "k = {k}"
            );
        }
    }

    #[test]
    fn year_periods_clamp_leap_days() {
        let anchor = t("2028-02-29T00:00:00Z");
        assert_eq!(
            period_start(anchor, Interval::Year, 1),
            Some(t("2029-02-28T00:00:00Z"))
        );
        assert_eq!(
            period_start(anchor, Interval::Year, 4),
            Some(t("2032-02-29T00:00:00Z"))
        );
        assert_eq!(
            period_start(anchor, Interval::Year, -1),
            Some(t("2027-02-28T00:00:00Z"))
        );
    }

    #[test]
    fn day_and_week_periods_cross_year_ends() {
        let anchor = t("2026-12-31T23:30:00Z");
        assert_eq!(
            period_start(anchor, Interval::Day, 1),
            Some(t("2027-01-01T23:30:00Z"))
        );
        assert_eq!(
            period_start(anchor, Interval::Week, 1),
            Some(t("2027-01-07T23:30:00Z"))
        );
    }

    #[test]
    fn period_containing_now_is_exact_at_the_boundaries() {
        let anchor = t("2026-01-31T00:00:00Z");
        let cases = [
            (
                "2026-02-28T00:00:00Z",
                "2026-02-28T00:00:00Z",
                "2026-03-31T00:00:00Z",
            ),
            (
                "2026-02-27T23:59:59Z",
                "2026-01-31T00:00:00Z",
                "2026-02-28T00:00:00Z",
            ),
            (
                "2026-11-25T08:00:00Z",
                "2026-10-31T00:00:00Z",
                "2026-11-30T00:00:00Z",
            ),
            (
                "2026-12-31T00:00:00Z",
                "2026-12-31T00:00:00Z",
                "2027-01-31T00:00:00Z",
            ),
            // An anchor in the future: the period that contains now lies before it.
            (
                "2025-12-15T00:00:00Z",
                "2025-11-30T00:00:00Z",
                "2025-12-31T00:00:00Z",
            ),
        ];
        for (now, start, end) in cases {
            let period = period_containing(anchor, Interval::Month, t(now)).unwrap();
            assert_eq!(period.start, t(start), "now = {now}");
            assert_eq!(period.end, t(end), "now = {now}");
            assert!(period.start <= t(now) && t(now) < period.end);
        }
    }

    #[test]
    fn period_containing_now_holds_for_every_interval_over_many_instants() {
        let anchor = Utc.with_ymd_and_hms(2024, 1, 31, 12, 0, 0).unwrap();
        for interval in [
            Interval::Day,
            Interval::Week,
            Interval::Month,
            Interval::Year,
        ] {
            let mut now = Utc.with_ymd_and_hms(2019, 3, 1, 0, 0, 0).unwrap();
            let stop = Utc.with_ymd_and_hms(2031, 3, 1, 0, 0, 0).unwrap();
            while now < stop {
                let p = period_containing(anchor, interval, now).unwrap();
                assert!(p.start <= now && now < p.end, "{interval:?} at {now}");
                assert_eq!(period_start(anchor, interval, p.index), Some(p.start));
                now += Duration::hours(37) + Duration::seconds(13);
            }
        }
    }

    #[test]
    fn period_arithmetic_out_of_range_is_none_not_a_panic() {
        let anchor = t("2026-01-01T00:00:00Z");
        assert_eq!(period_start(anchor, Interval::Month, i64::MAX), None);
        assert_eq!(period_start(anchor, Interval::Day, i64::MIN), None);
    }

    #[test]
    fn periods_after_lists_every_missed_period_in_order() {
        let anchor = t("2026-01-31T00:00:00Z");
        let periods = periods_after(
            anchor,
            Interval::Month,
            t("2026-02-28T00:00:00Z"),
            t("2026-05-02T00:00:00Z"),
        )
        .unwrap();
        let starts: Vec<_> = periods.iter().map(|p| (p.start, p.end)).collect();
        assert_eq!(
            starts,
            vec![
                (t("2026-02-28T00:00:00Z"), t("2026-03-31T00:00:00Z")),
                (t("2026-03-31T00:00:00Z"), t("2026-04-30T00:00:00Z")),
                (t("2026-04-30T00:00:00Z"), t("2026-05-31T00:00:00Z")),
            ]
        );
        let none = periods_after(
            anchor,
            Interval::Month,
            t("2026-03-31T00:00:00Z"),
            t("2026-03-30T00:00:00Z"),
        );
        assert_eq!(none, Some(vec![]));
        // Exactly at the end, the next period starts.
        let at_end = periods_after(
            anchor,
            Interval::Month,
            t("2026-03-31T00:00:00Z"),
            t("2026-03-31T00:00:00Z"),
        )
        .unwrap();
        assert_eq!(at_end.len(), 1);
    }

    #[test]
    fn periods_after_an_anchor_move_start_where_the_old_period_ended() {
        let anchor = t("2026-01-10T00:00:00Z");
        let periods = periods_after(
            anchor,
            Interval::Day,
            t("2026-01-12T06:00:00Z"),
            t("2026-01-13T01:00:00Z"),
        )
        .unwrap();
        assert_eq!(periods[0].start, t("2026-01-12T06:00:00Z"));
        assert_eq!(periods[0].end, t("2026-01-13T00:00:00Z"));
        assert_eq!(periods[1].start, t("2026-01-13T00:00:00Z"));
        assert_eq!(periods.len(), 2);
    }

    #[test]
    fn rollover_is_the_unused_allowance_up_to_the_cap() {
        assert_eq!(rollover_amount(300, Some(500)), 300);
        assert_eq!(rollover_amount(800, Some(500)), 500);
        assert_eq!(rollover_amount(800, None), 0);
        assert_eq!(rollover_amount(0, Some(500)), 0);
        assert_eq!(rollover_amount(-5, Some(500)), 0);
    }
}
