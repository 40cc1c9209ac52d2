//! The dashboard in a real browser: a weatherflow process with the monitoring stage serves it,
//! headless Chromium loads it (running its JavaScript against the JSON API) and takes a
//! screenshot, and the screenshot must show the forecast chart: the interval bands, the forecast
//! line and the actuals, in their colours, well beyond what the legend alone contains; a page for
//! a station without data must not.
//!
//! Chromium is required: the test fails (it does not skip) when it is missing. `scripts/test`
//! installs Debian's `chromium` package; `WEATHERFLOW_CHROMIUM` names another binary.

mod common;
mod ops_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use ops_support::*;

/// Colours the chart draws with (see src/ops/dashboard/dashboard.js).
const BAND: [u8; 3] = [0x9e, 0xca, 0xe1];
const EARLIER_BAND: [u8; 3] = [0xfd, 0xd0, 0xa2];
const FORECAST: [u8; 3] = [0x1f, 0x5f, 0xa8];
const ACTUAL: [u8; 3] = [0xd6, 0x27, 0x28];

fn chromium() -> PathBuf {
    if let Ok(p) = std::env::var("WEATHERFLOW_CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("Chromium is required for the dashboard test and was not found: run scripts/test (it installs Debian's chromium package), or set WEATHERFLOW_CHROMIUM");
}

/// Loads `url` in headless Chromium and returns the screenshot's path.
fn screenshot(browser: &Path, url: &str, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let profile = dir.join(unique("chromium-profile"));
    let png = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&png);
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--window-size=1400,1100",
        "--virtual-time-budget=15000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--screenshot={}", png.display()))
    .arg(url);
    let out = run_with_timeout(cmd, Duration::from_secs(120));
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        png.is_file(),
        "no screenshot from {} ({}):\n{}",
        browser.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    png
}

/// Pixels of each colour (each channel within 3).
fn colour_counts(png: &Path, colours: &[[u8; 3]]) -> (Vec<usize>, (u32, u32)) {
    let decoder = png::Decoder::new(std::fs::File::open(png).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let mut counts = vec![0; colours.len()];
    for px in buf[..info.buffer_size()].chunks(channels) {
        for (i, c) in colours.iter().enumerate() {
            if (0..3).all(|k| px[k].abs_diff(c[k]) <= 3) {
                counts[i] += 1;
            }
        }
    }
    (counts, (info.width, info.height))
}

#[test]
fn the_dashboard_draws_the_forecast_chart_in_headless_chromium() {
    let browser = chromium();
    let b = brokers();
    let t = topics("dash");
    let input = nyc(1500);
    publish(&b, &t.features, 3, &input);
    let port = free_ports(1)[0];
    let cfg = ops_config("dash", &t, &b, 3, port, "");
    let proc = Proc::start(&cfg, "dash");
    let addr = format!("127.0.0.1:{port}");
    wait_for(&proc, Duration::from_secs(120), || {
        let (code, body) = get(&addr, "/api/stations/JFK");
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let ready = code == 200
            && v["latest"]["forecast"].as_array().is_some_and(|f| f.len() == 24)
            && v["earlier"]["points"].is_array()
            && v["actuals"].as_array().is_some_and(|a| a.len() >= 40)
            && v["metrics"]["metrics"]["all"]["pairs"].as_i64().is_some_and(|n| n > 1000);
        ready.then_some(())
    });
    let shot = screenshot(&browser, &format!("http://{addr}/?station=JFK"), "dashboard-JFK");
    let (counts, size) = colour_counts(&shot, &[BAND, EARLIER_BAND, FORECAST, ACTUAL]);
    println!(
        "screenshot {} {size:?}: band {}, earlier band {}, forecast {}, actual {} pixels",
        shot.display(),
        counts[0],
        counts[1],
        counts[2],
        counts[3]
    );
    // The legend holds a 14 x 10 swatch of each colour; the chart must draw far more.
    assert!(counts[0] > 3000, "interval band of the newest forecast: {} pixels", counts[0]);
    assert!(counts[1] > 3000, "interval band of the earlier forecast: {} pixels", counts[1]);
    assert!(counts[2] > 600, "newest forecast line: {} pixels", counts[2]);
    assert!(counts[3] > 600, "actuals line: {} pixels", counts[3]);

    // A station without data: no chart, only the legend's swatches.
    let empty = screenshot(&browser, &format!("http://{addr}/?station=NO-SUCH-STATION"), "dashboard-empty");
    let (none, _) = colour_counts(&empty, &[BAND, EARLIER_BAND, FORECAST, ACTUAL]);
    println!("no-data page: {none:?}");
    for (i, n) in none.iter().enumerate() {
        assert!(*n < 400, "colour {i} drawn without data: {n} pixels");
    }
    let (status, log) = proc.stop();
    assert!(status.success(), "{status}\n{log}");
}
