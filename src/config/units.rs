//! Human-written durations (`200ms`, `1h30m`, `1d`) and sizes (`512KiB`, `5MB`, `4096`).
//!
//! Both parsers are strict: integers only, known units only, no surrounding text. Their errors
//! say what was wrong and show accepted forms, because they end up in front of an integrator.

use std::time::Duration;

const DURATION_EXAMPLES: &str = "e.g. 200ms, 5s, 2m, 1h30m, 1d";
const SIZE_EXAMPLES: &str = "e.g. 4096, 512KiB, 64MiB, 1GiB, 10kB, 5MB";

/// Duration units, largest first, in milliseconds.
const DURATION_UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// `Duration::from_millis` and `from_secs`, short enough for the ranges of a decoder.
pub const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Parses a duration made of one or more `<integer><unit>` parts, largest unit first, each unit
/// at most once: `200ms`, `5s`, `2m`, `1h`, `1h30m`, `24h`, `1d`, `1m30s`.
/// Units: `d`, `h`, `m`, `s`, `ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty duration; {DURATION_EXAMPLES}"));
    }
    if s.starts_with('-') {
        return Err(format!("duration `{s}` is negative; {DURATION_EXAMPLES}"));
    }
    let mut rest = s;
    let mut total_ms: u64 = 0;
    // Index into DURATION_UNITS of the last unit seen; the next must be strictly smaller.
    let mut last_unit: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(match rest.chars().next() {
                Some(c) if c.is_whitespace() => {
                    format!("invalid duration `{s}`: no spaces allowed; {DURATION_EXAMPLES}")
                }
                Some(c) if last_unit.is_some() => {
                    format!("invalid duration `{s}`: unexpected `{c}`; {DURATION_EXAMPLES}")
                }
                _ => format!(
                    "invalid duration `{s}`: expected a whole number followed by a unit; {DURATION_EXAMPLES}"
                ),
            });
        }
        let (num, after) = rest.split_at(digits);
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(letters);
        if unit.is_empty() {
            return Err(match after.chars().next() {
                Some('.') | Some(',') => format!(
                    "invalid duration `{s}`: only whole numbers are allowed (write 1500ms, not 1.5s); {DURATION_EXAMPLES}"
                ),
                Some(c) if c.is_whitespace() => format!(
                    "invalid duration `{s}`: no spaces allowed; {DURATION_EXAMPLES}"
                ),
                Some(c) => format!(
                    "invalid duration `{s}`: unexpected `{c}`; {DURATION_EXAMPLES}"
                ),
                None => format!(
                    "duration `{s}` has no unit; write e.g. `{num}s` or `{num}ms` (units: d, h, m, s, ms)"
                ),
            });
        }
        let Some(idx) = DURATION_UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(format!(
                "invalid duration `{s}`: unknown unit `{unit}` (units: d, h, m, s, ms); {DURATION_EXAMPLES}"
            ));
        };
        if let Some(prev) = last_unit {
            if idx <= prev {
                return Err(format!(
                    "invalid duration `{s}`: units must go from largest to smallest, each at most once; {DURATION_EXAMPLES}"
                ));
            }
        }
        last_unit = Some(idx);
        let too_long = || format!("duration `{s}` is too long");
        let n: u64 = num.parse().map_err(|_| too_long())?;
        let part = n.checked_mul(DURATION_UNITS[idx].1).ok_or_else(too_long)?;
        total_ms = total_ms.checked_add(part).ok_or_else(too_long)?;
        rest = after;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Size units; decimal (`kB`, `MB`, `GB`, `TB`) and binary (`KiB`, `MiB`, `GiB`, `TiB`).
const SIZE_UNITS: [(&str, u64); 9] = [
    ("B", 1),
    ("kB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// Parses a size in bytes: a plain integer (`4096`) or an integer with a unit (`512KiB`,
/// `64MiB`, `1GiB`, `10kB`, `5MB`, `64 B`). Decimal units are powers of 1000, binary units
/// (`KiB`...) powers of 1024. Ambiguous spellings (`K`, `KB`, `k`) are rejected with a hint.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty size; {SIZE_EXAMPLES}"));
    }
    if s.starts_with('-') {
        return Err(format!("size `{s}` is negative; {SIZE_EXAMPLES}"));
    }
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!(
            "invalid size `{s}`: expected a whole number of bytes, optionally with a unit; {SIZE_EXAMPLES}"
        ));
    }
    let (num, unit) = s.split_at(digits);
    if unit.starts_with('.') || unit.starts_with(',') {
        return Err(format!(
            "invalid size `{s}`: only whole numbers are allowed (write 1536KiB, not 1.5MiB); {SIZE_EXAMPLES}"
        ));
    }
    // One optional space between number and unit: `64 B`.
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let too_big = || format!("size `{s}` is too large");
    let n: u64 = num.parse().map_err(|_| too_big())?;
    if unit.is_empty() {
        return Ok(n);
    }
    match SIZE_UNITS.iter().find(|(u, _)| *u == unit) {
        Some((_, mult)) => n.checked_mul(*mult).ok_or_else(too_big),
        None => {
            let hint = match unit.to_ascii_lowercase().as_str() {
                "k" | "kb" => " (use kB for 1000 or KiB for 1024)",
                "m" | "mb" => " (use MB for 1000000 or MiB for 1048576)",
                "g" | "gb" => " (use GB or GiB)",
                "t" | "tb" => " (use TB or TiB)",
                "kib" | "mib" | "gib" | "tib" => " (binary units are spelled KiB, MiB, GiB, TiB)",
                "b" | "bytes" | "byte" => " (use B, or no unit, for bytes)",
                _ => "",
            };
            Err(format!(
                "invalid size `{s}`: unknown unit `{unit}`{hint}; units: B, kB, MB, GB, KiB, MiB, GiB; {SIZE_EXAMPLES}"
            ))
        }
    }
}

/// Formats a duration the way [`parse_duration`] reads it: `1h30m`, `200ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    let sub_ms = d.as_nanos() % 1_000_000 != 0;
    if ms == 0 && !sub_ms {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, mult) in DURATION_UNITS {
        let mult = u128::from(mult);
        if ms >= mult {
            out.push_str(&format!("{}{unit}", ms / mult));
            ms %= mult;
        }
    }
    if sub_ms {
        // Not reachable from parse_duration; show the exact value rather than lie.
        return format!("{d:?}");
    }
    out
}

/// Formats a size with the largest binary unit that divides it exactly: `256KiB`, `64 B`.
pub fn format_size(n: u64) -> String {
    for (unit, mult) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if n >= mult && n % mult == 0 {
            return format!("{}{unit}", n / mult);
        }
    }
    format!("{n} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn durations_in_every_form() {
        let cases = [
            ("200ms", ms(200)),
            ("5s", ms(5_000)),
            ("2m", ms(120_000)),
            ("1h", ms(3_600_000)),
            ("1h30m", ms(5_400_000)),
            ("24h", ms(86_400_000)),
            ("1d", ms(86_400_000)),
            ("1m30s", ms(90_000)),
            ("1s500ms", ms(1_500)),
            ("1d2h3m4s5ms", ms(93_784_005)),
            ("0s", ms(0)),
            (" 10s ", ms(10_000)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_durations_say_why() {
        let cases = [
            ("", "empty duration"),
            ("30", "has no unit; write e.g. `30s`"),
            ("5sec", "unknown unit `sec`"),
            ("5S", "unknown unit `S`"),
            ("1.5s", "only whole numbers"),
            ("-5s", "negative"),
            ("s", "expected a whole number"),
            ("ms5", "expected a whole number"),
            ("30m1h", "largest to smallest"),
            ("1s1s", "largest to smallest"),
            ("1h 30m", "no spaces"),
            ("5s!", "unexpected `!`"),
            ("99999999999999999999s", "too long"),
            ("9999999999999999d", "too long"),
        ];
        for (text, want) in cases {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
        // Every error shows examples or the fix.
        let err = parse_duration("5sec").unwrap_err();
        assert!(err.contains("e.g. 200ms"), "{err}");
    }

    #[test]
    fn sizes_in_every_form() {
        let cases = [
            ("0", 0),
            ("4096", 4096),
            ("64 B", 64),
            ("64B", 64),
            ("512KiB", 512 * 1024),
            ("64MiB", 64 << 20),
            ("1GiB", 1 << 30),
            ("2TiB", 2 << 40),
            ("10kB", 10_000),
            ("5MB", 5_000_000),
            ("3GB", 3_000_000_000),
            ("1TB", 1_000_000_000_000),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_sizes_say_why() {
        let cases = [
            ("", "empty size"),
            ("KiB", "expected a whole number"),
            ("10KB", "use kB for 1000 or KiB for 1024"),
            ("10K", "use kB for 1000 or KiB for 1024"),
            ("10mib", "spelled KiB, MiB"),
            ("1.5MiB", "only whole numbers"),
            ("-1", "negative"),
            ("12 parsecs", "unknown unit `parsecs`"),
            ("99999999999999999999", "too large"),
            ("99999999999TiB", "too large"),
        ];
        for (text, want) in cases {
            let err = parse_size(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
        assert!(parse_size("10KB")
            .unwrap_err()
            .contains("e.g. 4096, 512KiB"));
    }

    #[test]
    fn formatting_round_trips() {
        for text in ["200ms", "5s", "2m", "1h30m", "1d", "1d1h1m1s1ms"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
        }
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_size(256 * 1024), "256KiB");
        assert_eq!(format_size(64), "64 B");
        assert_eq!(format_size(1000), "1000 B");
        assert_eq!(format_size(256 << 20), "256MiB");
    }
}
