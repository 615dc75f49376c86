//! The `specgate` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use specgate::app::{App, StartError};
use specgate::config::Config;

/// A sidecar gateway for the ActiveCampaign API: validates every request against the OpenAPI
/// spec, injects the API token the app never holds, forwards over TLS, and audits every create.
#[derive(Debug, Parser)]
#[command(name = "specgate", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (settings from SPECGATE_* variables and the config file).
    Serve {
        /// The config file (default: $SPECGATE_CONFIG, else none).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Inspect the audit log: tail, query, verify.
    Audit(Box<specgate::audit::cli::AuditArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            specgate::telemetry::init(std::env::var("SPECGATE_LOG_FORMAT").ok().as_deref());
            match serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("specgate: {error}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Audit(args) => specgate::audit::cli::run(*args),
    }
}

fn serve(config: Option<PathBuf>) -> Result<(), StartError> {
    let config = Config::from_env(config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    runtime.block_on(async {
        let app = App::build(config)?;
        app.run().await
    })
}
