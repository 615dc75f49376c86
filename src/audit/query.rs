//! Reading the log for people: filters, the collapse of a create's records into its outcome,
//! and the table, JSON-lines and CSV renderings. Plain functions over records; the CLI does
//! the file I/O.

use std::collections::HashMap;
use std::fmt::Write;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::record::{Outcome, Record};

/// A record as shown: the stored record, with `unknown` for a create whose outcome was never
/// recorded (an `attempted` record with nothing after it: the process stopped mid-create).
#[derive(Clone, Debug, PartialEq)]
pub struct Shown {
    /// The record.
    pub record: Record,
    /// `unknown`, or the record's own outcome.
    pub outcome: &'static str,
}

/// Parses `--since`/`--until`: RFC 3339, or an age before `now` (`30s`, `15m`, `1h`, `7d`, `2w`).
pub fn parse_time(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let bad = || format!("{text:?} is neither an RFC 3339 time nor an age such as 30m, 1h or 7d");
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let age = match unit {
        "s" => Duration::seconds(n),
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        "w" => Duration::weeks(n),
        _ => return Err(bad()),
    };
    Ok(now - age)
}

/// Which records to show. Every field set must match.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// At or after.
    pub since: Option<OffsetDateTime>,
    /// Before.
    pub until: Option<OffsetDateTime>,
    /// `resource.service`.
    pub service: Option<String>,
    /// `resource.externalid`.
    pub externalid: Option<String>,
    /// `client`.
    pub client: Option<String>,
    /// `operation_id`.
    pub operation: Option<String>,
    /// The shown outcome (`created`, `rejected`, `failed`, `unknown`, `recovered`).
    pub outcome: Option<String>,
    /// `request_id`.
    pub request_id: Option<String>,
}

impl Filter {
    /// Whether `shown` passes.
    pub fn matches(&self, shown: &Shown) -> bool {
        let r = &shown.record;
        let ts = OffsetDateTime::parse(&r.ts, &Rfc3339).ok();
        let resource = |field: &str| {
            r.resource
                .as_ref()
                .and_then(|v| v.get(field))
                .and_then(Value::as_str)
        };
        self.since
            .is_none_or(|since| ts.is_some_and(|t| t >= since))
            && self.until.is_none_or(|until| ts.is_some_and(|t| t < until))
            && self
                .service
                .as_deref()
                .is_none_or(|s| resource("service") == Some(s))
            && self
                .externalid
                .as_deref()
                .is_none_or(|e| resource("externalid") == Some(e))
            && self
                .client
                .as_deref()
                .is_none_or(|c| r.client.as_deref() == Some(c))
            && self
                .operation
                .as_deref()
                .is_none_or(|o| r.operation_id.as_deref() == Some(o))
            && self.outcome.as_deref().is_none_or(|o| shown.outcome == o)
            && self
                .request_id
                .as_deref()
                .is_none_or(|id| r.request_id.as_deref() == Some(id))
    }
}

/// Folds each create's `attempted` record into its outcome record. Feed records in log order;
/// [`Collapse::finish`] yields the creates that never got an outcome, as `unknown`.
#[derive(Debug, Default)]
pub struct Collapse {
    /// Attempts without an outcome yet, by their seq.
    in_flight: HashMap<u64, Record>,
}

impl Collapse {
    /// The record to show for `record`, if any (an `attempted` one waits for its outcome).
    pub fn push(&mut self, record: Record) -> Option<Shown> {
        match record.outcome {
            Outcome::Attempted => {
                self.in_flight.insert(record.seq, record);
                return None;
            }
            Outcome::Created | Outcome::Rejected | Outcome::Failed => match record.attempt {
                Some(attempt) => {
                    self.in_flight.remove(&attempt);
                }
                // An outcome that names no attempt (its attempt could not be written, with
                // audit.on_error = "allow"): the oldest attempt with its request id, if any.
                None => {
                    let oldest = self
                        .in_flight
                        .values()
                        .filter(|a| a.request_id.is_some() && a.request_id == record.request_id)
                        .map(|a| a.seq)
                        .min();
                    if let Some(seq) = oldest {
                        self.in_flight.remove(&seq);
                    }
                }
            },
            Outcome::Recovered => {}
        }
        Some(Shown {
            outcome: record.outcome.as_str(),
            record,
        })
    }

    /// The creates whose outcome was never recorded, in log order.
    pub fn finish(self) -> Vec<Shown> {
        let mut unknown: Vec<Shown> = self
            .in_flight
            .into_values()
            .map(|record| Shown {
                record,
                outcome: "unknown",
            })
            .collect();
        unknown.sort_by_key(|s| s.record.seq);
        unknown
    }
}

const COLUMNS: [&str; 9] = [
    "TIME",
    "OUTCOME",
    "STATUS",
    "OPERATION",
    "RESOURCE ID",
    "SERVICE",
    "EXTERNALID",
    "CLIENT",
    "REQUEST ID",
];

fn cells(shown: &Shown) -> [String; 9] {
    let r = &shown.record;
    let resource = |field: &str| {
        r.resource
            .as_ref()
            .and_then(|v| v.get(field))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_else(|| "-".into())
    };
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    [
        r.ts.clone(),
        shown.outcome.to_owned(),
        r.upstream_status
            .map_or_else(|| "-".into(), |s| s.to_string()),
        or_dash(&r.operation_id),
        or_dash(&r.resource_id),
        resource("service"),
        resource("externalid"),
        or_dash(&r.client),
        or_dash(&r.request_id),
    ]
}

/// An aligned table for a terminal.
pub fn table(rows: &[Shown]) -> String {
    let rows: Vec<[String; 9]> = rows.iter().map(cells).collect();
    let mut widths = COLUMNS.map(|c| c.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&COLUMNS.map(str::to_owned));
    for row in &rows {
        line(row);
    }
    out
}

/// One JSON object, as stored but with the shown outcome.
pub fn json_line(shown: &Shown) -> String {
    let mut value = serde_json::to_value(&shown.record).expect("records serialise");
    value["outcome"] = Value::from(shown.outcome);
    value.to_string()
}

/// The CSV header.
pub const CSV_HEADER: &str = "seq,ts,outcome,request_id,operation_id,method,path,client,upstream_status,resource_id,service,externalid,name,latency_ms,detail";

/// One CSV row (RFC 4180 quoting).
pub fn csv_row(shown: &Shown) -> String {
    let r = &shown.record;
    let resource = |field: &str| {
        r.resource
            .as_ref()
            .and_then(|v| v.get(field))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_default()
    };
    let fields = [
        r.seq.to_string(),
        r.ts.clone(),
        shown.outcome.to_owned(),
        r.request_id.clone().unwrap_or_default(),
        r.operation_id.clone().unwrap_or_default(),
        r.method.clone().unwrap_or_default(),
        r.path.clone().unwrap_or_default(),
        r.client.clone().unwrap_or_default(),
        r.upstream_status.map(|s| s.to_string()).unwrap_or_default(),
        r.resource_id.clone().unwrap_or_default(),
        resource("service"),
        resource("externalid"),
        resource("name"),
        r.latency_ms.map(|l| l.to_string()).unwrap_or_default(),
        r.detail.clone().unwrap_or_default(),
    ];
    fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",")
}

fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn record(seq: u64, outcome: Outcome, id: &str, ts: &str, externalid: &str) -> Record {
        Record {
            seq,
            ts: ts.into(),
            outcome,
            request_id: Some(id.into()),
            attempt: None,
            operation_id: Some("create-connection".into()),
            method: Some("POST".into()),
            path: Some("/api/3/connections".into()),
            client: None,
            upstream_status: (outcome == Outcome::Created).then_some(201),
            resource_id: (outcome == Outcome::Created).then(|| format!("r{seq}")),
            resource: Some(
                json!({"service": "fooCommerce", "externalid": externalid, "name": "Toys, \"Inc.\""}),
            ),
            latency_ms: None,
            detail: None,
            violations: None,
            drift: None,
            prev: "0".repeat(64),
            hash: "0".repeat(64),
            mac: None,
        }
    }

    fn shown_all(records: Vec<Record>) -> Vec<Shown> {
        let mut collapse = Collapse::default();
        let mut out: Vec<Shown> = records
            .into_iter()
            .filter_map(|r| collapse.push(r))
            .collect();
        out.extend(collapse.finish());
        out
    }

    #[test]
    fn attempts_fold_into_their_outcome_and_orphans_are_unknown() {
        let mut outcome = record(3, Outcome::Created, "a", "2026-11-27T10:00:02.000Z", "x1");
        outcome.attempt = Some(1);
        let shown = shown_all(vec![
            record(1, Outcome::Attempted, "a", "2026-11-27T10:00:00.000Z", "x1"),
            record(2, Outcome::Attempted, "b", "2026-11-27T10:00:01.000Z", "x2"),
            outcome,
        ]);
        let outcomes: Vec<_> = shown.iter().map(|s| (s.record.seq, s.outcome)).collect();
        assert_eq!(outcomes, [(3, "created"), (2, "unknown")]);
    }

    #[test]
    fn a_repeated_request_id_cannot_hide_a_cut_off_create() {
        // Two creates with the same client-chosen id; only the second got an outcome.
        let mut outcome = record(3, Outcome::Created, "dup", "2026-11-27T10:00:02.000Z", "x2");
        outcome.attempt = Some(2);
        let shown = shown_all(vec![
            record(
                1,
                Outcome::Attempted,
                "dup",
                "2026-11-27T10:00:00.000Z",
                "x1",
            ),
            record(
                2,
                Outcome::Attempted,
                "dup",
                "2026-11-27T10:00:01.000Z",
                "x2",
            ),
            outcome,
        ]);
        let outcomes: Vec<_> = shown.iter().map(|s| (s.record.seq, s.outcome)).collect();
        assert_eq!(outcomes, [(3, "created"), (1, "unknown")]);
    }

    #[test]
    fn filters_combine() {
        let shown = shown_all(vec![
            record(1, Outcome::Created, "a", "2026-11-27T10:00:00.000Z", "x1"),
            record(2, Outcome::Created, "b", "2026-11-27T12:00:00.000Z", "x2"),
        ]);
        let filter = Filter {
            externalid: Some("x2".into()),
            ..Filter::default()
        };
        assert_eq!(shown.iter().filter(|s| filter.matches(s)).count(), 1);
        let filter = Filter {
            since: Some(datetime!(2026-11-27 11:00 UTC)),
            outcome: Some("created".into()),
            ..Filter::default()
        };
        let kept: Vec<_> = shown
            .iter()
            .filter(|s| filter.matches(s))
            .map(|s| s.record.seq)
            .collect();
        assert_eq!(kept, [2]);
        let filter = Filter {
            until: Some(datetime!(2026-11-27 11:00 UTC)),
            service: Some("other".into()),
            ..Filter::default()
        };
        assert_eq!(shown.iter().filter(|s| filter.matches(s)).count(), 0);
    }

    #[test]
    fn times_are_rfc3339_or_an_age() {
        let now = datetime!(2026-11-27 12:00 UTC);
        assert_eq!(
            parse_time("1h", now).unwrap(),
            datetime!(2026-11-27 11:00 UTC)
        );
        assert_eq!(
            parse_time("7d", now).unwrap(),
            datetime!(2026-11-20 12:00 UTC)
        );
        assert_eq!(
            parse_time("2026-11-01T00:00:00Z", now).unwrap(),
            datetime!(2026-11-01 0:00 UTC)
        );
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("5y", now).is_err());
    }

    #[test]
    fn the_table_is_aligned() {
        let rows = shown_all(vec![record(
            1,
            Outcome::Created,
            "a",
            "2026-11-27T10:00:00.000Z",
            "toystore123",
        )]);
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let col = |line: &str, name: &str| line.find(name).unwrap();
        assert_eq!(col(lines[0], "EXTERNALID"), col(lines[1], "toystore123"));
        assert_eq!(col(lines[0], "OUTCOME"), col(lines[1], "created"));
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let rows = shown_all(vec![record(
            1,
            Outcome::Created,
            "a",
            "2026-11-27T10:00:00.000Z",
            "x,1",
        )]);
        let row = csv_row(&rows[0]);
        assert!(row.contains(",\"x,1\","), "{row}");
        assert!(row.contains(",\"Toys, \"\"Inc.\"\"\","), "{row}");
        let mut plain = rows[0].clone();
        plain.record.resource = None;
        assert_eq!(
            csv_row(&plain).split(',').count(),
            CSV_HEADER.split(',').count()
        );
    }

    #[test]
    fn json_lines_carry_the_shown_outcome() {
        let rows = shown_all(vec![record(
            1,
            Outcome::Attempted,
            "a",
            "2026-11-27T10:00:00.000Z",
            "x",
        )]);
        let value: Value = serde_json::from_str(&json_line(&rows[0])).unwrap();
        assert_eq!(value["outcome"], "unknown");
        assert_eq!(value["seq"], 1);
    }
}
