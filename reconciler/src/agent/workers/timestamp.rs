//! Docker's timestamps (`State.StartedAt`, RFC 3339 in UTC with up to nine fractional
//! digits, trailing zeros trimmed) as Unix nanoseconds, so a stub's start and its workers'
//! starts compare as numbers: compared as strings, `.1Z` sorts after `.12Z`.

/// `2026-12-04T08:30:00.123456789Z` as nanoseconds since the epoch; `None` for anything
/// else (Docker's zero time `0001-01-01T00:00:00Z` of a never started container included).
pub fn unix_ns(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (year, month, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(str::parse::<i64>);
    let (h, m, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: i64 = format!("{fraction:0<9}").parse().ok()?;
    let secs = days_from_civil(year, month, day)? * 86_400 + h * 3600 + m * 60 + s;
    u64::try_from(secs)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos as u64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> Option<i64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::unix_ns;

    #[test]
    fn docker_timestamps_read_as_nanoseconds() {
        assert_eq!(unix_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_ns("1970-01-02T00:00:01.5Z"), Some(86_401_500_000_000));
        // `date -u -d 2026-12-04T08:30:00 +%s` = 1796373000
        assert_eq!(
            unix_ns("2026-12-04T08:30:00.000000123Z"),
            Some(1_796_373_000_000_000_123)
        );
        // Trimmed fractions still order by time, not by text.
        assert!(unix_ns("2026-12-04T08:30:00.2Z") > unix_ns("2026-12-04T08:30:00.12Z"));
        for bad in [
            "",
            "0001-01-01T00:00:00Z",
            "2026-12-04 08:30:00Z",
            "2026-13-01T00:00:00Z",
            "x",
        ] {
            assert_eq!(unix_ns(bad), None, "{bad}");
        }
    }
}
