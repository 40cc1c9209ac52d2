//! The command line: one subcommand per job, parsed with clap derive; `main.rs` only calls
//! [`main`].

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{OnFailure, Overrides, Settings};
use crate::{demo, kafka, launcher, runner, tail};

/// weatherflow: live weather observations to 24-hour temperature forecasts and anomaly alerts.
#[derive(Debug, Parser)]
#[command(name = "weatherflow", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the cluster's stages of [pipeline] (all local processes, or one with --process).
    Run(RunArgs),
    /// Publish station observations (real files or synthetic) to the raw topic, or to a file.
    Produce(Box<crate::produce::command::ProduceArgs>),
    /// Run the whole pipeline on an in-process broker with real NYC data (nothing to install).
    Demo(DemoArgs),
    /// Print predictions from the predictions topic, formatted for people.
    Tail(TailArgs),
    /// Publish feature records from a JSON-lines file to the features topic (key = station_id).
    Publish(PublishArgs),
    /// Check a config file and print every problem in it.
    CheckConfig(ConfigArgs),
    /// Show every process of the cluster: up or down, lag, throughput, last checkpoint, models.
    Status(crate::ops::command::StatusArgs),
    /// Train a forecast or anomaly model, evaluate it on held-out data and store a new version.
    #[command(subcommand)]
    Train(crate::train::command::TrainCommand),
    /// List, show, promote or roll back the versions in the model store.
    #[command(subcommand)]
    Models(crate::models::command::ModelsCommand),
    /// Measure throughput, latency, memory and recovery against same-run baselines (release build).
    Bench(Box<crate::bench::BenchArgs>),
}

/// Config file and broker override shared by commands that talk to Kafka.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Cluster configuration file (defaults are used when omitted).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap brokers, HOST:PORT[,HOST:PORT]; overrides kafka.brokers.
    #[arg(long)]
    pub brokers: Option<String>,
}

/// `run`
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: ConfigArgs,
    /// Run only this process of the cluster (0-based index into cluster.processes).
    #[arg(long)]
    pub process: Option<usize>,
    /// Local run: this many processes on consecutive ports of 127.0.0.1 (overrides the file).
    #[arg(long)]
    pub processes: Option<usize>,
    /// Worker threads per process (overrides cluster.workers).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Stop once the input topic has been read to its end and every output acknowledged.
    #[arg(long)]
    pub until_end: bool,
}

/// `demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// NYC ASOS hourly observations to replay (CSV).
    #[arg(long, default_value = "data/raw/nyc_asos_2013_hourly.csv")]
    pub file: PathBuf,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Records per second to publish (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Show one forecast per station every this many hours of data (0 = all; anomalies always).
    #[arg(long, default_value_t = 168)]
    pub every_hours: i64,
    /// Replay only the first N records.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Use this Kafka broker (HOST:PORT) instead of the in-process one.
    #[arg(long)]
    pub brokers: Option<String>,
}

/// `tail`
#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub common: ConfigArgs,
    /// Only new predictions (default: from the beginning of the topic).
    #[arg(long)]
    pub from_end: bool,
    /// Stop at the end of the topic instead of following it.
    #[arg(long)]
    pub until_end: bool,
    /// Only this station.
    #[arg(long)]
    pub station: Option<String>,
    /// Only anomalies.
    #[arg(long)]
    pub anomalies: bool,
    /// Stop after N predictions.
    #[arg(long, short = 'n')]
    pub max: Option<usize>,
    /// Print the raw JSON of each prediction.
    #[arg(long)]
    pub json: bool,
}

/// `publish`
#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub common: ConfigArgs,
    /// JSON-lines file of feature records.
    #[arg(long)]
    pub file: PathBuf,
    /// Topic (default: topics.features of the config).
    #[arg(long)]
    pub topic: Option<String>,
}

/// Installs SIGINT/SIGTERM handlers: the first sets the returned flag (graceful drain), a second
/// Ctrl-C exits at once.
fn shutdown_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(flag)
}

fn load(common: &ConfigArgs, overrides: Overrides) -> anyhow::Result<Settings> {
    let o = Overrides {
        brokers: common.brokers.clone(),
        ..overrides
    };
    Ok(Settings::load(common.config.as_deref(), &o)?)
}

/// Parses the command line and runs the command.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(a) => {
            let overrides = Overrides {
                processes: a.processes,
                workers: a.workers,
                brokers: None,
                stop_at_end: a.until_end,
            };
            let settings = load(&a.common, overrides)?;
            let shutdown = shutdown_flag()?;
            match a.process {
                Some(i) => {
                    runner::run_process(&settings, i, shutdown)?;
                }
                None if settings.processes.len() == 1 => {
                    runner::run_process(&settings, 0, shutdown)?;
                }
                None => {
                    let exe = std::env::current_exe().context("locating the weatherflow binary")?;
                    let mut args: Vec<String> = Vec::new();
                    if let Some(c) = &a.common.config {
                        args.extend(["--config".into(), c.display().to_string()]);
                    }
                    if let Some(b) = &a.common.brokers {
                        args.extend(["--brokers".into(), b.clone()]);
                    }
                    if let Some(n) = a.processes {
                        args.extend(["--processes".into(), n.to_string()]);
                    }
                    if let Some(w) = a.workers {
                        args.extend(["--workers".into(), w.to_string()]);
                    }
                    if a.until_end {
                        args.push("--until-end".into());
                    }
                    let policy = launcher::Policy {
                        restart: settings.on_failure == OnFailure::Restart,
                        max_restarts: settings.max_restarts,
                    };
                    launcher::supervise(&exe, &args, settings.processes.len(), shutdown, policy)?;
                }
            }
        }
        Command::Demo(a) => {
            let shutdown = shutdown_flag()?;
            let o = demo::DemoOptions {
                file: a.file,
                workers: a.workers,
                rate: a.rate,
                every_hours: a.every_hours,
                limit: a.limit,
                brokers: a.brokers,
            };
            demo::run(&o, shutdown)?;
        }
        Command::Tail(a) => {
            let s = load(&a.common, Overrides::default())?;
            let shutdown = shutdown_flag()?;
            let o = tail::TailOptions {
                brokers: s.kafka.brokers.clone(),
                options: s.consumer_options(),
                topic: s.topics.predictions.clone(),
                from_beginning: !a.from_end,
                until_end: a.until_end,
                station: a.station,
                anomalies_only: a.anomalies,
                max: a.max,
                json: a.json,
            };
            tail::tail(&o, shutdown, std::io::stdout().lock())?;
        }
        Command::Publish(a) => {
            let s = load(&a.common, Overrides::default())?;
            let topic = a.topic.unwrap_or_else(|| s.topics.features.clone());
            let text = std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let keys: Vec<Option<Vec<u8>>> = lines
                .iter()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v["station_id"].as_str().map(|s| s.as_bytes().to_vec()))
                })
                .collect();
            if s.topics.create {
                kafka::ensure_topics(
                    &s.kafka.brokers,
                    &s.kafka.options,
                    &[&topic],
                    s.topics.partitions,
                    s.topics.replication,
                )?;
            }
            let n = kafka::publish_all(
                &s.kafka.brokers,
                &s.producer_options(),
                &topic,
                keys.iter().zip(&lines).map(|(k, l)| (k.as_deref(), l.as_bytes())),
            )?;
            println!("published {n} records to {topic}");
        }
        Command::Produce(a) => {
            let s = load(&a.common, Overrides::default())?;
            crate::produce::command::run(&a, &s, shutdown_flag()?)?;
        }
        Command::Train(t) => {
            crate::train::command::run(&t)?;
        }
        Command::Bench(b) => {
            let report = crate::bench::run(&b)?;
            let json = serde_json::to_string_pretty(&report)?;
            if let Some(path) = &b.out {
                std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
            }
            if b.json {
                println!("{json}");
            } else {
                print!("{}", report.render());
            }
        }
        Command::Models(m) => {
            print!("{}", crate::models::command::run(&m)?);
        }
        Command::Status(a) => crate::ops::command::run_status(&a, std::io::stdout().lock())?,
        Command::CheckConfig(a) => {
            let s = load(&a, Overrides::default())?;
            let ops_lines = crate::ops::command::check_config_lines(&s)?; // operations (issue 6)
            println!(
                "config OK: {} process(es) x {} worker(s), brokers {}, {} -> {} (dlq {}), stages {}",
                s.processes.len(),
                s.workers,
                s.kafka.brokers,
                s.topics.features,
                s.topics.predictions,
                s.topics.dlq,
                s.pipeline.stages.iter().map(|st| st.as_str()).collect::<Vec<_>>().join(" -> ")
            );
            for line in ops_lines {
                println!("{line}");
            }
        }
    }
    Ok(())
}
