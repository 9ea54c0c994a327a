//! ASCII line protocols: splitting a byte stream into lines, and parsing a line into values
//! with a regex (named captures), `key=value` pairs, CSV columns, or NMEA-style `$BODY*hh`.

use super::checksum::xor8;
use super::Sample;

/// Where a field's text is found in a line.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A named capture (regex) or a key (`key=value`).
    Name(String),
    /// A 0-based column (CSV, NMEA; the NMEA sentence id is column 0).
    Column(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct LineField {
    pub quantity: &'static str,
    pub source: Source,
    pub unit: Option<&'static str>,
}

/// A compiled pattern; compared by its text (configs are compared to detect reload changes).
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    Regex(Pattern),
    /// `t=21.5 rh=40` (pairs split by spaces, commas or semicolons; `=` or `:` between).
    KeyValue,
    Csv {
        delimiter: char,
    },
    /// `$BODY*hh`, hh the XOR of BODY; BODY's columns split by commas. Only sentences whose
    /// column 0 is `sentence` count, when set.
    Nmea {
        sentence: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct LineSpec {
    pub format: Format,
    pub fields: Vec<LineField>,
    /// Longer lines are noise (or a wrong baud rate): dropped whole.
    pub max_line: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LineError {
    #[error("not text (a wrong baud rate or line noise)")]
    NotText,
    #[error("line longer than {0} bytes, dropped")]
    TooLong(usize),
    #[error("does not match the pattern")]
    NoMatch,
    #[error("no field `{0}` (truncated line?)")]
    Missing(String),
    #[error("field `{field}`: `{text}` is not a number")]
    NotNumber { field: String, text: String },
    #[error("not a `$...*hh` sentence")]
    NotSentence,
    #[error("checksum *{got:02X}, computed {computed:02X}")]
    Checksum { got: u8, computed: u8 },
}

impl LineSpec {
    /// The values of one line (without its terminator). An NMEA sentence of another type gives
    /// no values and no error.
    pub fn parse(&self, line: &str) -> Result<Vec<Sample>, LineError> {
        match &self.format {
            Format::Regex(p) => {
                let caps = p.0.captures(line).ok_or(LineError::NoMatch)?;
                self.collect(|src| match src {
                    Source::Name(n) => caps.name(n).map(|m| m.as_str()),
                    Source::Column(i) => caps.get(*i).map(|m| m.as_str()),
                })
            }
            Format::KeyValue => {
                let pairs: Vec<(&str, &str)> = line
                    .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
                    .filter_map(|p| p.split_once(['=', ':']))
                    .collect();
                self.collect(|src| match src {
                    Source::Name(n) => pairs.iter().find(|(k, _)| k == n).map(|(_, v)| *v),
                    Source::Column(i) => pairs.get(*i).map(|(_, v)| *v),
                })
            }
            Format::Csv { delimiter } => {
                let cols: Vec<&str> = line.split(*delimiter).collect();
                self.collect(|src| column(&cols, src))
            }
            Format::Nmea { sentence } => {
                let body = nmea_body(line)?;
                let cols: Vec<&str> = body.split(',').collect();
                if sentence.as_ref().is_some_and(|s| cols[0] != s) {
                    return Ok(Vec::new());
                }
                self.collect(|src| column(&cols, src))
            }
        }
    }

    fn collect<'l>(
        &self,
        mut text_of: impl FnMut(&Source) -> Option<&'l str>,
    ) -> Result<Vec<Sample>, LineError> {
        let mut out = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            let text = text_of(&f.source)
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| LineError::Missing(f.quantity.to_string()))?;
            let value = number(text).ok_or_else(|| LineError::NotNumber {
                field: f.quantity.to_string(),
                text: text.chars().take(32).collect(),
            })?;
            out.push(Sample::good(f.quantity, value, f.unit));
        }
        Ok(out)
    }
}

fn column<'l>(cols: &[&'l str], src: &Source) -> Option<&'l str> {
    match src {
        Source::Column(i) => cols.get(*i).copied(),
        Source::Name(_) => None,
    }
}

/// A decimal number, allowing a leading `+` and trailing unit letters (`21.5C`, `1953mm`).
fn number(text: &str) -> Option<f64> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E')))
        .unwrap_or(text.len());
    let num = text[..end].trim_end_matches(['e', 'E']);
    let v: f64 = num.parse().ok()?;
    v.is_finite().then_some(v)
}

/// Checks `$BODY*hh` and returns BODY.
pub fn nmea_body(line: &str) -> Result<&str, LineError> {
    let start = line.find('$').ok_or(LineError::NotSentence)?;
    let rest = &line[start + 1..];
    let star = rest.rfind('*').ok_or(LineError::NotSentence)?;
    let (body, hex) = (&rest[..star], rest[star + 1..].trim());
    if hex.len() != 2 || body.is_empty() {
        return Err(LineError::NotSentence);
    }
    let got = u8::from_str_radix(hex, 16).map_err(|_| LineError::NotSentence)?;
    let computed = xor8(body.as_bytes());
    if got != computed {
        return Err(LineError::Checksum { got, computed });
    }
    Ok(body)
}

/// Splits a byte stream into lines at CR or LF (a CR LF pair gives one line; empty lines are
/// skipped). A line longer than `max` is reported once and dropped up to its terminator.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    /// Inside an over-long line: discard until the next terminator.
    skipping: bool,
}

impl LineSplitter {
    pub fn new(max: usize) -> LineSplitter {
        LineSplitter {
            buf: Vec::with_capacity(max.min(4096)),
            max,
            skipping: false,
        }
    }

    /// Feeds `bytes`, calling `on_line` with each complete line (or its error).
    pub fn push(&mut self, bytes: &[u8], mut on_line: impl FnMut(Result<&str, LineError>)) {
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if self.skipping {
                    self.skipping = false;
                } else if !self.buf.is_empty() {
                    match std::str::from_utf8(&self.buf) {
                        Ok(s) => on_line(Ok(s)),
                        Err(_) => on_line(Err(LineError::NotText)),
                    }
                }
                self.buf.clear();
            } else if !self.skipping {
                if self.buf.len() >= self.max {
                    on_line(Err(LineError::TooLong(self.max)));
                    self.buf.clear();
                    self.skipping = true;
                } else {
                    self.buf.push(b);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_with_units_and_signs() {
        assert_eq!(number("1953"), Some(1953.0));
        assert_eq!(number("+21.5C"), Some(21.5));
        assert_eq!(number("-4.25e1"), Some(-42.5));
        assert_eq!(number("12e"), Some(12.0));
        assert_eq!(number("abc"), None);
        assert_eq!(number(""), None);
    }

    #[test]
    fn splitter_handles_cr_crlf_and_long_lines() {
        let mut s = LineSplitter::new(8);
        let mut got = Vec::new();
        s.push(b"R1953\rR19", |l| got.push(l.map(str::to_string)));
        s.push(b"54\r\n\r\n0123456789abc\nok\n", |l| {
            got.push(l.map(str::to_string))
        });
        assert_eq!(
            got,
            [
                Ok("R1953".to_string()),
                Ok("R1954".to_string()),
                Err(LineError::TooLong(8)),
                Ok("ok".to_string())
            ]
        );
    }
}
