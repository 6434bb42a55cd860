//! Entry times as a person reads them: in the local time zone, like
//! coreutils' `ls -l` and `stat`, which is what users compare `sfs ls -l`
//! with. The C library holds the time-zone rules (`TZ`, /etc/localtime), so
//! `localtime_r` does the conversion rather than a date crate.

/// Month abbreviations of the C locale, as `ls -l` prints them.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Half an average Gregorian year: `ls -l` shows the clock time for entries
/// modified less than this long ago, the year for older (or future) ones.
const SIX_MONTHS_SECS: i64 = 31_556_952 / 2;

/// A moment broken down in the local time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i64,
    /// 0 (January) to 11.
    pub month: usize,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// Seconds east of UTC in effect at that moment.
    pub utc_offset_secs: i64,
}

impl LocalTime {
    /// `secs` since the Unix epoch in the local time zone; `None` when the C
    /// library cannot represent it.
    pub fn from_epoch_secs(secs: i64) -> Option<LocalTime> {
        let time = libc::time_t::try_from(secs).ok()?;
        let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
        // SAFETY: `time` and `tm` are valid for reads and writes for the
        // duration of the call; localtime_r (unlike localtime) keeps no
        // pointer to either and only writes `tm`.
        let filled = unsafe { libc::localtime_r(&time, tm.as_mut_ptr()) };
        if filled.is_null() {
            return None;
        }
        // SAFETY: localtime_r succeeded, so it has written every field of
        // `tm`; it was zero-initialised anyway (all-zero is a valid `tm`).
        let tm = unsafe { tm.assume_init() };
        // `c_long` is i64 here but i32 on 32-bit targets.
        #[allow(clippy::useless_conversion)]
        let utc_offset_secs = i64::from(tm.tm_gmtoff);
        Some(LocalTime {
            year: i64::from(tm.tm_year) + 1900,
            month: usize::try_from(tm.tm_mon).ok().filter(|&m| m < 12)?,
            day: u32::try_from(tm.tm_mday).ok()?,
            hour: u32::try_from(tm.tm_hour).ok()?,
            minute: u32::try_from(tm.tm_min).ok()?,
            second: u32::try_from(tm.tm_sec).ok()?,
            utc_offset_secs,
        })
    }

    /// `Mar  5 14:07` when `recent`, else `Mar  5  2023`: the fixed-width
    /// time column of `ls -l` (day padded with a space, as `%e`).
    pub fn ls_format(&self, recent: bool) -> String {
        let month = MONTHS[self.month];
        if recent {
            format!(
                "{month} {:>2} {:02}:{:02}",
                self.day, self.hour, self.minute
            )
        } else {
            format!("{month} {:>2} {:>5}", self.day, self.year)
        }
    }

    /// `2024-03-05 14:07:09.123456789 +0100`, as GNU `stat` prints times.
    pub fn stat_format(&self, nanos: u32) -> String {
        let sign = if self.utc_offset_secs < 0 { '-' } else { '+' };
        let offset_min = self.utc_offset_secs.abs() / 60;
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{nanos:09} {sign}{:02}{:02}",
            self.year,
            self.month + 1,
            self.day,
            self.hour,
            self.minute,
            self.second,
            offset_min / 60,
            offset_min % 60
        )
    }
}

/// True when `ls -l` shows a time of day rather than the year for an entry
/// modified at `secs`, seen at `now` (both seconds since the epoch).
pub fn is_recent(secs: i64, now: i64) -> bool {
    now - SIX_MONTHS_SECS < secs && secs <= now
}

/// Now, in seconds since the Unix epoch (0 before it).
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: LocalTime = LocalTime {
        year: 2023,
        month: 2,
        day: 5,
        hour: 14,
        minute: 7,
        second: 9,
        utc_offset_secs: -(5 * 3600 + 30 * 60),
    };

    #[test]
    fn ls_shows_the_clock_for_recent_times_and_the_year_for_old_ones() {
        assert_eq!(SAMPLE.ls_format(true), "Mar  5 14:07");
        assert_eq!(SAMPLE.ls_format(false), "Mar  5  2023");
        let now = 1_700_000_000;
        assert!(is_recent(now - 3600, now));
        assert!(!is_recent(now - 200 * 86_400, now));
        assert!(!is_recent(now + 60, now), "a future time shows the year");
    }

    #[test]
    fn stat_format_has_nanoseconds_and_the_offset() {
        assert_eq!(
            SAMPLE.stat_format(42),
            "2023-03-05 14:07:09.000000042 -0530"
        );
    }

    #[test]
    fn the_c_library_breaks_down_an_epoch_time() {
        let t = LocalTime::from_epoch_secs(1_700_000_000).unwrap();
        // 2023-11-14 22:13:20 UTC: the local date is within a day of it.
        assert_eq!(t.year, 2023);
        assert!((13..=15).contains(&t.day) && t.month == 10, "{t:?}");
        let utc_secs = 1_700_000_000 + t.utc_offset_secs;
        assert_eq!(
            (utc_secs % 86_400 / 3600, utc_secs % 3600 / 60),
            (i64::from(t.hour), i64::from(t.minute))
        );
    }
}
