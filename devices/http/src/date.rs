//! HTTP dates (RFC 9110 §5.6.7): formatting and parsing IMF-fixdate; and the Common Log
//! Format's time.

use alloc::format;
use alloc::string::String;

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// (year, month 1..=12, day 1..=31) of the day `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's algorithm for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 to the given date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats `secs` since the Unix epoch as an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn format_http_date(secs: u64) -> String {
    let bytes = http_date(secs);
    // `http_date` writes ASCII only.
    String::from(core::str::from_utf8(&bytes).unwrap_or_default())
}

/// The length of an IMF-fixdate (the year is clamped to four digits).
pub const HTTP_DATE_LEN: usize = 29;

/// [`format_http_date`] as bytes, without allocating: this runs for every response.
pub fn http_date(secs: u64) -> [u8; HTTP_DATE_LEN] {
    // Clamp to the year 9999 so that the year keeps four digits.
    let secs = secs.min(253_402_300_799);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize].as_bytes());
    let two = |out: &mut [u8; HTTP_DATE_LEN], at: usize, n: u64| {
        out[at] = b'0' + (n / 10 % 10) as u8;
        out[at + 1] = b'0' + (n % 10) as u8;
    };
    two(&mut out, 5, u64::from(day));
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize].as_bytes());
    let year = year as u64;
    two(&mut out, 12, year / 100);
    two(&mut out, 14, year % 100);
    two(&mut out, 17, rem / 3600);
    two(&mut out, 20, rem / 60 % 60);
    two(&mut out, 23, rem % 60);
    out
}

/// Formats `secs` since the Unix epoch as the Common Log Format's time, in UTC:
/// `10/Oct/2000:13:55:36 +0000`.
pub fn format_clf_date(secs: u64) -> String {
    let secs = secs.min(253_402_300_799);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Parses an IMF-fixdate into seconds since the Unix epoch. The obsolete RFC 850 and
/// asctime forms are not accepted (`None`), which makes a conditional request
/// unconditional: always safe.
pub fn parse_http_date(s: &[u8]) -> Option<u64> {
    let s = core::str::from_utf8(s).ok()?.trim();
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let rest = s.get(3..)?.strip_prefix(", ")?;
    if !DAYS.contains(&s.get(..3)?) {
        return None;
    }
    let mut parts = rest.split(' ');
    let day: u32 = two_digits(parts.next()?)?;
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as u32 + 1;
    let year_str = parts.next()?;
    if year_str.len() != 4 {
        return None;
    }
    let year: i64 = year_str.parse().ok()?;
    let mut time = parts.next()?.split(':');
    let (h, m, sec) = (
        two_digits(time.next()?)?,
        two_digits(time.next()?)?,
        two_digits(time.next()?)?,
    );
    if parts.next()? != "GMT" || parts.next().is_some() || time.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    u64::try_from(days)
        .ok()?
        .checked_mul(86_400)?
        .checked_add(u64::from(h * 3600 + m * 60 + sec))
}

fn two_digits(s: &str) -> Option<u32> {
    if s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_dates() {
        assert_eq!(format_http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            format_http_date(784_111_777),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            format_http_date(951_782_400),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            format_http_date(1_700_000_000),
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
        assert_eq!(format_http_date(u64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn formats_common_log_format_times() {
        assert_eq!(format_clf_date(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(format_clf_date(971_186_136), "10/Oct/2000:13:55:36 +0000");
        assert_eq!(format_clf_date(1_700_000_000), "14/Nov/2023:22:13:20 +0000");
    }

    #[test]
    fn parses_what_it_formats() {
        for secs in [0, 784_111_777, 951_782_400, 1_700_000_000, 4_102_444_800] {
            assert_eq!(
                parse_http_date(format_http_date(secs).as_bytes()),
                Some(secs)
            );
        }
        for bad in [
            "",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1969 08:49:37 GMT",
            "\u{e9}\u{e9}\u{e9}",
        ] {
            assert_eq!(parse_http_date(bad.as_bytes()), None, "{bad}");
        }
    }
}
