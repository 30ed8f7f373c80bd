//! HTTP dates read as RFC 9110 §5.6.7 asks of a recipient: all three
//! formats (IMF-fixdate, RFC 850, asctime), an RFC 850 two-digit year
//! that would be more than 50 years ahead taken as the most recent past
//! year with those digits, and no refusal of a date whose weekday name is
//! wrong (the weekday is redundant, and origins get it wrong). httpdate
//! refuses those (it checks the weekday and pivots two-digit years at 70),
//! so a date it cannot read is read again by jiff's RFC 2822 parser with a
//! relaxed weekday, after the obsolete forms are rewritten into it. Still
//! unreadable: `None`, which an `Expires` reader takes as "already
//! expired" (RFC 9111 §5.3).
use std::time::SystemTime;

use jiff::fmt::rfc2822::DateTimeParser;

static LENIENT: DateTimeParser = DateTimeParser::new().relaxed_weekday(true);

/// The time `value` names, read leniently (see the module doc).
pub fn parse(value: &str) -> Option<SystemTime> {
    parse_at(value, SystemTime::now())
}

/// [`parse`] with the present (for RFC 850 two-digit years) given.
pub fn parse_at(value: &str, now: SystemTime) -> Option<SystemTime> {
    let value = value.trim();
    // First, so that its two-digit year follows RFC 9110, not httpdate.
    if let Some(imf) = rfc850_as_imf(value, now) {
        return lenient(&imf);
    }
    if let Ok(t) = httpdate::parse_http_date(value) {
        return Some(t);
    }
    if let Some(imf) = asctime_as_imf(value) {
        return lenient(&imf);
    }
    lenient(value)
}

fn lenient(imf: &str) -> Option<SystemTime> {
    LENIENT.parse_timestamp(imf).ok().map(SystemTime::from)
}

/// `Sunday, 06-Nov-94 08:49:37 GMT` → `06 Nov 1994 08:49:37 GMT`.
fn rfc850_as_imf(value: &str, now: SystemTime) -> Option<String> {
    let (_weekday, rest) = value.split_once(',')?;
    let mut parts = rest.split_ascii_whitespace();
    let (date, time, zone) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let mut dmy = date.split('-');
    let (day, month, year) = (dmy.next()?, dmy.next()?, dmy.next()?);
    if dmy.next().is_some() || !year.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year = match year.len() {
        2 => two_digit_year(year.parse().ok()?, now),
        4 => year.parse().ok()?,
        _ => return None,
    };
    Some(format!("{day} {month} {year} {time} {zone}"))
}

/// RFC 9110 §5.6.7: a two-digit year that appears more than 50 years in
/// the future is the most recent year in the past with the same digits.
fn two_digit_year(yy: i32, now: SystemTime) -> i32 {
    let this_year = jiff::Timestamp::try_from(now)
        .map(|t| i32::from(t.to_zoned(jiff::tz::TimeZone::UTC).year()))
        .unwrap_or(2000);
    let year = this_year - this_year % 100 + yy;
    if year > this_year + 50 {
        year - 100
    } else {
        year
    }
}

/// `Sun Nov  6 08:49:37 1994` → `6 Nov 1994 08:49:37 GMT`.
fn asctime_as_imf(value: &str) -> Option<String> {
    let mut parts = value.split_ascii_whitespace();
    let (_weekday, month, day, time, year) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if parts.next().is_some() || year.len() != 4 || !time.contains(':') {
        return None;
    }
    Some(format!("{day} {month} {year} {time} GMT"))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    /// 1994-11-06 08:49:37 UTC, RFC 9110's example.
    fn example() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    fn at(year: i32) -> SystemTime {
        let ts = jiff::civil::date(year as i16, 6, 1)
            .to_zoned(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp();
        SystemTime::from(ts)
    }

    #[test]
    fn the_three_formats_of_rfc_9110_are_read() {
        let now = at(2026);
        for v in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            " Sun, 06 Nov 1994 08:49:37 GMT ",
        ] {
            assert_eq!(parse_at(v, now), Some(example()), "{v}");
        }
    }

    #[test]
    fn forms_httpdate_refuses_are_read() {
        let now = at(2026);
        // A wrong weekday, in each format (httpdate checks it).
        for v in [
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "Monday, 06-Nov-94 08:49:37 GMT",
            "Mon Nov  6 08:49:37 1994",
            // A one-digit day, and a numeric zone (RFC 5322 forms).
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 09:49:37 +0100",
        ] {
            assert!(httpdate::parse_http_date(v).is_err(), "httpdate reads {v}");
            assert_eq!(parse_at(v, now), Some(example()), "{v}");
        }
    }

    #[test]
    fn rfc850_two_digit_years_follow_the_fifty_year_rule() {
        let year_of = |v: &str, now| {
            let t = jiff::Timestamp::try_from(parse_at(v, now).unwrap()).unwrap();
            t.to_zoned(jiff::tz::TimeZone::UTC).year()
        };
        // In 2026, "70" is 2070 (44 years ahead), not 1970 as httpdate
        // reads it; "80" would be 54 years ahead, so it is 1980.
        assert_eq!(year_of("Thursday, 01-Jan-70 00:00:00 GMT", at(2026)), 2070);
        assert_eq!(year_of("Tuesday, 01-Jan-80 00:00:00 GMT", at(2026)), 1980);
        assert_eq!(year_of("Sunday, 06-Nov-94 08:49:37 GMT", at(2026)), 1994);
        assert_eq!(year_of("Sunday, 06-Nov-94 08:49:37 GMT", at(2050)), 2094);
    }

    #[test]
    fn garbage_is_not_a_date() {
        let now = at(2026);
        for v in [
            "0",
            "-1",
            "",
            "never",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun Nov  6 1994",
        ] {
            assert_eq!(parse_at(v, now), None, "{v:?}");
        }
    }
}
