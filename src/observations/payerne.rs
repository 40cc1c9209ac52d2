//! BSRN Payerne one-minute observations (`payerne_2016-06_1min.csv`).
//!
//! Header `ts,ghi,temp_c,rh_pct,pressure_hpa`; columns are found by name. `ts` is UTC
//! `YYYY-MM-DD HH:MM:SS`; temperature degC, relative humidity %, STATION pressure hPa (946-968,
//! Payerne sits at 491 m). The station measures neither wind nor precipitation here, so those
//! fields are always `None`; `ghi` (irradiance) is not part of [`Observation`]. `-999` (or
//! `-999.0`) in any column, or an empty field, is missing. The station id is always [`STATION_ID`].
//!
//! In the June 2016 file the `-999` sentinel occurs only in `ghi`; humidity reads 100.5 % in about
//! 16,000 minutes (sensor saturation), which is kept as measured.

use std::io::BufRead;

use chrono::NaiveDateTime;

use super::{column_index, CsvReader, LoadError, Missing, Observation};

/// Station id given to every Payerne observation.
pub const STATION_ID: &str = "PAY";

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
    let (ts, temp, rh, pressure) = (col("ts")?, col("temp_c")?, col("rh_pct")?, col("pressure_hpa")?);

    let mut out = Vec::new();
    while csv.advance()? {
        csv.expect_len(header.len())?;
        let raw_time = csv.text(ts, "ts")?;
        let time = NaiveDateTime::parse_from_str(raw_time, "%Y-%m-%d %H:%M:%S")
            .map_err(|e| csv.bad_value(ts, "ts", format!("not a YYYY-MM-DD HH:MM:SS time: {e}")))?
            .and_utc();
        out.push(Observation {
            station_id: STATION_ID.to_string(),
            time,
            temperature: csv.number(temp, "temp_c", Missing::Minus999)?,
            humidity: csv.number(rh, "rh_pct", Missing::Minus999)?,
            pressure: csv.number(pressure, "pressure_hpa", Missing::Minus999)?,
            wind_speed: None,
            precipitation: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::observations::{load_reader, SourceFormat};

    #[test]
    fn reads_minutes_and_sentinels() {
        let input = "ts,ghi,temp_c,rh_pct,pressure_hpa\n\
                     2016-06-01 00:00:00,-999.0,9.3,100.5,958.0\n\
                     2016-06-01 00:01:00,0.0,-999,-999.0,958.0\n";
        let obs = load_reader(SourceFormat::PayerneBsrn, input.as_bytes(), "t").unwrap();
        assert_eq!(obs.len(), 2);
        assert_eq!(obs[0].station_id, "PAY");
        assert_eq!(obs[0].time.to_rfc3339(), "2016-06-01T00:00:00+00:00");
        assert_eq!(
            (obs[0].temperature, obs[0].humidity, obs[0].pressure),
            (Some(9.3), Some(100.5), Some(958.0))
        );
        assert_eq!((obs[1].temperature, obs[1].humidity), (None, None));
        assert_eq!((obs[1].wind_speed, obs[1].precipitation), (None, None));
    }

    #[test]
    fn bad_timestamp_is_an_error() {
        let input = "ts,ghi,temp_c,rh_pct,pressure_hpa\n2016-06-31 00:00:00,0,1,2,3\n";
        let e = load_reader(SourceFormat::PayerneBsrn, input.as_bytes(), "t").unwrap_err();
        assert_eq!((e.line(), e.column()), (Some(2), Some("ts")));
    }
}
