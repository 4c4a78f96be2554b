//! When a pool runs out at its recent pace: credits spent over the last days, as a daily burn,
//! against what the pool has now.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// How far back the pace is measured.
pub const WINDOW_DAYS: i64 = 7;

/// A pool's recent pace and where it leads; the numbers are null without recent use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forecast {
    /// Credits spent per day over the window (net of refunds), rounded up; null without use.
    pub daily_burn: Option<i64>,
    /// When the pool's available credits run out at that pace; null without use, or for an
    /// unlimited pool. Now, for a pool with nothing left.
    pub runs_out_at: Option<DateTime<Utc>>,
    /// The start of the window the pace is measured over: a week ago, or when the account was
    /// created if that is later.
    pub since: DateTime<Utc>,
}

/// The forecast of a pool with `available` credits (`None`: unlimited) that spent `spent`
/// between `since` and `now`.
pub fn forecast(
    available: Option<i64>,
    spent: i64,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Forecast {
    // A window shorter than a day is counted as a day, so one burst is not a huge daily pace.
    let days = ((now - since).num_seconds() as f64 / 86_400.0).max(1.0);
    let per_day = spent.max(0) as f64 / days;
    let daily_burn = (per_day > 0.0).then(|| per_day.ceil() as i64);
    let runs_out_at = match (available, per_day > 0.0) {
        (Some(left), true) => {
            let seconds = (left.max(0) as f64 / per_day * 86_400.0).min(1e11);
            Some(now + Duration::seconds(seconds as i64))
        }
        _ => None,
    };
    Forecast {
        daily_burn,
        runs_out_at,
        since,
    }
}

/// The start of the window for an account created at `created_at`.
pub fn window_start(created_at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    (now - Duration::days(WINDOW_DAYS)).max(created_at).min(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, day, 0, 0, 0).unwrap()
    }

    #[test]
    fn a_steady_pace_runs_out_when_the_credits_do() {
        let f = forecast(Some(300), 700, at(1), at(8));
        assert_eq!(f.daily_burn, Some(100));
        assert_eq!(f.runs_out_at, Some(at(11)));
    }

    #[test]
    fn no_use_forecasts_nothing_and_nothing_left_runs_out_now() {
        let idle = forecast(Some(300), 0, at(1), at(8));
        assert_eq!((idle.daily_burn, idle.runs_out_at), (None, None));
        let empty = forecast(Some(-5), 70, at(1), at(8));
        assert_eq!(empty.runs_out_at, Some(at(8)));
        let unlimited = forecast(None, 70, at(1), at(8));
        assert_eq!(
            (unlimited.daily_burn, unlimited.runs_out_at),
            (Some(10), None)
        );
    }

    #[test]
    fn a_young_account_is_measured_since_it_began_and_at_least_over_a_day() {
        assert_eq!(window_start(at(5), at(8)), at(5));
        assert_eq!(window_start(at(1) - Duration::days(30), at(8)), at(1));
        let burst = forecast(Some(100), 50, at(8) - Duration::hours(1), at(8));
        assert_eq!(burst.daily_burn, Some(50));
        assert_eq!(burst.runs_out_at, Some(at(10)));
    }
}
