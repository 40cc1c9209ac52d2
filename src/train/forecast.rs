//! `weatherflow train forecast`: fits one smartcore model per lead, calibrates conformal
//! intervals, evaluates on the held-out period against persistence and persistence + diurnal
//! cycle, and stores the version with its report.
//!
//! ```text
//!   replay (fallback only) ──> annual cycle per station (training period)
//!   replay again ──> per origin o: x_h = OriginFeatures::columns().row(h), s_h = interval_scale(o, h), T(o)
//!   train period:        y_h = T(o+h) - T(o)  ──ForecastSpec::fit──> point_h
//!   calibration period:  r = (T(o+h) - T^(o,h)) / s_h ──conformal quantiles──> q_h(p), p = 0.005..0.25
//!   model.json ──reload (bit-exact)──> replay serving it ──> test period scores (every origin,
//!   every lead, against real observations only) ──> report.md, metrics.json, plots
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use ndarray::{Array1, Array2};

use super::eval::{conformal_quantile, Intervals, LeadErrors};
use super::progress::Progress;
use super::report::{markdown_table, num, Band, Chart, Line};
use super::simulate::{replay, replay_from};
use super::store_version;
use super::{loader, write_report_dir, TrainError, TrainOptions, TrainOutcome};
use crate::anomaly::qc;
use crate::contract::LEADS;
use crate::forecast::features::{schema, Climatology, OriginFeatures, N_FEATURES};
use crate::forecast::trained::{LeadModel, LinearPerLead, QUANTILE_GRID};
use crate::models::serving::{Served, Serving};
use crate::models::{crate_versions, DataInfo, ModelMeta, ModelStore, Period, MODEL_FILE};

/// Minimum training rows per lead.
const MIN_ROWS: usize = 200;

fn hour_time(hour: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(hour * 3600, 0).unwrap_or_default()
}

/// One origin with an accepted temperature: its features for every lead.
struct OriginRow {
    station: usize,
    hour: i64,
    t0: f64,
    x: Vec<[f64; N_FEATURES]>,
    scale: [f64; LEADS],
}

/// Observations: (station, hour) -> (usable temperature, accepted by the outlier gate).
type Observations = HashMap<(usize, i64), (f64, bool)>;

/// Causal 28-day mean diurnal profile (the persistence + diurnal-cycle baseline).
#[derive(Default)]
struct RollingDiurnal {
    window: VecDeque<(i64, f64)>,
    sum: [f64; 24],
    n: [u32; 24],
}

impl RollingDiurnal {
    const HOURS: i64 = 28 * 24;

    fn push(&mut self, hour: i64, t: f64) {
        self.window.push_back((hour, t));
        let k = hour.rem_euclid(24) as usize;
        self.sum[k] += t;
        self.n[k] += 1;
        while self.window.front().is_some_and(|(h, _)| hour - h >= Self::HOURS) {
            if let Some((h, v)) = self.window.pop_front() {
                let k = h.rem_euclid(24) as usize;
                self.sum[k] -= v;
                self.n[k] -= 1;
            }
        }
    }

    /// Profile difference D(valid) - D(origin), when both hours have data.
    fn delta(&self, origin: i64, valid: i64) -> Option<f64> {
        let m = |h: i64| {
            let k = h.rem_euclid(24) as usize;
            (self.n[k] > 0).then(|| self.sum[k] / f64::from(self.n[k]))
        };
        Some(m(valid)? - m(origin)?)
    }
}

/// Scores of one station (or pooled) on the test period.
#[derive(Default)]
pub struct Scores {
    /// The served forecasts.
    pub model: LeadErrors,
    /// Persistence T(o).
    pub persistence: LeadErrors,
    /// Persistence + 28-day diurnal cycle.
    pub diurnal: LeadErrors,
    /// The statistical fallback.
    pub fallback: LeadErrors,
    /// Intervals of the served forecasts.
    pub intervals: Intervals,
    /// Origins scored.
    pub origins: u64,
    /// Origins where the trained model declined (no accepted temperature) and the fallback served.
    pub fallback_served: u64,
}

impl Scores {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "origins": self.origins,
            "fallback_served": self.fallback_served,
            "samples": self.model.count().to_vec(),
            "mae": self.model.mae().to_vec(),
            "rmse": self.model.rmse().to_vec(),
            "bias": self.model.bias().to_vec(),
            "mae_persistence": self.persistence.mae().to_vec(),
            "rmse_persistence": self.persistence.rmse().to_vec(),
            "mae_persistence_diurnal": self.diurnal.mae().to_vec(),
            "rmse_persistence_diurnal": self.diurnal.rmse().to_vec(),
            "mae_fallback": self.fallback.mae().to_vec(),
            "coverage": self.intervals.coverage().to_vec(),
            "mean_width": self.intervals.mean_width().to_vec(),
        })
    }
}

/// Per-station result against the quality bar.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Bar {
    /// Mean MAE over leads.
    pub mean_mae: f64,
    /// Lead-1 MAE.
    pub lead1: f64,
    /// Lead-24 MAE.
    pub lead24: f64,
    /// Leads where the model is not better than both baselines.
    pub not_better_leads: Vec<usize>,
    /// Lowest and highest coverage over leads.
    pub coverage: (f64, f64),
    /// Every criterion met.
    pub pass: bool,
}

impl Bar {
    fn of(s: &Scores, p: f64) -> Bar {
        let (m, pe, di) = (s.model.mae(), s.persistence.mae(), s.diurnal.mae());
        let not_better_leads: Vec<usize> = (0..LEADS).filter(|&i| !(m[i] < pe[i] && m[i] < di[i])).map(|i| i + 1).collect();
        let cov = s.intervals.coverage();
        let coverage = cov
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &c| (a.min(c), b.max(c)));
        let mean_mae = s.model.mean_mae();
        let pass = mean_mae <= 2.0
            && m[0] <= 0.6
            && m[LEADS - 1] <= 2.8
            && not_better_leads.is_empty()
            && coverage.0 >= p - 0.03
            && coverage.1 <= p + 0.03;
        Bar {
            mean_mae,
            lead1: m[0],
            lead24: m[LEADS - 1],
            not_better_leads,
            coverage,
            pass,
        }
    }
}

/// Runs `weatherflow train forecast`.
pub fn train_forecast(o: &TrainOptions) -> Result<TrainOutcome, TrainError> {
    o.periods.validate()?;
    let data = loader::load(&o.source)?;
    let stations = data.stations();
    let sidx: HashMap<&str, usize> = stations.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let spec = &o.config.forecast;
    let p = o.interval;

    // 1. Replay with the fallback only: observations (usable, and accepted by the outlier gate),
    //    then each station's annual cycle on the accepted training observations.
    let mut obs: Observations = HashMap::new();
    let bar = Progress::new(data.records.len() as u64, "forecast: observations", o.quiet);
    replay(&data.records, &Serving::default(), p, Some(&bar), |step| {
        let accepted = step.state.origin(step.record, step.fallback_points).temperature().is_some();
        if let Some(t) = qc::usable_temperature(step.record) {
            obs.insert((sidx[step.record.station_id.as_str()], step.record.hour_index()), (t, accepted));
        }
    });
    bar.finish(&format!("{} observations", obs.len()));
    let mut climatology: BTreeMap<String, Climatology> = BTreeMap::new();
    for (i, s) in stations.iter().enumerate() {
        let samples: Vec<(i64, f64)> = obs
            .iter()
            .filter(|((st, h), (_, acc))| *st == i && *acc && o.periods.train.contains(hour_time(*h)))
            .map(|((_, h), (t, _))| (*h, *t))
            .collect();
        match Climatology::fit(&samples) {
            Some(c) => {
                climatology.insert(s.clone(), c);
            }
            None => tracing::warn!(
                station = %s,
                samples = samples.len(),
                "less than {} days of training data: no annual cycle, the station will be served by the fallback",
                Climatology::MIN_DAYS
            ),
        }
    }
    if climatology.is_empty() {
        return Err(TrainError::NotEnoughData(format!(
            "no station has {} days of training data in {} (the annual cycle needs them)",
            Climatology::MIN_DAYS,
            o.periods.train
        )));
    }

    // 2. Replay again: the features of every accepted origin of a station with a climatology.
    let mut rows: Vec<OriginRow> = Vec::new();
    let bar = Progress::new(data.records.len() as u64, "forecast: features", o.quiet);
    replay(&data.records, &Serving::default(), p, Some(&bar), |step| {
        let st = sidx[step.record.station_id.as_str()];
        let hour = step.record.hour_index();
        let origin = step.state.origin(step.record, step.fallback_points);
        let (Some(t0), Some(climate)) = (origin.temperature(), climatology.get(&step.record.station_id)) else {
            return;
        };
        let Some(features) = OriginFeatures::new(&origin, climate) else {
            return;
        };
        let Some(columns) = features.columns() else { return };
        let x: Vec<[f64; N_FEATURES]> = (1..=LEADS).map(|h| columns.row(h)).collect();
        let scale: Option<Vec<f64>> = (1..=LEADS).map(|h| origin.interval_scale(h)).collect();
        if let Some(scale) = scale {
            rows.push(OriginRow {
                station: st,
                hour,
                t0,
                x,
                scale: std::array::from_fn(|i| scale[i]),
            });
        }
    });
    bar.finish(&format!("{} records, {} origins", data.records.len(), rows.len()));

    // 3. Fit one regressor per lead; calibrate its normalised residuals.
    let in_period = |per: &Period, o: i64, lead: usize| per.contains(hour_time(o)) && per.contains(hour_time(o + lead as i64));
    let bar = Progress::new(LEADS as u64, "forecast: fit + calibrate", o.quiet);
    let mut leads = Vec::with_capacity(LEADS);
    for lead in 1..=LEADS {
        let pick = |per: &Period, accepted_only: bool| -> (Vec<&OriginRow>, Vec<f64>) {
            let mut sel = Vec::new();
            let mut y = Vec::new();
            for r in &rows {
                if !in_period(per, r.hour, lead) {
                    continue;
                }
                if let Some(&(t, acc)) = obs.get(&(r.station, r.hour + lead as i64)) {
                    if acc || !accepted_only {
                        sel.push(r);
                        y.push(t);
                    }
                }
            }
            (sel, y)
        };
        let matrix = |sel: &[&OriginRow]| {
            let flat: Vec<f64> = sel.iter().flat_map(|r| r.x[lead - 1]).collect();
            Array2::from_shape_vec((sel.len(), N_FEATURES), flat).map_err(|e| TrainError::NotEnoughData(e.to_string()))
        };
        let (train, y_train) = pick(&o.periods.train, true);
        let (cal, y_cal) = pick(&o.periods.calibration, false);
        if train.len() < MIN_ROWS || cal.len() < MIN_ROWS / 4 {
            return Err(TrainError::NotEnoughData(format!(
                "lead {lead}: {} training and {} calibration rows (need {MIN_ROWS} and {}); check the periods against the data span {:?}",
                train.len(),
                cal.len(),
                MIN_ROWS / 4,
                data.span()
            )));
        }
        // Point model on the training period; conformal calibration of its residuals,
        // normalised by the local volatility, on the calibration period.
        let y: Array1<f64> = train.iter().zip(&y_train).map(|(r, t)| t - r.t0).collect();
        let point = spec.fit(lead, &matrix(&train)?, &y)?;
        let pred = point.predict(&matrix(&cal)?).map_err(|message| predict_error(lead, message))?;
        let resid: Vec<f64> = cal
            .iter()
            .zip(&y_cal)
            .zip(pred.iter())
            .map(|((r, t), d)| (t - r.t0 - d) / r.scale[lead - 1])
            .collect();
        let neg: Vec<f64> = resid.iter().map(|r| -r).collect();
        let grid = |k: usize| 1.0 - 0.005 * (k + 1) as f64;
        let lower: Vec<f64> = (0..QUANTILE_GRID)
            .map(|k| -conformal_quantile(&neg, grid(k)).unwrap_or(0.0))
            .collect();
        let upper: Vec<f64> = (0..QUANTILE_GRID)
            .map(|k| conformal_quantile(&resid, grid(k)).unwrap_or(0.0))
            .collect();
        leads.push(LeadModel { lead, point, lower, upper });
        bar.inc(1);
    }
    bar.finish(&format!("{LEADS} leads ({})", spec.model));
    let model = LinearPerLead {
        model_type: spec.model.clone(),
        features: schema(),
        climatology,
        leads,
        compiled: Default::default(),
    };
    model
        .validate()
        .map_err(|m| TrainError::NotEnoughData(format!("the fitted model is not servable: {m}")))?;
    let model_bytes = serde_json::to_vec(&model).map_err(|e| TrainError::NotEnoughData(e.to_string()))?;
    // Evaluate the model as stored: reloaded from its bytes.
    let reloaded: LinearPerLead = serde_json::from_slice(&model_bytes).map_err(|e| TrainError::NotEnoughData(e.to_string()))?;

    // 4. Evaluate on the test period, serving the reloaded model through the real stack.
    let store = ModelStore::new(&o.store);
    let version = match &o.version {
        Some(v) => v.clone(),
        None => store.next_version("forecast")?,
    };
    let name = format!("{}/{version}", spec.model);
    let serving = Serving {
        forecast: Some(Served {
            name: name.clone(),
            model: Arc::new(reloaded),
        }),
        anomaly: None,
    };
    let mut per_station: Vec<Scores> = stations.iter().map(|_| Scores::default()).collect();
    let mut pooled = Scores::default();
    let mut diurnal: Vec<RollingDiurnal> = stations.iter().map(|_| RollingDiurnal::default()).collect();
    let week_station = 0usize;
    let week_from = (o.periods.test.from + Duration::days(14)).min(o.periods.test.to);
    let week = Period {
        from: week_from,
        to: (week_from + Duration::days(7)).min(o.periods.test.to),
    };
    let mut week_points: BTreeMap<(i64, u32), (f64, f64, f64)> = BTreeMap::new();
    let bar = Progress::new(data.records.len() as u64, "forecast: evaluate", o.quiet);
    // Serving starts a day before the test period: the forecasts in it are exactly those of a
    // stack that served the model all along (the state is model-agnostic), at a fraction of the cost.
    let serve_from = Some(o.periods.test.from - Duration::days(1));
    replay_from(&data.records, &serving, serve_from, p, Some(&bar), |step| {
        let st = sidx[step.record.station_id.as_str()];
        let hour = step.record.hour_index();
        let t0 = qc::usable_temperature(step.record);
        if let Some(t) = t0 {
            diurnal[st].push(hour, t);
        }
        if !o.periods.test.contains(step.record.window_end) {
            return;
        }
        let Some(t0) = t0 else { return };
        let served_trained = step.forecast.model == name;
        for s in [&mut per_station[st], &mut pooled] {
            s.origins += 1;
            s.fallback_served += u64::from(!served_trained);
        }
        for (i, pt) in step.forecast.points.iter().enumerate() {
            let lead = i + 1;
            let valid = hour + lead as i64;
            if st == week_station && week.contains(hour_time(valid)) && (lead == 1 || lead == LEADS) {
                if let (Some(f), Some(lo), Some(hi)) = (pt.temperature, pt.lower, pt.upper) {
                    week_points.insert((valid, lead as u32), (f, lo, hi));
                }
            }
            let Some(&(y, _)) = obs.get(&(st, valid)) else { continue };
            if !o.periods.test.contains(hour_time(valid)) {
                continue;
            }
            let (Some(f), Some(lo), Some(hi)) = (pt.temperature, pt.lower, pt.upper) else {
                continue;
            };
            let fb = step.fallback_points.get(i).and_then(|q| q.temperature);
            let pd = diurnal[st].delta(hour, valid).map(|d| t0 + d);
            let (Some(fb), Some(pd)) = (fb, pd) else { continue };
            for s in [&mut per_station[st], &mut pooled] {
                s.model.add(lead, f - y);
                s.persistence.add(lead, t0 - y);
                s.diurnal.add(lead, pd - y);
                s.fallback.add(lead, fb - y);
                s.intervals.add(lead, lo, hi, y);
            }
        }
    });
    bar.finish("test period scored");
    if pooled.model.count().contains(&0) {
        return Err(TrainError::NotEnoughData(format!(
            "no scored forecast at some lead in the test period {}",
            o.periods.test
        )));
    }

    // 5. Report, plots, metrics.
    let bars: Vec<(String, Bar)> = stations
        .iter()
        .zip(&per_station)
        .map(|(s, sc)| (s.clone(), Bar::of(sc, p)))
        .collect();
    let report = render_report(o, &data.source, &name, &stations, &per_station, &pooled, &bars);
    let week_svg = week_chart(&stations[week_station], &week, &week_points, &obs, week_station, p, &name).svg();
    let mae_svg = mae_chart(&stations, &per_station, &pooled, &name).svg();
    let metrics = serde_json::json!({
        "interval": p,
        "test": o.periods.test.to_string(),
        "pooled": pooled.to_json(),
        "stations": stations.iter().zip(&per_station).map(|(s, sc)| (s.clone(), sc.to_json())).collect::<BTreeMap<_, _>>(),
        "quality_bar": bars.iter().map(|(s, b)| (s.clone(), serde_json::to_value(b).unwrap_or_default())).collect::<BTreeMap<_, _>>(),
    });
    let summary = serde_json::json!({
        "interval": p,
        "test": o.periods.test.to_string(),
        "stations": bars.iter().map(|(s, b)| (s.clone(), serde_json::to_value(b).unwrap_or_default())).collect::<BTreeMap<_, _>>(),
        "pooled_mean_mae": pooled.model.mean_mae(),
    });
    let files: Vec<(&str, Vec<u8>)> = vec![
        (MODEL_FILE, model_bytes),
        ("report.md", report.clone().into_bytes()),
        ("metrics.json", serde_json::to_vec_pretty(&metrics).unwrap_or_default()),
        ("forecast_week.svg", week_svg.into_bytes()),
        ("mae_by_lead.svg", mae_svg.into_bytes()),
    ];
    if o.dry_run {
        if let Some(dir) = &o.report_dir {
            write_report_dir(dir, &files[1..])?;
        }
        return Ok(TrainOutcome {
            version: None,
            dir: o.report_dir.clone(),
            promoted: false,
            report,
            metrics: summary,
        });
    }
    let meta = ModelMeta {
        kind: "forecast".into(),
        model_type: spec.model.clone(),
        version: version.clone(),
        created_at: Some(Utc::now()),
        features: schema(),
        data: DataInfo {
            source: data.source.clone(),
            stations: stations.clone(),
            records: data.records.len(),
            train: Some(o.periods.train),
            calibration: Some(o.periods.calibration),
            test: Some(o.periods.test),
        },
        hyperparameters: serde_json::to_value(spec).unwrap_or_default(),
        crate_versions: crate_versions(),
        holdout: summary.clone(),
        files: BTreeMap::new(),
    };
    store_version(&store, meta, &files, o.promote, report, summary)
}

fn predict_error(lead: usize, message: String) -> TrainError {
    TrainError::Factory(super::FactoryError::Fit {
        model: "prediction".into(),
        lead,
        message,
    })
}

fn render_report(
    o: &TrainOptions,
    source: &str,
    name: &str,
    stations: &[String],
    per: &[Scores],
    pooled: &Scores,
    bars: &[(String, Bar)],
) -> String {
    let p = o.interval;
    let mut s = String::new();
    let _ = writeln!(s, "# Forecast model {name}\n");
    let _ = writeln!(s, "- data: {source}");
    let _ = writeln!(
        s,
        "- train {}, calibrate {}, test {} (rolling origin every hour; scored against real observations only)",
        o.periods.train, o.periods.calibration, o.periods.test
    );
    let _ = writeln!(
        s,
        "- hyperparameters: {}",
        serde_json::to_string(&o.config.forecast).unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "- baselines: persistence T(o); persistence + diurnal cycle T(o) + D(o+h) - D(o), D = 28-day mean by UTC hour; fallback = the statistical model served without a trained one\n"
    );
    let _ = writeln!(s, "## Quality bar per station ({:.0} % intervals)\n", p * 100.0);
    let rows: Vec<Vec<String>> = bars
        .iter()
        .map(|(st, b)| {
            vec![
                st.clone(),
                format!("{} (<= 2.0)", num(b.mean_mae, 3)),
                format!("{} (<= 0.6)", num(b.lead1, 3)),
                format!("{} (<= 2.8)", num(b.lead24, 3)),
                if b.not_better_leads.is_empty() {
                    "all leads".into()
                } else {
                    format!("not at {:?}", b.not_better_leads)
                },
                format!("{}-{}", num(b.coverage.0, 3), num(b.coverage.1, 3)),
                if b.pass { "PASS".into() } else { "MISS".into() },
            ]
        })
        .collect();
    s.push_str(&markdown_table(
        &[
            "station",
            "mean MAE",
            "lead 1",
            "lead 24",
            "better than both baselines",
            "coverage range",
            "bar",
        ],
        &rows,
    ));
    for (title, sc) in std::iter::once(("all stations".to_string(), pooled)).chain(stations.iter().cloned().zip(per.iter())) {
        let _ = writeln!(
            s,
            "\n## Per lead: {title} ({} origins, trained model declined at {})\n",
            sc.origins, sc.fallback_served
        );
        let (m, r, pe, rpe, di, rdi, fb) = (
            sc.model.mae(),
            sc.model.rmse(),
            sc.persistence.mae(),
            sc.persistence.rmse(),
            sc.diurnal.mae(),
            sc.diurnal.rmse(),
            sc.fallback.mae(),
        );
        let (cov, wid, n, bias) = (
            sc.intervals.coverage(),
            sc.intervals.mean_width(),
            sc.model.count(),
            sc.model.bias(),
        );
        let rows: Vec<Vec<String>> = (0..LEADS)
            .map(|i| {
                vec![
                    (i + 1).to_string(),
                    n[i].to_string(),
                    num(m[i], 3),
                    num(pe[i], 3),
                    num(di[i], 3),
                    num(fb[i], 3),
                    num(r[i], 3),
                    num(rpe[i], 3),
                    num(rdi[i], 3),
                    num(bias[i], 3),
                    num(cov[i], 3),
                    num(wid[i], 2),
                ]
            })
            .collect();
        s.push_str(&markdown_table(
            &[
                "lead",
                "n",
                "MAE",
                "MAE pers.",
                "MAE pers.+diurnal",
                "MAE fallback",
                "RMSE",
                "RMSE pers.",
                "RMSE pers.+diurnal",
                "bias",
                "coverage",
                "mean width",
            ],
            &rows,
        ));
        let _ = writeln!(
            s,
            "\nmean over leads: MAE {} (persistence {}, persistence + diurnal {}, fallback {})",
            num(sc.model.mean_mae(), 3),
            num(sc.persistence.mean_mae(), 3),
            num(sc.diurnal.mean_mae(), 3),
            num(sc.fallback.mean_mae(), 3)
        );
    }
    let _ = writeln!(
        s,
        "\nPlots: `forecast_week.svg` (lead 1 and lead 24 with intervals against observations), `mae_by_lead.svg`."
    );
    s
}

fn week_chart(
    station: &str,
    week: &Period,
    points: &BTreeMap<(i64, u32), (f64, f64, f64)>,
    obs: &Observations,
    st: usize,
    p: f64,
    name: &str,
) -> Chart {
    let h0 = week.from.timestamp().div_euclid(3600);
    let h1 = week.to.timestamp().div_euclid(3600);
    let x = |h: i64| (h - h0) as f64;
    let series = |lead: u32| -> Vec<(f64, f64, f64, f64)> {
        (h0..h1)
            .map(|h| match points.get(&(h, lead)) {
                Some(&(f, lo, hi)) => (x(h), f, lo, hi),
                None => (x(h), f64::NAN, f64::NAN, f64::NAN),
            })
            .collect()
    };
    let (l1, l24) = (series(1), series(LEADS as u32));
    Chart {
        title: format!("{station}: {name} forecasts, week of {}", week.from.format("%Y-%m-%d")),
        x_label: "hours into the week (UTC)".into(),
        y_label: "temperature (degC)".into(),
        x_ticks: (0..=7)
            .map(|d| {
                (
                    f64::from(d * 24),
                    format!("{}", (week.from + Duration::days(i64::from(d))).format("%a %d")),
                )
            })
            .collect(),
        bands: vec![
            Band {
                name: format!("lead 24, {:.0} %", p * 100.0),
                color: "#e8743b".into(),
                points: l24.iter().map(|v| (v.0, v.2, v.3)).collect(),
            },
            Band {
                name: format!("lead 1, {:.0} %", p * 100.0),
                color: "#1f77b4".into(),
                points: l1.iter().map(|v| (v.0, v.2, v.3)).collect(),
            },
        ],
        lines: vec![
            Line {
                name: "observed".into(),
                color: "black".into(),
                points: (h0..h1).map(|h| (x(h), obs.get(&(st, h)).map_or(f64::NAN, |o| o.0))).collect(),
                dashed: false,
            },
            Line {
                name: "lead 1".into(),
                color: "#1f77b4".into(),
                points: l1.iter().map(|v| (v.0, v.1)).collect(),
                dashed: false,
            },
            Line {
                name: "lead 24".into(),
                color: "#e8743b".into(),
                points: l24.iter().map(|v| (v.0, v.1)).collect(),
                dashed: true,
            },
        ],
    }
}

fn mae_chart(stations: &[String], per: &[Scores], pooled: &Scores, name: &str) -> Chart {
    let line = |label: String, color: &str, v: [f64; LEADS], dashed: bool| Line {
        name: label,
        color: color.into(),
        points: v.iter().enumerate().map(|(i, &m)| ((i + 1) as f64, m)).collect(),
        dashed,
    };
    let colors = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
    let mut lines = vec![
        line(format!("{name} (all)"), "black", pooled.model.mae(), false),
        line("persistence".into(), "#d62728", pooled.persistence.mae(), true),
        line("persistence + diurnal".into(), "#ff7f0e", pooled.diurnal.mae(), true),
        line("fallback".into(), "#7f7f7f", pooled.fallback.mae(), true),
    ];
    for (i, (s, sc)) in stations.iter().zip(per).enumerate().take(colors.len()) {
        lines.push(line(format!("model, {s}"), colors[i], sc.model.mae(), false));
    }
    Chart {
        title: "Mean absolute error by lead, test period".into(),
        x_label: "lead (hours)".into(),
        y_label: "MAE (degC)".into(),
        x_ticks: (1..=LEADS)
            .filter(|l| l % 3 == 0 || *l == 1)
            .map(|l| (l as f64, l.to_string()))
            .collect(),
        bands: vec![],
        lines,
    }
}
