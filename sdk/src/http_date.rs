//! HTTP dates (RFC 9110 §5.6.7), as `Date`, `Expires`, `Last-Modified` and
//! `Retry-After` carry them: parsed into Unix seconds, to compare with
//! [`crate::host::time_unix_ms`].

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn month(s: &str) -> Option<u32> {
    let s = s.to_ascii_lowercase();
    MONTHS.iter().position(|m| *m == s).map(|i| i as u32 + 1)
}

fn clock(s: &str) -> Option<u64> {
    let mut it = s.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (it.next()??, it.next()??, it.next()??);
    (h < 24 && m < 60 && sec < 61 && it.next().is_none()).then_some(h * 3600 + m * 60 + sec)
}

fn to_unix(year: i64, mon: u32, day: u32, secs: u64) -> Option<u64> {
    if !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, mon, day);
    u64::try_from(days * 86_400).ok().map(|d| d + secs)
}

/// Parses an HTTP date (IMF-fixdate, RFC 850 or asctime) into Unix seconds.
pub fn parse(v: &str) -> Option<u64> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    match parts.as_slice() {
        // Sun, 06 Nov 1994 08:49:37 GMT
        [_, d, mo, y, t, "GMT"] => to_unix(y.parse().ok()?, month(mo)?, d.parse().ok()?, clock(t)?),
        // Sunday, 06-Nov-94 08:49:37 GMT
        [_, dmy, t, "GMT"] => {
            let mut it = dmy.split('-');
            let (d, mo, y) = (it.next()?, it.next()?, it.next()?);
            let y: i64 = y.parse().ok()?;
            // Two-digit years: RFC 9110 §5.6.7's 50-year rule, simplified.
            let y = if y < 70 {
                2000 + y
            } else if y < 100 {
                1900 + y
            } else {
                y
            };
            to_unix(y, month(mo)?, d.parse().ok()?, clock(t)?)
        }
        // Sun Nov  6 08:49:37 1994
        [_, mo, d, t, y] => to_unix(y.parse().ok()?, month(mo)?, d.parse().ok()?, clock(t)?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_formats() {
        let t = 784_111_777;
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
        assert_eq!(parse("Sun Nov  6 08:49:37 1994"), Some(t));
        assert_eq!(parse("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse("Wed, 29 Feb 2024 12:00:00 GMT"), Some(1_709_208_000));
        for bad in [
            "0",
            "-1",
            "yesterday",
            "Sun, 06 Nov 1994 25:00:00 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
