//! Backup schedules: standard five-field cron expressions, evaluated in UTC against a
//! clock the caller passes in.

use std::str::FromStr;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// A parsed backup schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
}

impl Schedule {
    /// Parses five cron fields (minute hour day-of-month month day-of-week), or a macro
    /// such as `@daily`.
    pub fn parse(expression: &str) -> Result<Schedule, String> {
        let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build();
        let cron = parser.parse(expression).map_err(|e| {
            format!("spec.backup.schedule {expression:?} is not a five-field cron expression: {e}")
        })?;
        Ok(Schedule { cron })
    }

    /// The first run strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let zoned = after.to_zoned(TimeZone::UTC);
        self.cron.find_next_occurrence(&zoned, false).ok().map(|z| z.timestamp())
    }
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Schedule::parse(s)
    }
}

/// Whether a scheduled run is due: the first run after the last one (or after the
/// cluster's creation) has come. Runs missed while the operator was away collapse into
/// one.
pub(crate) fn due(schedule: &Schedule, last_run: Timestamp, now: Timestamp) -> bool {
    schedule.next_after(last_run).is_some_and(|next| next <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// Five-field expressions and macros parse; seconds, years and prose are refused.
    #[test]
    fn parses_standard_cron() {
        assert!(Schedule::parse("0 2 * * *").is_ok());
        assert!(Schedule::parse("*/15 * * * *").is_ok());
        assert!(Schedule::parse("@daily").is_ok());
        assert!(Schedule::parse("0 0 2 * * *").is_err(), "six fields");
        assert!(Schedule::parse("every day").is_err());
        assert!(Schedule::parse("61 * * * *").is_err());
    }

    /// The next run is computed in UTC, strictly after the given time, and a run is due
    /// once that time has come.
    #[test]
    fn next_run_and_due() {
        let s = Schedule::parse("0 2 * * *").unwrap();
        assert_eq!(s.next_after(at("2026-11-20T01:00:00Z")), Some(at("2026-11-20T02:00:00Z")));
        assert_eq!(s.next_after(at("2026-11-20T02:00:00Z")), Some(at("2026-11-21T02:00:00Z")));
        assert!(!due(&s, at("2026-11-20T02:00:00Z"), at("2026-11-21T01:59:59Z")));
        assert!(due(&s, at("2026-11-20T02:00:00Z"), at("2026-11-21T02:00:00Z")));
        assert!(due(&s, at("2026-11-01T02:00:00Z"), at("2026-11-21T03:00:00Z")), "missed runs: one is due");
    }
}
