//! Go's duration text, as gonfork, PlanB's flags and the Redis hashes write it: parsed exactly to the
//! nanosecond (`time.ParseDuration`) and printed as `time.Duration.String()` does.

use std::time::Duration;

/// Go's `time.ParseDuration`, exact to the nanosecond: `1.5s`, `100ms`, `1m30s`, `2h`, `0`. Negative
/// durations are refused (a timeout cannot be negative).
pub fn parse(text: &str) -> Result<Duration, String> {
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    if rest.starts_with('-') {
        return Err("negative duration".into());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let int = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac = "";
        if let Some(after) = rest.strip_prefix('.') {
            let frac_len = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            frac = &after[..frac_len];
            rest = &after[frac_len..];
        }
        if int.is_empty() && frac.is_empty() {
            return Err("expected a number".into());
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err("missing unit".into()),
            unit => return Err(format!("unknown unit {unit:?}")),
        };
        rest = &rest[unit_len..];
        let whole: u128 = match int {
            "" => 0,
            digits => digits.parse().map_err(|_| "number too large".to_string())?,
        };
        let mut part = whole * scale;
        // The fraction, digit by digit, truncated below a nanosecond as Go does.
        let mut unit = scale;
        for digit in frac.bytes() {
            unit /= 10;
            part += u128::from(digit - b'0') * unit;
        }
        total += part;
        if total > u128::from(i64::MAX as u64) {
            return Err("duration too large".into());
        }
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Go's `time.Duration.String()`: `0s`, `350µs`, `1.2ms`, `1.5s`, `2m30s`, `1h0m0s`.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos().min(i64::MAX as u128) as u64;
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, prec) = match nanos {
            n if n < 1_000 => ("ns", 0),
            n if n < 1_000_000 => ("µs", 3),
            _ => ("ms", 6),
        };
        return format!("{}{unit}", with_fraction(nanos, prec));
    }
    let secs = nanos / 1_000_000_000;
    let seconds = with_fraction(secs % 60 * 1_000_000_000 + nanos % 1_000_000_000, 9);
    let (minutes, hours) = ((secs / 60) % 60, secs / 3600);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / 10^prec` with its fraction, trailing zeros (and a bare point) left out.
fn with_fraction(value: u64, prec: u32) -> String {
    let scale = 10u64.pow(prec);
    let (int, frac) = (value / scale, value % scale);
    if frac == 0 {
        return int.to_string();
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    format!("{int}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_does() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (999, "999ns"),
            (1_000, "1µs"),
            (350_000, "350µs"),
            (1_500, "1.5µs"),
            (1_200_000, "1.2ms"),
            (1_234_567, "1.234567ms"),
            (100_000_000, "100ms"),
            (1_000_000_000, "1s"),
            (1_500_000_000, "1.5s"),
            (60_000_000_000, "1m0s"),
            (150_000_000_000, "2m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_661_000_000_001, "1h1m1.000000001s"),
        ];
        for (nanos, text) in cases {
            assert_eq!(format(Duration::from_nanos(nanos)), text, "{nanos}ns");
        }
    }

    #[test]
    fn durations_parse_as_go_does() {
        let ok = [
            ("0", 0),
            ("100ms", 100_000_000),
            ("1.5s", 1_500_000_000),
            ("1m30s", 90_000_000_000),
            ("2h", 7_200_000_000_000),
            ("350µs", 350_000),
            ("10us", 10_000),
            (".5s", 500_000_000),
            ("1.0000000019s", 1_000_000_001),
        ];
        for (text, nanos) in ok {
            assert_eq!(parse(text), Ok(Duration::from_nanos(nanos)), "{text}");
        }
        for bad in ["", "1", "s", "1x", "-1s", "1.s5", "."] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
