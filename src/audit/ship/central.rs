//! Reading the fleet's table: `specgate audit query --postgres` (the file query's filters,
//! collapse and formats, across nodes) and `specgate audit verify --postgres` (each node's
//! chain, re-hashed from the stored lines by the same [`Walker`] that checks files).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use super::pg::{self, PgUrl};
use crate::audit::files::Head;
use crate::audit::query::{self, Collapse, Filter, Shown};
use crate::audit::record::{MacKey, Record, decode_hash, rfc3339};
use crate::audit::verify::Walker;

/// How query results are printed (the file query's formats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// An aligned table, NODE first.
    Table,
    /// One JSON object a line, with a `node` field.
    Json,
    /// CSV with a trailing `node` column.
    Csv,
}

/// Rows fetched per round trip.
const CHUNK: i32 = 5000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the audit CLI")
}

/// The SQL for `filter` (and `node`): the filters that select whole creates are pushed into
/// the WHERE clause, so indexes do the work; [`Filter::matches`] still judges every row.
///
/// A create's `attempted` and outcome records share request id, operation, client and
/// resource, so filtering on those keeps or drops both together. `--since` drops only
/// attempts older than the bound, whose rows the filter would drop anyway. `--until` is not
/// pushed: it would drop the outcome of an attempt just before the bound and show that create
/// as `unknown`.
fn select(node: Option<&str>, filter: &Filter) -> (String, Vec<String>) {
    let mut sql = String::from("SELECT node, line FROM specgate_audit WHERE true");
    let mut params = Vec::new();
    let mut push = |clause: &str, value: String| {
        params.push(value);
        let param = format!("${}::text", params.len());
        sql.push_str(" AND ");
        sql.push_str(&clause.replace('?', &param));
    };
    if let Some(node) = node {
        push("node = ?", node.to_owned());
    }
    if let Some(since) = filter.since {
        push("ts >= (?)::timestamptz", rfc3339(since));
    }
    for (column, value) in [
        ("service", &filter.service),
        ("externalid", &filter.externalid),
        ("client", &filter.client),
        ("operation_id", &filter.operation),
        ("request_id", &filter.request_id),
    ] {
        if let Some(value) = value {
            push(&format!("{column} = ?"), value.clone());
        }
    }
    if let Some(outcome) = filter.outcome.as_deref()
        && outcome != "unknown"
    {
        push("outcome = ?", outcome.to_owned());
    }
    // In time order; a create's attempt comes before its outcome (earlier ts, or the same ts
    // and a lower seq), which the per-node collapse relies on.
    sql.push_str(" ORDER BY ts, node, seq");
    (sql, params)
}

/// `specgate audit query --postgres`: prints what the file query prints, for every node (or
/// `node`), with each row's node.
pub fn run_query(
    url: &PgUrl,
    node: Option<&str>,
    filter: &Filter,
    output: Output,
) -> Result<(), String> {
    runtime().block_on(async {
        let mut client = url.connect("specgate audit query").await?;
        let mut out = io::BufWriter::new(io::stdout().lock());
        query(&mut client, node, filter, output, &mut out)
            .await
            .map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())
    })
}

/// Runs the query on `client`, writing to `out`.
pub async fn query(
    client: &mut Client,
    node: Option<&str>,
    filter: &Filter,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), QueryError> {
    let (sql, params) = select(node, filter);
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
    let tx = client.transaction().await?;
    let portal = tx.bind(sql.as_str(), &refs).await?;
    let mut collapses: HashMap<String, Collapse> = HashMap::new();
    let mut table_rows = Vec::new();
    if output == Output::Csv {
        writeln!(out, "{},node", query::CSV_HEADER)?;
    }
    let mut emit = |node: &str, shown: Shown, out: &mut dyn Write| -> io::Result<()> {
        if !filter.matches(&shown) {
            return Ok(());
        }
        match output {
            Output::Table => table_rows.push((node.to_owned(), shown)),
            Output::Json => writeln!(out, "{}", json_line(node, &shown))?,
            Output::Csv => writeln!(out, "{},{}", query::csv_row(&shown), csv_field(node))?,
        }
        Ok(())
    };
    loop {
        let rows = tx.query_portal(&portal, CHUNK).await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let node: String = row.get(0);
            let line: String = row.get(1);
            let record: Record = match serde_json::from_str(&line) {
                Ok(record) => record,
                Err(_) => {
                    eprintln!(
                        "node {node:?}: a row is not an audit record; skipped (run `specgate audit verify --postgres`)"
                    );
                    continue;
                }
            };
            let collapse = collapses.entry(node.clone()).or_default();
            if let Some(shown) = collapse.push(record) {
                emit(&node, shown, out)?;
            }
        }
    }
    tx.commit().await?;
    let collapses: BTreeMap<String, Collapse> = collapses.into_iter().collect();
    for (node, collapse) in collapses {
        for shown in collapse.finish() {
            emit(&node, shown, out)?;
        }
    }
    if output == Output::Table {
        write!(out, "{}", table(&table_rows))?;
    }
    Ok(())
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// PostgreSQL refused or failed.
    #[error("{}", explain(.0))]
    Db(#[from] tokio_postgres::Error),
    /// Writing the output failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A database error, with a hint when the tables are not where the URL looks.
fn explain(e: &tokio_postgres::Error) -> String {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
        return format!(
            "{}: no fleet audit tables here; is this the database the fleet ships to, with its \
             schema first in the search_path (?options=-csearch_path%3D<schema>)?",
            crate::error::Chain(e)
        );
    }
    crate::error::Chain(e).to_string()
}

/// The file query's JSON line with the row's `node` added.
pub fn json_line(node: &str, shown: &Shown) -> String {
    let mut value: Value =
        serde_json::from_str(&query::json_line(shown)).expect("json_line writes JSON");
    value["node"] = Value::from(node);
    value.to_string()
}

/// The file query's table with a NODE column first.
pub fn table(rows: &[(String, Shown)]) -> String {
    let shown: Vec<Shown> = rows.iter().map(|(_, s)| s.clone()).collect();
    let text = query::table(&shown);
    let width = rows
        .iter()
        .map(|(n, _)| n.chars().count())
        .chain([4])
        .max()
        .unwrap_or(4);
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let node = if i == 0 {
            "NODE"
        } else {
            rows[i - 1].0.as_str()
        };
        out.push_str(&format!("{node:<width$}  {line}\n"));
    }
    out
}

fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// `specgate audit verify --postgres`: checks `node`'s chain (or every node's), printing one
/// verdict a node. Exit 0 if all are intact, 1 if one is not, 2 if the check could not run.
pub fn run_verify(url: &PgUrl, node: Option<&str>, key: Option<&MacKey>) -> ExitCode {
    let outcome = runtime().block_on(async {
        let mut client = url.connect("specgate audit verify").await?;
        let nodes = match node {
            Some(node) => vec![node.to_owned()],
            None => client
                .query(
                    "SELECT node FROM specgate_audit_cursor UNION SELECT DISTINCT node FROM specgate_audit ORDER BY 1",
                    &[],
                )
                .await
                .map_err(|e| explain(&e))?
                .iter()
                .map(|r| r.get(0))
                .collect(),
        };
        if nodes.is_empty() {
            return Err("no node has shipped records to this database".to_owned());
        }
        let mut all_intact = true;
        for node in &nodes {
            match verify_node(&mut client, node, key).await {
                Ok(Verdict::Intact { records, seqs, notes }) => {
                    let seqs = seqs.map_or_else(String::new, |(a, b)| format!(", seq {a}..{b}"));
                    let mac = if key.is_some() { ", MACs checked" } else { "" };
                    println!(
                        "OK: node {node:?}: {records} records{seqs}{mac}; every row matches its line, and the chain reaches the shipping cursor"
                    );
                    for note in notes {
                        println!("note: node {node:?}: {note}");
                    }
                }
                Ok(Verdict::Broken(problem)) => {
                    all_intact = false;
                    println!("FAILED: node {node:?}{problem}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(all_intact)
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("specgate audit: {e}");
            ExitCode::from(2)
        }
    }
}

/// What checking one node found.
#[derive(Debug)]
pub enum Verdict {
    /// Every row checks out.
    Intact {
        /// Rows checked.
        records: u64,
        /// First and last seq.
        seqs: Option<(u64, u64)>,
        /// Worth knowing, not breaks.
        notes: Vec<String>,
    },
    /// The first problem: `, seq N: what` or `: what`.
    Broken(String),
}

/// Checks `node`'s rows: each line's seal (and MAC), the chain from row to row up to the
/// node's cursor (which stands in for the head file), and that the jsonb copy and the typed
/// columns say what the line says.
pub async fn verify_node(
    client: &mut Client,
    node: &str,
    key: Option<&MacKey>,
) -> Result<Verdict, String> {
    let db = |e: tokio_postgres::Error| explain(&e);
    let tx = client.transaction().await.map_err(db)?;
    let cursor = tx
        .query_opt(pg::CURSOR, &[&node])
        .await
        .map_err(db)?
        .map(|row| -> Result<Head, String> {
            let seq: i64 = row.get(0);
            let hash: String = row.get(1);
            Ok(Head {
                seq: seq as u64,
                hash: decode_hash(hash.as_bytes())
                    .ok_or_else(|| "the cursor holds no valid hash".to_owned())?,
            })
        })
        .transpose();
    let head = match cursor {
        Ok(head) => head.filter(|h| h.seq > 0),
        Err(problem) => return Ok(Verdict::Broken(format!(": {problem}"))),
    };
    let mut walker = Walker::new(head, key.cloned()).head_named("shipping cursor");
    let here = Path::new("specgate_audit");
    let portal = tx.bind(pg::CHAIN, &[&node]).await.map_err(db)?;
    loop {
        let rows = tx.query_portal(&portal, CHUNK).await.map_err(db)?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let seq: i64 = row.get(0);
            let line: String = row.get(1);
            let record: Value = row.get(2);
            let columns_agree: bool = row.get(3);
            if let Err(broken) = walker.line(here, seq as u64, line.as_bytes()) {
                return Ok(Verdict::Broken(format!(", seq {seq}: {}", broken.problem)));
            }
            if pg::as_stored(&line).as_ref() != Some(&record) {
                return Ok(Verdict::Broken(format!(
                    ", seq {seq}: the row's record (jsonb) differs from its line: the row was changed"
                )));
            }
            if !columns_agree {
                return Ok(Verdict::Broken(format!(
                    ", seq {seq}: the row's columns differ from its record: the row was changed"
                )));
            }
        }
    }
    tx.commit().await.map_err(db)?;
    match walker.finish(Path::new("specgate_audit_cursor")) {
        Ok(intact) => Ok(Verdict::Intact {
            records: intact.records,
            seqs: intact.seqs,
            notes: intact.notes,
        }),
        Err(broken) => Ok(Verdict::Broken(format!(": {}", broken.problem))),
    }
}
