//! `specgate audit tail | query | verify`: the audit log for the people who inspect it.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use time::OffsetDateTime;

use super::files::LogFiles;
use super::query::{self, Collapse, Filter, Shown};
use super::record::{MacKey, Record};
use super::ship::{PgUrl, central};
use super::verify::verify_with;
use crate::config::{Config, read_mac_key};

/// Inspect the audit log: its active file and rotated siblings.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AuditCommand {
    /// Show the last records, as written (attempts included).
    Tail {
        /// How many records.
        #[arg(short = 'n', long = "lines", default_value_t = 10)]
        lines: usize,
        /// Keep printing records as they are written (across rotations).
        #[arg(short = 'f', long)]
        follow: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Find creates: one row per create with its outcome (`unknown` when the process stopped
    /// before the upstream's answer was recorded).
    Query {
        /// Only records at or after this time: RFC 3339, or an age such as 30m, 1h, 7d.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only records before this time: RFC 3339, or an age such as 30m, 1h, 7d.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Only this resource.service.
        #[arg(long)]
        service: Option<String>,
        /// Only this resource.externalid.
        #[arg(long)]
        externalid: Option<String>,
        /// Only this client.
        #[arg(long)]
        client: Option<String>,
        /// Only this operationId.
        #[arg(long)]
        operation: Option<String>,
        /// Only this outcome: created, rejected, failed, unknown, recovered.
        #[arg(long)]
        outcome: Option<String>,
        /// Only this request id.
        #[arg(long)]
        request_id: Option<String>,
        /// Output format: an aligned table, one JSON object a line (for jq), or CSV.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Query the fleet's table in this PostgreSQL database instead of the local log: every
        /// node's records, each row with its node.
        #[arg(long, value_name = "URL", conflicts_with = "path")]
        postgres: Option<String>,
        /// With --postgres: only this node.
        #[arg(long, requires = "postgres")]
        node: Option<String>,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Check the hash chain and the head file: exits 0 if the log is intact, 1 naming the first
    /// file and line where a record was changed, removed, reordered or truncated.
    Verify {
        /// The HMAC key file (default: the configured audit.hmac_key_file, if any).
        #[arg(long, value_name = "PATH")]
        hmac_key_file: Option<PathBuf>,
        /// Check the chains stored in this PostgreSQL database instead of the local log: each
        /// row's hash recomputed from its stored line, the chain from row to row up to the
        /// node's shipping cursor, and the typed columns against the line. It cannot show
        /// records not shipped yet, or rows cut from the end together with the cursor: compare
        /// with the node's own `specgate audit verify`.
        #[arg(long, value_name = "URL", conflicts_with = "path")]
        postgres: Option<String>,
        /// With --postgres: only this node (default: every node in the database).
        #[arg(long, requires = "postgres")]
        node: Option<String>,
        /// Accept a chain that starts after seq 1 (retention removed the oldest files) and
        /// say so, instead of failing. Default: on when the configured audit.keep_files
        /// removes files, else off.
        #[arg(long)]
        allow_pruned: bool,
        #[command(flatten)]
        log: LogArgs,
    },
}

#[derive(Debug, clap::Args)]
struct LogArgs {
    /// The active audit file (default: the configured audit.path).
    #[arg(long, value_name = "PATH")]
    path: Option<PathBuf>,
    /// The config file to read audit.path from (default: $SPECGATE_CONFIG).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

/// Runs an audit subcommand.
pub fn run(args: AuditArgs) -> ExitCode {
    match execute(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("specgate audit: {message}");
            ExitCode::from(2)
        }
    }
}

fn execute(args: AuditArgs) -> Result<ExitCode, String> {
    match args.command {
        AuditCommand::Tail {
            lines,
            follow,
            format,
            log,
        } => {
            let path = log.resolve()?;
            tail(&path, lines, follow, format).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Query {
            since,
            until,
            service,
            externalid,
            client,
            operation,
            outcome,
            request_id,
            format,
            postgres,
            node,
            log,
        } => {
            let now = OffsetDateTime::now_utc();
            let filter = Filter {
                since: since
                    .map(|t| query::parse_time(&t, now))
                    .transpose()
                    .map_err(|e| format!("--since: {e}"))?,
                until: until
                    .map(|t| query::parse_time(&t, now))
                    .transpose()
                    .map_err(|e| format!("--until: {e}"))?,
                service,
                externalid,
                client,
                operation,
                outcome,
                request_id,
            };
            if let Some(url) = postgres {
                let url = PgUrl::parse(&url).map_err(|e| format!("--postgres: {e}"))?;
                let output = match format {
                    Format::Table => central::Output::Table,
                    Format::Json => central::Output::Json,
                    Format::Csv => central::Output::Csv,
                };
                central::run_query(&url, node.as_deref(), &filter, output)?;
                return Ok(ExitCode::SUCCESS);
            }
            let path = log.resolve()?;
            run_query(&path, &filter, format).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify {
            hmac_key_file,
            postgres,
            node,
            allow_pruned,
            log,
        } => {
            let key = match hmac_key_file.or_else(|| log.configured_key_file()) {
                Some(file) => Some(read_mac_key(&file).map_err(|e| e.to_string())?),
                None => None,
            };
            if let Some(url) = postgres {
                let url = PgUrl::parse(&url).map_err(|e| format!("--postgres: {e}"))?;
                return Ok(central::run_verify(&url, node.as_deref(), key.as_ref()));
            }
            let path = log.resolve()?;
            let allow_pruned = allow_pruned || log.configured_keep_files() > 0;
            Ok(run_verify(&path, key.as_ref(), allow_pruned))
        }
    }
}

impl LogArgs {
    fn resolve(&self) -> Result<PathBuf, String> {
        match &self.path {
            Some(path) => Ok(path.clone()),
            None => Config::audit_from_env(self.config.as_deref())
                .map(|audit| audit.path)
                .map_err(|e| e.to_string()),
        }
    }

    fn configured_keep_files(&self) -> usize {
        Config::audit_from_env(self.config.as_deref()).map_or(0, |audit| audit.keep_files)
    }

    fn configured_key_file(&self) -> Option<PathBuf> {
        Config::audit_from_env(self.config.as_deref())
            .ok()?
            .hmac_key_file
    }
}

/// Every record of the log in order. A line that is not a record is reported on stderr and
/// skipped (`verify` says what is wrong with it).
fn records(active: &Path) -> io::Result<impl Iterator<Item = Record>> {
    let files = LogFiles::new(active).all()?;
    if files.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no audit log here"));
    }
    let mut readers = Vec::new();
    for file in files {
        readers.push((file.path.clone(), BufReader::new(File::open(&file.path)?)));
    }
    Ok(readers.into_iter().flat_map(|(path, reader)| {
        reader
            .split(b'\n')
            .enumerate()
            .filter_map(move |(i, line)| {
                let line = line.ok()?;
                match serde_json::from_slice::<Record>(&line) {
                    Ok(record) => Some(record),
                    Err(_) => {
                        eprintln!(
                            "{}:{}: not an audit record; skipped (run `specgate audit verify`)",
                            path.display(),
                            i + 1
                        );
                        None
                    }
                }
            })
    }))
}

fn run_query(active: &Path, filter: &Filter, format: Format) -> io::Result<()> {
    let mut collapse = Collapse::default();
    let mut table_rows = Vec::new();
    let mut out = io::BufWriter::new(io::stdout().lock());
    if format == Format::Csv {
        writeln!(out, "{}", query::CSV_HEADER)?;
    }
    let mut emit = |shown: Shown, out: &mut dyn Write| -> io::Result<()> {
        if !filter.matches(&shown) {
            return Ok(());
        }
        match format {
            Format::Table => table_rows.push(shown),
            Format::Json => writeln!(out, "{}", query::json_line(&shown))?,
            Format::Csv => writeln!(out, "{}", query::csv_row(&shown))?,
        }
        Ok(())
    };
    for record in records(active)? {
        if let Some(shown) = collapse.push(record) {
            emit(shown, &mut out)?;
        }
    }
    for shown in collapse.finish() {
        emit(shown, &mut out)?;
    }
    if format == Format::Table {
        write!(out, "{}", query::table(&table_rows))?;
    }
    out.flush()
}

fn as_shown(record: Record) -> Shown {
    Shown {
        outcome: record.outcome.as_str(),
        record,
    }
}

fn print(
    records: Vec<Record>,
    format: Format,
    out: &mut dyn Write,
    header: bool,
) -> io::Result<()> {
    let shown: Vec<Shown> = records.into_iter().map(as_shown).collect();
    match format {
        Format::Table => {
            let text = query::table(&shown);
            let body = if header {
                text.as_str()
            } else {
                text.split_once('\n').map_or("", |(_, rest)| rest)
            };
            write!(out, "{body}")?;
        }
        Format::Json => {
            for s in &shown {
                writeln!(out, "{}", query::json_line(s))?;
            }
        }
        Format::Csv => {
            if header {
                writeln!(out, "{}", query::CSV_HEADER)?;
            }
            for s in &shown {
                writeln!(out, "{}", query::csv_row(s))?;
            }
        }
    }
    out.flush()
}

fn tail(active: &Path, n: usize, follow: bool, format: Format) -> io::Result<()> {
    let mut last: VecDeque<Record> = VecDeque::with_capacity(n + 1);
    for record in records(active)? {
        last.push_back(record);
        if last.len() > n {
            last.pop_front();
        }
    }
    let mut out = io::stdout().lock();
    print(last.into(), format, &mut out, true)?;
    if !follow {
        return Ok(());
    }
    // Follow the active file by polling: it is appended to, and replaced at rotation.
    let mut file = File::open(active)?;
    let mut offset = file.seek(SeekFrom::End(0))?;
    let mut partial = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let mut fresh = Vec::new();
        file.seek(SeekFrom::Start(offset))?;
        offset += file.read_to_end(&mut fresh)? as u64;
        partial.extend_from_slice(&fresh);
        let rotated = match (std::fs::metadata(active), file.metadata()) {
            (Ok(now), Ok(open)) => !same_file(&now, &open),
            _ => false,
        };
        if let Some(end) = partial.iter().rposition(|b| *b == b'\n') {
            let complete: Vec<u8> = partial.drain(..=end).collect();
            let records = complete
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .filter_map(|l| serde_json::from_slice::<Record>(l).ok())
                .collect();
            print(records, format, &mut out, false)?;
        }
        if rotated {
            file = File::open(active)?;
            offset = 0;
            partial.clear();
        }
    }
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.ino() == b.ino() && a.dev() == b.dev()
}

#[cfg(not(unix))]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.len() >= b.len()
}

fn run_verify(active: &Path, key: Option<&MacKey>, allow_pruned: bool) -> ExitCode {
    let files = LogFiles::new(active);
    if !active.exists() && !files.head().exists() && files.rotated().is_ok_and(|r| r.is_empty()) {
        eprintln!("specgate audit: {}: no audit log here", active.display());
        return ExitCode::from(2);
    }
    match verify_with(active, key, allow_pruned) {
        Ok(intact) => {
            let seqs = intact
                .seqs
                .map_or_else(String::new, |(a, b)| format!(", seq {a}..{b}"));
            let mac = if key.is_some() { ", MACs checked" } else { "" };
            println!(
                "OK: {} records in {} file(s){seqs}{mac}; the log reaches the head file's record",
                intact.records, intact.files
            );
            for note in intact.notes {
                println!("note: {note}");
            }
            ExitCode::SUCCESS
        }
        Err(broken) => {
            println!("FAILED: {broken}");
            ExitCode::FAILURE
        }
    }
}
