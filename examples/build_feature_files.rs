//! Builds the committed hourly feature files from the three real data files in `data/raw/`.
//!
//! ```text
//! cargo run --example build_feature_files
//! ```
//!
//! Writes, under `data/features/`, one `contract::FeatureRecord` JSON object per line (with
//! `window_start`), one-hour hour-ending windows:
//!
//! - `nyc_2013.jsonl` (EWR, JFK, LGA) and `payerne_2016-06.jsonl` (PAY): sorted by `window_end`,
//!   then `station_id`, i.e. interleaved as a live stream would deliver them.
//! - `greensboro_tmy3.jsonl` (723170): in FILE order. A TMY3 year stitches twelve months from
//!   different years and every row keeps its own year, so `window_end` jumps forward or BACKWARD
//!   at month joins (Jan 1988, Feb 1996, Mar 1990, Apr 1980, ...). Sorting by time would regroup
//!   the months by year; file order keeps the calendar of the typical year instead. A consumer
//!   that rejects stale windows per station will refuse the first window after each backward jump.
//!
//! Every record is checked with `FeatureRecord::validate` before it is written; the run fails if
//! one is refused. Output is deterministic (same input, same bytes).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use weatherflow::contract::FeatureRecord;
use weatherflow::features::{features_in_input_order, hourly_features, DEFAULT_WINDOW};
use weatherflow::observations::{load_file, SourceFormat};

/// Output order of one feature file.
#[derive(Clone, Copy)]
enum Order {
    /// By window end, then station id.
    Stream,
    /// As the windows first appear in the input file.
    File,
}

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let raw = root.join("data/raw");
    let out_dir = root.join("data/features");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let jobs = [
        (SourceFormat::NycAsos, "nyc_asos_2013_hourly.csv", "nyc_2013.jsonl", Order::Stream),
        (
            SourceFormat::PayerneBsrn,
            "payerne_2016-06_1min.csv",
            "payerne_2016-06.jsonl",
            Order::Stream,
        ),
        (
            SourceFormat::Tmy3,
            "greensboro_tmy3_hourly.csv",
            "greensboro_tmy3.jsonl",
            Order::File,
        ),
    ];
    for (format, input, output, order) in jobs {
        let obs = load_file(format, raw.join(input))?;
        let records = match order {
            Order::Stream => {
                let mut r = hourly_features(&obs, DEFAULT_WINDOW);
                r.sort_by(|a, b| a.window_end.cmp(&b.window_end).then_with(|| a.station_id.cmp(&b.station_id)));
                r
            }
            Order::File => features_in_input_order(&obs, DEFAULT_WINDOW),
        };
        let path = out_dir.join(output);
        write_jsonl(&path, &records)?;
        println!(
            "{format}: {} observations -> {} records in {}",
            obs.len(),
            records.len(),
            path.display()
        );
    }
    Ok(())
}

/// Validates every record, then writes them one JSON object per line.
fn write_jsonl(path: &Path, records: &[FeatureRecord]) -> Result<()> {
    for r in records {
        if let Err(rejection) = r.validate() {
            bail!("record {} {} would be refused: {rejection}", r.station_id, r.window_end);
        }
    }
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::new(file);
    for r in records {
        serde_json::to_writer(&mut w, r)?;
        w.write_all(b"\n")?;
    }
    w.flush().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
