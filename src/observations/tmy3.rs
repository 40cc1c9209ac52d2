//! NREL TMY3 typical-meteorological-year files (`greensboro_tmy3_hourly.csv`, `723170TYA.CSV`).
//!
//! Layout: line 1 is station metadata (`id, "name", state, UTC offset in hours, lat, lon,
//! elevation`); line 2 is the header; then one row per hour. Columns are found BY HEADER NAME:
//! `Date (MM/DD/YYYY)`, `Time (HH:MM)`, `Dry-bulb (C)`, `RHum (%)`, `Pressure (mbar)` (STATION
//! level; 1 mbar = 1 hPa), `Wspd (m/s)`, `Lprecip depth (mm)`. The station id is the metadata id
//! (`723170`).
//!
//! Time: `Date`/`Time` are LOCAL STANDARD time (no daylight saving), HOUR ENDING, `01:00` to
//! `24:00`, where `24:00` is midnight at the END of that date. The observation time is that hour
//! end converted to UTC with the metadata offset (`-5` -> add 5 h), so `01/01/1988 24:00` becomes
//! `1988-01-02T05:00:00Z`.
//!
//! Stitched years: a TMY3 year is twelve real months taken from different years (Greensboro:
//! Jan 1988, Feb 1996, Mar 1990, Apr 1980, May 1986, Jun 1989, Jul 1981, Aug 2001, Sep 2003,
//! Oct 1980, Nov 1994, Dec 1980). Each row keeps its own year as written, and rows are returned in
//! FILE order without sorting. Consequences: time is not monotonic (it jumps backward at five
//! month joins in the Greensboro file, e.g. Feb 1996 -> Mar 1990) and the last hour of a month and
//! the first of the next are years apart. Consumers that need a monotonic clock (a live stream's
//! watermark, lagged features) must treat each month as its own segment. February 1996 has 28
//! days in the file although 1996 is a leap year (the 29th is left out, as TMY3 always does).
//!
//! Missing values: an empty field or any value at or below -999 (`-999`, `-9900`, `-9999`) is
//! missing. The Greensboro file has none in the columns read here.
//!
//! Precipitation: the header says millimetres, but the values are tenths of a millimetre, and
//! the loader divides them by 10. Evidence in the Greensboro file: every value is quantised like
//! hundredths of an inch expressed in tenths of a mm (3, 5, 8, 10, 13, 18, 25 = 0.01..0.1 in),
//! every accumulation period (`Lprecip quantity (hr)`) is 1 h, single hours reach 500 (50 mm/h
//! after the fix, 500 mm/h before: above the world record of about 305 mm/h), and the year sums
//! to 834 mm after the fix (8,345 before) where the local climate has about 1,100 mm.

use std::io::BufRead;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};

use super::{column_index, CsvReader, LoadError, Missing, Observation};

/// Largest accepted metadata UTC offset, in hours (either sign).
const MAX_OFFSET_HOURS: f64 = 14.0;

pub(super) fn load<R: BufRead>(csv: &mut CsvReader<R>) -> Result<Vec<Observation>, LoadError> {
    let missing_line = |csv: &CsvReader<R>, what| LoadError::MissingLine {
        file: csv.file().to_string(),
        line: csv.line() + 1,
        what,
    };
    if !csv.advance()? {
        return Err(missing_line(csv, "metadata"));
    }
    if csv.len() < 4 {
        return Err(csv.malformed(format!(
            "metadata line needs at least 4 fields (id, name, state, UTC offset), found {}",
            csv.len()
        )));
    }
    let station_id = csv.text(0, "station id")?.to_string();
    let offset_hours = csv.number(3, "UTC offset", Missing::AtOrBelowMinus999)?.unwrap_or(f64::NAN);
    if offset_hours.is_nan() || offset_hours.abs() > MAX_OFFSET_HOURS {
        return Err(csv.bad_value(3, "UTC offset", format!("expected hours within +-{MAX_OFFSET_HOURS}")));
    }
    let offset = Duration::seconds((offset_hours * 3600.0).round() as i64);

    if !csv.advance()? {
        return Err(missing_line(csv, "header"));
    }
    let header = csv.fields();
    let col = |name: &str| column_index(csv, &header, name);
    let (date, time) = (col(DATE)?, col(TIME)?);
    let (temp, rh, pressure, wind, precip) = (col(TEMP)?, col(RH)?, col(PRESSURE)?, col(WIND)?, col(PRECIP)?);

    let mut out = Vec::with_capacity(8760);
    while csv.advance()? {
        csv.expect_len(header.len())?;
        let day = NaiveDate::parse_from_str(csv.text(date, DATE)?, "%m/%d/%Y")
            .map_err(|e| csv.bad_value(date, DATE, format!("not an MM/DD/YYYY date: {e}")))?;
        let hour_end =
            parse_hour_ending(csv.text(time, TIME)?).ok_or_else(|| csv.bad_value(time, TIME, "not an HH:MM time from 01:00 to 24:00"))?;
        let utc = local_hour_end_to_utc(day, hour_end, offset).ok_or_else(|| csv.bad_value(date, DATE, "date out of range"))?;
        out.push(Observation {
            station_id: station_id.clone(),
            time: utc,
            temperature: csv.number(temp, TEMP, Missing::AtOrBelowMinus999)?,
            humidity: csv.number(rh, RH, Missing::AtOrBelowMinus999)?,
            pressure: csv.number(pressure, PRESSURE, Missing::AtOrBelowMinus999)?,
            wind_speed: csv.number(wind, WIND, Missing::AtOrBelowMinus999)?,
            precipitation: csv
                .number(precip, PRECIP, Missing::AtOrBelowMinus999)?
                .map(|tenths| tenths / PRECIP_UNITS_PER_MM),
        });
    }
    Ok(out)
}

const DATE: &str = "Date (MM/DD/YYYY)";
const TIME: &str = "Time (HH:MM)";
const TEMP: &str = "Dry-bulb (C)";
const RH: &str = "RHum (%)";
const PRESSURE: &str = "Pressure (mbar)";
const WIND: &str = "Wspd (m/s)";
const PRECIP: &str = "Lprecip depth (mm)";
/// The file's precipitation values are tenths of a millimetre (see the module doc).
const PRECIP_UNITS_PER_MM: f64 = 10.0;

/// Parses a TMY3 `HH:MM` (hours 0-24, `24` only with `:00`) into the time since local midnight.
fn parse_hour_ending(s: &str) -> Option<Duration> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return None;
    }
    Some(Duration::minutes(h * 60 + m))
}

/// `day` + `since_midnight` in local standard time with UTC offset `offset`, as UTC.
fn local_hour_end_to_utc(day: NaiveDate, since_midnight: Duration, offset: Duration) -> Option<DateTime<Utc>> {
    let local = day.and_time(NaiveTime::MIN).checked_add_signed(since_midnight)?;
    Some(local.checked_sub_signed(offset)?.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observations::{load_reader, SourceFormat};

    #[test]
    fn hour_ending_times_convert_to_utc() {
        let day = NaiveDate::from_ymd_opt(1988, 1, 1).unwrap();
        let five = Duration::hours(-5);
        let t = |s: &str| {
            local_hour_end_to_utc(day, parse_hour_ending(s).unwrap(), five)
                .unwrap()
                .to_rfc3339()
        };
        assert_eq!(t("01:00"), "1988-01-01T06:00:00+00:00");
        assert_eq!(t("19:00"), "1988-01-02T00:00:00+00:00");
        assert_eq!(t("24:00"), "1988-01-02T05:00:00+00:00");
        for bad in ["25:00", "24:30", "1:5", "ab:00", "12", "-1:00", "12:60", ""] {
            assert_eq!(parse_hour_ending(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_metadata_header_and_sentinels() {
        let input = "723170,\"GREENSBORO PIEDMONT TRIAD INT\",NC,-5.0,36.100,-79.950,273\n\
                     Time (HH:MM),Date (MM/DD/YYYY),Dry-bulb (C),RHum (%),Pressure (mbar),Wspd (m/s),Lprecip depth (mm)\n\
                     24:00,12/31/1980,5.0,83,996,2.1,5\n\
                     01:00,01/01/1988,-9900,-9999,-999,,0\n";
        let obs = load_reader(SourceFormat::Tmy3, input.as_bytes(), "t").unwrap();
        assert_eq!(obs.len(), 2);
        assert_eq!(obs[0].station_id, "723170");
        assert_eq!(obs[0].time.to_rfc3339(), "1981-01-01T05:00:00+00:00");
        assert_eq!(obs[0].precipitation, Some(0.5));
        assert_eq!(
            (obs[1].temperature, obs[1].humidity, obs[1].pressure, obs[1].wind_speed),
            (None, None, None, None)
        );
    }

    #[test]
    fn bad_offset_and_bad_time_are_errors() {
        let e = load_reader(SourceFormat::Tmy3, "1,x,NC,abc\n".as_bytes(), "t").unwrap_err();
        assert_eq!((e.line(), e.column()), (Some(1), Some("UTC offset")));
        let e = load_reader(SourceFormat::Tmy3, "1,x,NC,-5\n".as_bytes(), "t").unwrap_err();
        assert!(
            matches!(
                e,
                LoadError::MissingLine {
                    line: 2,
                    what: "header",
                    ..
                }
            ),
            "{e}"
        );
        let input = "1,x,NC,-5\nDate (MM/DD/YYYY),Time (HH:MM),Dry-bulb (C),RHum (%),Pressure (mbar),Wspd (m/s),Lprecip depth (mm)\n\
                     01/01/1988,25:00,1,2,3,4,5\n";
        let e = load_reader(SourceFormat::Tmy3, input.as_bytes(), "t").unwrap_err();
        assert_eq!((e.line(), e.column()), (Some(3), Some(TIME)));
    }
}
