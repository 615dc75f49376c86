//! The PostgreSQL side: connecting (TLS by rustls when the URL asks for it), migrating the
//! schema, and the statements the shipper, the query and the verifier run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

/// A migration: its version, its name, and its SQL (embedded from `migrations/`).
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, in order. A new one is appended with the next version, never edited.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "audit table and shipping cursor",
    sql: include_str!("migrations/0001_audit_table.sql"),
}];

/// `audit.postgres_url`, parsed and checked. Its `Debug` never shows the password.
#[derive(Clone)]
pub struct PgUrl {
    config: tokio_postgres::Config,
    tls: Tls,
    shown: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tls {
    Off,
    /// Verify the server's certificate and name against the web roots plus `ca_file`.
    Verify {
        ca_file: Option<PathBuf>,
    },
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl PgUrl {
    /// Parses a `postgres://` or `postgresql://` URL. `sslmode=require`, `verify-ca` or
    /// `verify-full` turn TLS on, always verifying the server's certificate and host name
    /// (against the web PKI roots and the PEM file `sslrootcert` names); without `sslmode`, or
    /// with `disable`, `allow` or `prefer`, the connection is plain. Errors never repeat the URL
    /// (it may hold a password).
    pub fn parse(text: &str) -> Result<PgUrl, String> {
        let text = text.trim();
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err("expected a postgres:// or postgresql:// URL".into());
        }
        let (base, query) = text.split_once('?').unwrap_or((text, ""));
        let mut kept = Vec::new();
        let mut tls = Tls::Off;
        let mut ca_file = None;
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let decoded = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| format!("the value of {key} is not UTF-8"))?;
            match key {
                "sslrootcert" => ca_file = Some(PathBuf::from(decoded.as_ref())),
                "sslmode" => match decoded.as_ref() {
                    "disable" | "allow" | "prefer" => tls = Tls::Off,
                    "require" | "verify-ca" | "verify-full" => {
                        tls = Tls::Verify { ca_file: None };
                    }
                    other => return Err(format!("sslmode={other} is not a libpq sslmode")),
                },
                "sslcert" | "sslkey" | "sslpassword" => {
                    return Err(format!("{key}: client certificates are not supported"));
                }
                _ => kept.push(param),
            }
        }
        if let Tls::Verify { ca_file: file } = &mut tls {
            *file = ca_file;
        } else if ca_file.is_some() {
            return Err("sslrootcert is given but sslmode does not ask for TLS".into());
        }
        // The rest goes to tokio-postgres as is; TLS is decided above.
        kept.push(if tls == Tls::Off {
            "sslmode=disable"
        } else {
            "sslmode=require"
        });
        let rebuilt = format!("{base}?{}", kept.join("&"));
        let mut config: tokio_postgres::Config = rebuilt
            .parse()
            .map_err(|e: tokio_postgres::Error| crate::error::Chain(&e).to_string())?;
        if config.get_hosts().is_empty() {
            return Err("the URL names no host".into());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_user().is_none() {
            return Err("the URL names no user".into());
        }
        let shown = shown(&config, &tls);
        Ok(PgUrl { config, tls, shown })
    }

    /// Connects, naming the session `application_name` unless the URL names it.
    pub async fn connect(&self, application_name: &str) -> Result<Client, String> {
        let mut config = self.config.clone();
        if config.get_application_name().is_none() {
            config.application_name(application_name);
        }
        let failed =
            |e: tokio_postgres::Error| format!("{}: {}", self.shown, crate::error::Chain(&e));
        match &self.tls {
            Tls::Off => {
                debug_assert_eq!(config.get_ssl_mode(), SslMode::Disable);
                let (client, connection) = config.connect(NoTls).await.map_err(failed)?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %crate::error::Chain(&e), "postgres connection ended");
                    }
                });
                Ok(client)
            }
            Tls::Verify { ca_file } => {
                let tls =
                    tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(ca_file.as_deref())?);
                let (client, connection) = config.connect(tls).await.map_err(failed)?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %crate::error::Chain(&e), "postgres connection ended");
                    }
                });
                Ok(client)
            }
        }
    }
}

fn shown(config: &tokio_postgres::Config, tls: &Tls) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            Host::Tcp(name) => format!("{name}:{port}"),
            #[cfg(unix)]
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    format!(
        "postgresql://{}@{}/{}{}",
        config.get_user().unwrap_or_default(),
        hosts.join(","),
        config.get_dbname().unwrap_or_default(),
        if *tls == Tls::Off { "" } else { " (TLS)" }
    )
}

/// The rustls configuration for PostgreSQL: web PKI roots plus `ca_file`.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    crate::tls::client_config(ca_file).map_err(|e| match ca_file {
        Some(path) => format!("sslrootcert {}: {e}", path.display()),
        None => e,
    })
}

/// Applies the migrations this specgate knows and the database lacks, in one transaction,
/// under an advisory lock (a fleet starting at once migrates once). Returns the database's
/// schema version.
pub async fn migrate(client: &mut Client) -> Result<i32, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(hashtext(coalesce(current_schema(), '') || '.specgate_audit'))",
    )
    .await?;
    // Look before creating: once migrated, the role needs no CREATE privilege any more.
    let exists: bool = tx
        .query_one(
            "SELECT to_regclass('specgate_audit_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        tx.batch_execute(
            "CREATE TABLE specgate_audit_migrations (
                 version    integer     PRIMARY KEY,
                 name       text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    }
    let row = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM specgate_audit_migrations",
            &[],
        )
        .await?;
    let applied: i32 = row.get(0);
    let mut version = applied;
    for migration in MIGRATIONS.iter().filter(|m| m.version > applied) {
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO specgate_audit_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "audit database migrated"
        );
        version = migration.version;
    }
    tx.commit().await?;
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if version > known {
        tracing::warn!(
            database = version,
            known,
            "the audit database's schema is newer than this specgate knows; shipping on"
        );
    }
    Ok(version)
}

/// Inserts a batch of `(seq, line, json)` (json: the line made jsonb-safe, when it differs),
/// deriving every typed column from the record. Returns the number of rows inserted.
pub const INSERT: &str = "
INSERT INTO specgate_audit (node, seq, ts, outcome, request_id, operation_id, client,
                            resource_id, service, externalid, upstream_status, hash, line, record)
SELECT $1, r.seq, (r.j->>'ts')::timestamptz, r.j->>'outcome', r.j->>'request_id',
       r.j->>'operation_id', r.j->>'client', r.j->>'resource_id', r.j->'resource'->>'service',
       r.j->'resource'->>'externalid', (r.j->>'upstream_status')::integer, r.j->>'hash',
       r.line, r.j
FROM (SELECT u.seq, u.line, coalesce(u.json, u.line)::jsonb AS j
      FROM unnest($2::bigint[], $3::text[], $4::text[]) AS u(seq, line, json)
      -- OFFSET 0 keeps the subquery whole, so each line is parsed once, not once a column.
      OFFSET 0) AS r
ON CONFLICT DO NOTHING";

/// The stored hashes of some of a node's records (to judge rows that were already there).
pub const HASHES: &str =
    "SELECT seq, hash FROM specgate_audit WHERE node = $1 AND seq = ANY($2::bigint[])";

/// A node's cursor.
pub const CURSOR: &str = "SELECT seq, hash FROM specgate_audit_cursor WHERE node = $1";

/// Moves a node's cursor from ($4, $5) to ($2, $3): one row changed, or none if someone else
/// moved it.
pub const ADVANCE: &str = "
INSERT INTO specgate_audit_cursor AS c (node, seq, hash) VALUES ($1, $2, $3)
ON CONFLICT (node) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, updated_at = now()
    WHERE c.seq = $4 AND c.hash = $5";

/// A node's rows in chain order, with whether the typed columns agree with the record.
pub const CHAIN: &str = "
SELECT seq, line, record,
       (ts, outcome, request_id, operation_id, client, resource_id, service, externalid,
        upstream_status, hash)
       IS NOT DISTINCT FROM
       ((record->>'ts')::timestamptz, record->>'outcome', record->>'request_id',
        record->>'operation_id', record->>'client', record->>'resource_id',
        record->'resource'->>'service', record->'resource'->>'externalid',
        (record->>'upstream_status')::integer, record->>'hash') AS columns_agree
FROM specgate_audit WHERE node = $1 ORDER BY seq";

/// A line made safe for jsonb, if it needs to be: jsonb cannot hold U+0000, which a JSON
/// string may escape as `\u0000`. Those become U+FFFD in the jsonb copy; `line` keeps them.
pub fn jsonb_safe(line: &str) -> Option<String> {
    if !line.contains("\\u0000") {
        return None;
    }
    let mut value: serde_json::Value = serde_json::from_str(line).ok()?;
    scrub(&mut value);
    Some(value.to_string())
}

/// The record as the database stores it in `record`, for comparing with what it holds.
pub fn as_stored(line: &str) -> Option<serde_json::Value> {
    let mut value: serde_json::Value = serde_json::from_str(line).ok()?;
    scrub(&mut value);
    Some(value)
}

fn scrub(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{fffd}"),
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().filter(|k| k.contains('\0')).cloned().collect();
            for key in keys {
                if let Some(v) = map.remove(&key) {
                    map.insert(key.replace('\0', "\u{fffd}"), v);
                }
            }
            map.values_mut().for_each(scrub);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_tls_and_never_show_the_password() {
        let url = PgUrl::parse("postgresql://app:s3cret@db.example:6432/audit").unwrap();
        assert_eq!(url.tls, Tls::Off);
        assert_eq!(url.to_string(), "postgresql://app@db.example:6432/audit");
        assert!(!format!("{url:?}").contains("s3cret"));

        let url = PgUrl::parse(
            "postgres://app:s3cret@db.example/audit?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(
            url.tls,
            Tls::Verify {
                ca_file: Some(PathBuf::from("/etc/ca.pem"))
            }
        );
        assert_eq!(url.config.get_application_name(), Some("x"));
        assert!(url.to_string().ends_with("(TLS)"));

        for (bad, why) in [
            ("mysql://x@y/z", "postgres://"),
            ("postgres://u:pw@h/d?sslmode=sometimes", "sslmode=sometimes"),
            (
                "postgres://u:pw@h/d?sslrootcert=/ca.pem",
                "does not ask for TLS",
            ),
            (
                "postgres://u:pw@h/d?sslmode=require&sslcert=/c",
                "client certificates",
            ),
            ("postgres://u:pw@h/d?bogus=1", "bogus"),
        ] {
            let e = PgUrl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("pw"), "{e}");
        }
    }

    #[test]
    fn nul_characters_are_replaced_only_in_the_jsonb_copy() {
        assert_eq!(jsonb_safe(r#"{"a":"b"}"#), None);
        assert_eq!(
            jsonb_safe(r#"{"a":"x\u0000y","\u0000":1}"#).unwrap(),
            "{\"a\":\"x\u{fffd}y\",\"\u{fffd}\":1}"
        );
    }
}
