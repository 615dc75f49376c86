//! What the `check`, `routes` and `probe` subcommands do, as functions that return text and
//! problems, so tests can call them without a process.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::config::{Config, TokenSource, UpstreamMode};
use crate::route::RouteTable;
use crate::spec::Spec;
use crate::token::TokenStore;
use crate::upstream;

/// One row of the route table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRow {
    /// The method.
    pub method: String,
    /// The path the app sends (under the spec's base path; the bare template works too), with
    /// the `#fragment` or `?query` of its path key when operations share a path and method.
    pub path: String,
    /// The `operationId`.
    pub operation_id: String,
    /// Whether the request body is checked against a compiled schema.
    pub validated: bool,
    /// The status mock mode answers with, if the operation has a 2xx.
    pub mock: Option<u16>,
    /// Whether that answer is made from the response's schema (the document gives no
    /// example).
    pub mock_from_schema: bool,
}

/// The route table of a compiled spec: every operation a request can reach, by path (in the
/// order paths first appear in the document) and then method. Operations that lost to an
/// ambiguous twin are not in it; the spec's warnings name them.
pub fn route_rows(spec: &Spec) -> Vec<RouteRow> {
    RouteTable::new(spec)
        .entries()
        .map(|op| RouteRow {
            method: op.method.to_string(),
            path: format!(
                "{}{}{}",
                spec.base_path,
                op.template,
                op.variant.as_ref().map_or("", |v| v.text.as_str())
            ),
            operation_id: op.id.to_string(),
            validated: op.body.as_ref().is_some_and(|b| b.validated())
                || op.parameters.iter().any(|p| p.schema.is_some()),
            mock: op.example.as_ref().map(|e| e.status.as_u16()),
            mock_from_schema: op.example.as_ref().is_some_and(|e| e.from_schema),
        })
        .collect()
}

/// The route table as aligned text, with a header line.
pub fn render_routes(rows: &[RouteRow]) -> String {
    let header = ["METHOD", "PATH", "OPERATION", "VALIDATED", "MOCK"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.method.clone(),
                r.path.clone(),
                r.operation_id.clone(),
                if r.validated { "yes" } else { "no" }.to_owned(),
                match (r.mock, r.mock_from_schema) {
                    (None, _) => "no 2xx".to_owned(),
                    (Some(s), false) => format!("example {s}"),
                    (Some(s), true) => format!("schema {s}"),
                },
            ]
        })
        .collect();
    table(header, &cells)
}

/// `rows` under `header`, each column as wide as its widest cell, two spaces apart.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[&str]| {
        let mut text = String::new();
        for (i, (cell, w)) in cols.iter().zip(widths).enumerate() {
            if i + 1 == cols.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in rows {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

/// What `specgate check` or `specgate routes` found: lines for stdout, and warnings and
/// problems for stderr.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// What was checked and found good, then the route table.
    pub out: String,
    /// What loads but is not enforced as the document says, one line each, with file and
    /// pointer. With `--strict` each is also a problem.
    pub warnings: Vec<String>,
    /// Each problem, one line each. Non-empty means the check failed.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// Loads the spec `config` names into the report: its error as a problem, its warnings
    /// (and, when `strict`, the same as problems). `None` if it does not load.
    fn load_spec(&mut self, config: &Config, strict: bool) -> Option<Spec> {
        let spec = match Spec::load(&config.spec) {
            Ok(spec) => spec,
            Err(error) => {
                self.problems.push(format!("spec {error}"));
                return None;
            }
        };
        for warning in &spec.warnings {
            self.warnings.push(format!("spec {warning}"));
            if strict {
                self.problems.push(format!("spec {warning} (--strict)"));
            }
        }
        Some(spec)
    }
}

/// Checks the settings (file and environment), the spec and its overlays, the token's
/// presence (read, never printed) and the upstream TLS settings, and prints the route table.
/// `strict` makes each of the spec's warnings a problem.
pub fn check(file: Option<&Path>, mock: bool, strict: bool) -> CheckReport {
    let mut report = CheckReport::default();
    let config = match Config::load(file, mock) {
        Ok(config) => config,
        Err(error) => {
            report.problems.push(error.to_string());
            return report;
        }
    };
    let file = Config::file(file);
    let _ = writeln!(
        report.out,
        "config:   ok ({}; mode {})",
        file.as_ref().map_or_else(
            || "no config file".to_owned(),
            |f| format!("file {}", f.display())
        ),
        config.mode
    );
    match config.mode {
        UpstreamMode::Mock => {
            let _ = writeln!(
                report.out,
                "upstream: mock mode; nothing is forwarded, no token is needed"
            );
        }
        UpstreamMode::Proxy => {
            match upstream::client(&config.upstream) {
                Ok(_) => {
                    let _ = writeln!(report.out, "upstream: {}", config.upstream.base);
                }
                Err(error) => report.problems.push(error.to_string()),
            }
            match &config.token {
                None => report.problems.push("no API token configured".to_owned()),
                Some(source) => match TokenStore::load(source.clone()) {
                    Ok(_) => {
                        let _ = writeln!(
                            report.out,
                            "token:    present ({})",
                            match source {
                                TokenSource::File(path) => format!("file {}", path.display()),
                                TokenSource::Env => crate::config::API_TOKEN_ENV.to_owned(),
                            }
                        );
                    }
                    Err(error) => report.problems.push(error.to_string()),
                },
            }
        }
    }
    let _ = writeln!(report.out, "audit:    {}", config.audit.path.display());
    let Some(spec) = report.load_spec(&config, strict) else {
        return report;
    };
    if let Err(error) = crate::reload::check_allow_lists(&config, &spec) {
        report.problems.push(error.to_string());
    }
    let _ = writeln!(report.out, "spec:     {}", summary(&spec));
    report.out.push('\n');
    report.out.push_str(&render_routes(&route_rows(&spec)));
    report
}

/// The route table of the spec the settings name, as `serve` would build it.
pub fn routes(file: Option<&Path>, strict: bool) -> CheckReport {
    let mut report = CheckReport::default();
    match Config::load(file, true) {
        Ok(config) => {
            if let Some(spec) = report.load_spec(&config, strict) {
                report.out = render_routes(&route_rows(&spec));
            }
        }
        Err(error) => report.problems.push(error.to_string()),
    }
    report
}

/// One line on a loaded spec: where from, which version, its overlays, what it holds.
pub fn summary(spec: &Spec) -> String {
    use crate::spec::counted;
    format!(
        "{} (version {}; overlays: {}); {}, {}",
        spec.origin,
        spec.version,
        if spec.overlays.is_empty() {
            "none".to_owned()
        } else {
            spec.overlays.join(", ")
        },
        counted(spec.operations.len(), "operation", "operations"),
        counted(spec.warnings.len(), "warning", "warnings"),
    )
}

/// Asks the admin listener at `addr` for `path` (an unspecified address means this host's
/// loopback): the status it answered.
pub fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<u16, String> {
    admin_get(addr, path, timeout).map(|(status, _)| status)
}

/// `GET path` from the admin listener at `addr`: the status and the body.
pub fn admin_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let failed = |e: std::io::Error| format!("{addr}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(failed)?;
    stream.set_read_timeout(Some(timeout)).map_err(failed)?;
    stream.set_write_timeout(Some(timeout)).map_err(failed)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .map_err(failed)?;
    // The admin listener answers with a length and closes: the response is all there is.
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(failed)?;
    let not_http = || format!("{addr}: not an HTTP response");
    let status = response
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .ok_or_else(not_http)?;
    let body_at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(not_http)?;
    Ok((
        status,
        String::from_utf8_lossy(&response[body_at + 4..]).into_owned(),
    ))
}

/// What `GET /drift` answered, as aligned text: one line per operation, kind and pointer.
pub fn render_drift(report: &serde_json::Value) -> String {
    let header = [
        "OPERATION",
        "KIND",
        "POINTER",
        "COUNT",
        "FIRST SEEN",
        "LAST SEEN",
    ];
    let text = |row: &serde_json::Value, field: &str| match &row[field] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let rows: Vec<[String; 6]> = report["drifts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            [
                text(row, "operation"),
                text(row, "kind"),
                text(row, "pointer"),
                text(row, "count"),
                text(row, "first_seen"),
                text(row, "last_seen"),
            ]
        })
        .collect();
    let mut out = format!(
        "Response drift in the last {} minutes (sampling {}):\n",
        report["minutes"], report["sample_rate"]
    );
    if rows.is_empty() {
        out.push_str("none: every response checked matched the document\n");
        return out;
    }
    out.push_str(&table(header, &rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SpecSource;

    #[test]
    fn the_seed_route_table() {
        let spec = Spec::load(&SpecSource::default()).unwrap();
        let rows = route_rows(&spec);
        assert_eq!(
            rows,
            [RouteRow {
                method: "POST".into(),
                path: "/api/3/connections".into(),
                operation_id: "create-connection".into(),
                validated: true,
                mock: Some(200),
                mock_from_schema: false,
            }]
        );
        let text = render_routes(&rows);
        assert_eq!(
            text,
            "METHOD  PATH                OPERATION          VALIDATED  MOCK\n\
             POST    /api/3/connections  create-connection  yes        example 200\n"
        );
    }
}
