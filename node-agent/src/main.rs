//! `tokenguard-agent`: reports reads of AWS web-identity tokens on this node.

use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::Parser;
use futures::{Stream, StreamExt};
use tokenguard_agent::kernel::{kernel_source, load_probe};
use tokenguard_agent::replay::{ReplayCli, replay};
use tokenguard_agent::sink::stdout_writer;
use tokenguard_agent::source::replay_file;
use tokenguard_agent::{Agent, Cli, OpenRecord};
use tracing::info;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "replay")
    {
        let cli = ReplayCli::parse_from(std::env::args_os().skip(1));
        init_logging("warn");
        return match replay_main(&cli).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(error = %describe(&error), "replay stopped on an error");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    init_logging("info");
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // A JSON line like every other log, so collectors parse the reason too.
            tracing::error!(error = %describe(&error), "agent stopped on an error");
            ExitCode::FAILURE
        }
    }
}

/// Joins an error and its causes with ": ", leaving out a cause whose text the
/// message already contains, as many of this crate's messages embed theirs.
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut kernel_counters = None;

    let replay = cli.replay_opens.clone();
    let mut config = cli.into_config()?;

    let source: Pin<Box<dyn Stream<Item = OpenRecord> + Send>> = match replay {
        Some(path) => Box::pin(replay_file(&path)?),
        None => {
            let probe = load_probe().context("failed to attach the kernel probe")?;
            info!(hook = %probe.hook(), tracepoints = ?probe.tracepoints(), "kernel probe attached");
            config.hook = Some(format!("{}/syscalls", probe.hook()));
            let (stream, counters) = kernel_source(probe);
            kernel_counters = Some(counters);
            Box::pin(stream)
        }
    };

    let shutdown = async {
        if let Err(error) = shutdown_signal().await {
            tracing::error!(error = %error, "failed to listen for shutdown signals");
            std::future::pending::<()>().await;
        }
    };
    let agent = Agent::new(config);
    if let Some(counters) = kernel_counters {
        let metrics = agent.metrics();
        let lost = counters.clone();
        metrics.set_kernel_lost_source(Box::new(move || lost.lost.load(Ordering::Relaxed)));
        metrics
            .set_kernel_repeats_source(Box::new(move || counters.repeats.load(Ordering::Relaxed)));
    }
    agent
        .run(source.take_until(Box::pin(shutdown)))
        .await
        .map_err(anyhow::Error::from)
}

/// Runs a replay, with alerts on stdout and the summary as one JSON line on
/// stderr.
async fn replay_main(cli: &ReplayCli) -> anyhow::Result<()> {
    let summary = replay(cli, stdout_writer()).await?;
    eprintln!("{}", serde_json::json!({ "summary": summary }));
    Ok(())
}

/// JSON logs to stderr, filtered by `RUST_LOG` (default `default_level`).
fn init_logging(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}
