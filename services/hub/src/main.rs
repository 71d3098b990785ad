//! `hub`: the imaging hub's one binary. It composes the libraries (events, projections,
//! gateway); the libraries never know it.

mod bench;
mod bench_access;
mod bench_distributed;
mod bench_inference;
mod bench_ingest;
mod config;
mod embedded;
mod inference;
mod log;
mod parts;
mod replay;
mod run;
mod serve;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigFlags};

#[derive(Parser)]
#[command(
    name = "hub",
    version,
    about = "Regional imaging hub: event-sourced imaging sharing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the embedded hub: one process, SQLite, in-process bus, local blob directory.
    Serve(ConfigFlags),
    /// Run one service as its own process (distributed mode: PostgreSQL, Kafka); configured
    /// by HUB_* environment variables; /healthz and /readyz on its HTTP address.
    Run {
        #[arg(value_enum)]
        service: run::Service,
        #[command(flatten)]
        config: ConfigFlags,
    },
    /// Rebuild read models from the event log (stop `hub serve` first).
    Replay {
        #[command(flatten)]
        config: ConfigFlags,
        /// Rebuild only this projection (default: all)
        #[arg(long)]
        projection: Option<String>,
    },
    /// Run one model version over every past stabilized study it applies to (stop `hub serve`
    /// first); studies that already have its outcome are skipped.
    Backfill {
        #[command(flatten)]
        config: ConfigFlags,
        /// The model id of a manifest in the model folder
        #[arg(long)]
        model: String,
        /// The model version (default: the last manifest of that id)
        #[arg(long)]
        version: Option<String>,
    },
    /// Print a signed HS256 bearer token for development, alone on stdout
    /// (`TOKEN=$(hub token --sub alice --role radiologist --institution hosp-a)`).
    Token(token::TokenArgs),
    /// Measure the hub on this machine.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn init_tracing(filter: &str) {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(log::Escaping::new(std::io::stderr, ansi))
        .with_ansi(ansi)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hub: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(flags) => {
                let config = Config::load(&flags)?;
                init_tracing(&config.log);
                serve::serve(config).await
            }
            Command::Run { service, config } => {
                let config = Config::load(&config)?;
                init_tracing(&config.log);
                run::run(service, config).await
            }
            Command::Replay { config, projection } => {
                let config = Config::load(&config)?;
                init_tracing(&config.log);
                replay::replay(config, projection.as_deref()).await
            }
            Command::Backfill {
                config,
                model,
                version,
            } => {
                let config = Config::load(&config)?;
                init_tracing(&config.log);
                inference::backfill(config, &model, version.as_deref()).await
            }
            Command::Token(args) => token::run(args),
            Command::Bench(cmd) => {
                init_tracing("warn");
                bench::run(cmd).await
            }
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}
