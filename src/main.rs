//! The `specgate` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use specgate::app::{App, StartError};
use specgate::config::{self, Config};

mod memory;

const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("SPECGATE_GIT_SHA"),
    ")"
);

/// A sidecar gateway for the ActiveCampaign API: validates every request against the OpenAPI
/// spec, injects the API token the app never holds, forwards over TLS, and audits every create.
///
/// Settings come from SPECGATE_* environment variables and the config file
/// (config/specgate.toml documents each one); the environment wins.
#[derive(Debug, Parser)]
#[command(name = "specgate", version, long_version = LONG_VERSION, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM or SIGINT; SIGHUP reloads config, spec, overlays and token.
    Serve {
        /// The config file (default: $SPECGATE_CONFIG, else none).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Answer every operation with the spec's own example response instead of forwarding:
        /// needs neither SPECGATE_UPSTREAM nor a token. Routing, validation and audit are
        /// unchanged.
        #[arg(long)]
        mock: bool,
    },
    /// Inspect the audit log: tail, query, verify.
    Audit(Box<specgate::audit::cli::AuditArgs>),
    /// Check the settings, spec, overlays and token (present and valid; never printed), then
    /// print the route table. Warnings (what the spec says that is not enforced, each with its
    /// file and JSON pointer) go to stderr. Exits 1 if anything is wrong.
    Check {
        /// The config file (default: $SPECGATE_CONFIG, else none).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Check as `serve --mock` would run: no upstream or token needed.
        #[arg(long)]
        mock: bool,
        /// Treat each of the spec's warnings as an error.
        #[arg(long)]
        strict: bool,
    },
    /// Print the route table serve builds: method, path, operationId, whether the body is
    /// validated, and what mock mode answers; the spec's warnings go to stderr. Needs no
    /// upstream or token. Exits 1 if serve would refuse the spec.
    Routes {
        /// The config file (default: $SPECGATE_CONFIG, else none).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Treat each of the spec's warnings as an error.
        #[arg(long)]
        strict: bool,
    },
    /// Summarise where a running specgate saw upstream responses differ from the document in
    /// the last N minutes: operation, kind, pointer, count, first and last seen. The report to
    /// send a vendor. Asks the admin listener's GET /drift.
    Drift {
        /// How far back, in minutes (at most 1440).
        #[arg(long, default_value_t = 60)]
        minutes: u64,
        /// The admin address (default: what `serve` would use).
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
        /// Print the endpoint's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running specgate's admin listener whether it is alive or ready; exits 0 on 200.
    /// For container health checks, where there is no curl.
    Probe {
        /// What to ask.
        #[arg(value_enum, default_value_t = Endpoint::Readyz)]
        endpoint: Endpoint,
        /// The admin address (default: what `serve` would use: $SPECGATE_ADMIN_LISTEN, the
        /// config file's admin_listen, else 127.0.0.1:9090).
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
    },
}

/// An admin endpoint to probe.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Endpoint {
    /// GET /healthz: the process serves.
    Healthz,
    /// GET /readyz: spec, token, audit log and upstream are all good.
    Readyz,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, mock } => {
            let format = std::env::var(config::LOG_FORMAT_ENV).ok();
            if let Some(other) = format.as_deref().filter(|f| !matches!(*f, "json" | "text")) {
                eprintln!(
                    "specgate: {}: {other:?} is not a log format; use json or text",
                    config::LOG_FORMAT_ENV
                );
                return ExitCode::from(2);
            }
            specgate::telemetry::init(format.as_deref());
            match serve(config, mock) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("specgate: {error}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Audit(args) => specgate::audit::cli::run(*args),
        Command::Check {
            config,
            mock,
            strict,
        } => report(
            "check",
            specgate::cli::check(config.as_deref(), mock, strict),
        ),
        Command::Routes { config, strict } => {
            report("routes", specgate::cli::routes(config.as_deref(), strict))
        }
        Command::Drift {
            minutes,
            admin,
            json,
        } => {
            let admin = admin.unwrap_or_else(configured_admin);
            let path = format!("/drift?minutes={minutes}");
            match specgate::cli::admin_get(admin, &path, Duration::from_secs(5)) {
                Ok((200, body)) if json => {
                    println!("{}", body.trim_end());
                    ExitCode::SUCCESS
                }
                Ok((200, body)) => match serde_json::from_str(&body) {
                    Ok(report) => {
                        print!("{}", specgate::cli::render_drift(&report));
                        ExitCode::SUCCESS
                    }
                    Err(error) => {
                        eprintln!("specgate drift: {admin}{path} is not a drift report: {error}");
                        ExitCode::FAILURE
                    }
                },
                Ok((status, _)) => {
                    eprintln!("specgate drift: {admin}{path} answered {status}");
                    ExitCode::FAILURE
                }
                Err(error) => {
                    eprintln!("specgate drift: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Probe { endpoint, admin } => {
            let admin = admin.unwrap_or_else(configured_admin);
            let path = match endpoint {
                Endpoint::Healthz => "/healthz",
                Endpoint::Readyz => "/readyz",
            };
            match specgate::cli::probe(admin, path, Duration::from_secs(3)) {
                Ok(200) => ExitCode::SUCCESS,
                Ok(status) => {
                    eprintln!("specgate probe: {path} answered {status}");
                    ExitCode::FAILURE
                }
                Err(error) => {
                    eprintln!("specgate probe: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The admin address `serve` would use: environment, then config file, then default.
fn configured_admin() -> SocketAddr {
    match Config::load(None, true) {
        Ok(config) => config.admin_listen,
        Err(_) => config::defaults::ADMIN_LISTEN
            .parse()
            .expect("the default is an address"),
    }
}

/// Prints what `check` or `routes` found; exits 1 on any problem.
fn report(command: &str, report: specgate::cli::CheckReport) -> ExitCode {
    print!("{}", report.out);
    for warning in &report.warnings {
        eprintln!("specgate {command}: warning: {warning}");
    }
    for problem in &report.problems {
        eprintln!("specgate {command}: {problem}");
    }
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn serve(config: Option<PathBuf>, mock: bool) -> Result<(), StartError> {
    let file = Config::file(config.as_deref());
    let config = Config::load(file.as_deref(), mock)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(memory::on_worker_idle)
        .build()
        .expect("starting the tokio runtime");
    runtime.block_on(async {
        // The allocator's policy is the binary's, like its choice: the library has no unsafe.
        let _trim =
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(memory::trim_periodically()));
        let app = App::build(config, file, mock)?.on_worker_park(memory::on_worker_idle);
        // Loading a large document frees far more than it keeps (the parsed document itself):
        // hand that back before serving rather than at the first periodic trim.
        memory::trim();
        app.run().await
    })
}
