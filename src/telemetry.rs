//! Logging: `RUST_LOG`-style filters, JSON lines (the default when stderr is not a terminal)
//! or human-readable text.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Starts logging to stderr. `format` is `json`, `text`, or `None` to decide by the terminal.
pub fn init(format: Option<&str>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        Some("json") => true,
        Some(_) => false,
        None => !std::io::stderr().is_terminal(),
    };
    if json {
        json_subscriber(filter, std::io::stderr).init();
    } else {
        // Colour only for a person at a terminal: never into a file or a pipe, nor with NO_COLOR.
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(ansi)
            .init();
    }
}

/// The JSON-lines subscriber, writing to `writer`.
fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // Spans keep their fields as JSON, for the event's span list.
        .fmt_fields(JsonFields::new())
        .event_format(JsonLines)
        .finish()
}

/// One JSON object per event, `{"timestamp":…,"level":…,<fields>,"spans":[…]}`: the shape of
/// tracing-subscriber's flattened JSON format without target or current span, written
/// straight into the line buffer. Its own formatter goes through serde and re-checks the
/// UTF-8 of every piece it writes: ~24k instructions for an access-log line, 9% of a
/// forwarded create; this one takes ~14k.
#[derive(Debug, Clone, Copy)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\"", event.metadata().level())?;
        let mut fields = EventFields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        if let Some(scope) = ctx.event_scope() {
            writer.write_str(",\"spans\":[")?;
            for (i, span) in scope.from_root().enumerate() {
                if i > 0 {
                    writer.write_char(',')?;
                }
                writer.write_str("{\"name\":\"")?;
                Escaped(&mut writer).write_str(span.name())?;
                writer.write_char('"')?;
                let extensions = span.extensions();
                // The span's fields, kept as a JSON object by `JsonFields`.
                let kept = extensions
                    .get::<FormattedFields<N>>()
                    .and_then(|f| f.fields.strip_prefix('{')?.strip_suffix('}'))
                    .filter(|inner| !inner.is_empty());
                if let Some(inner) = kept {
                    writer.write_char(',')?;
                    writer.write_str(inner)?;
                }
                writer.write_char('}')?;
            }
            writer.write_char(']')?;
        }
        writer.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`.
struct EventFields<'a, W> {
    out: &'a mut W,
    result: fmt::Result,
}

impl<W: fmt::Write> EventFields<'_, W> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = (|| {
            self.out.write_str(",\"")?;
            Escaped(&mut *self.out).write_str(name)?;
            self.out.write_str("\":")?;
            value(self.out)
        })();
    }
}

impl<W: fmt::Write> Visit for EventFields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |out| {
            out.write_char('"')?;
            Escaped(&mut *out).write_str(value)?;
            out.write_char('"')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |out| {
            out.write_char('"')?;
            write!(Escaped(&mut *out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |out| write!(out, "{value}"));
    }

    // 128-bit integers go through `record_debug`, as strings, as tracing-subscriber's do.

    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json's form (`1.0`, `1e21`); JSON has no NaN or infinity: null, as there.
        self.field(field, |out| match serde_json::Number::from_f64(value) {
            Some(number) => write!(out, "{number}"),
            None => out.write_str("null"),
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }
}

/// Escapes what it is given as the inside of a JSON string (as serde_json does: quote,
/// backslash and control characters).
struct Escaped<'a, W: ?Sized>(&'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, byte) in s.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0x00..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    /// The same events through `JsonLines` and through tracing-subscriber's own flattened JSON
    /// format, each line parsed.
    fn both(emit: impl Fn()) -> Vec<(serde_json::Value, serde_json::Value)> {
        let ours = Captured::default();
        tracing::subscriber::with_default(
            json_subscriber(EnvFilter::new("trace"), ours.clone()),
            &emit,
        );
        let theirs = Captured::default();
        let reference = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("trace"))
            .with_writer(theirs.clone())
            .with_target(false)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish();
        tracing::subscriber::with_default(reference, &emit);
        let lines = |c: &Captured| -> Vec<serde_json::Value> {
            let bytes = c.0.lock().unwrap().clone();
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect()
        };
        let (ours, theirs) = (lines(&ours), lines(&theirs));
        assert_eq!(ours.len(), theirs.len());
        ours.into_iter().zip(theirs).collect()
    }

    #[test]
    fn lines_match_tracing_subscribers_json_format_field_for_field() {
        let awkward = "quote \" backslash \\ newline \n tab \t bell \u{7} nul \0 é ✓ 🦀";
        let pairs = both(|| {
            let outer = tracing::info_span!("outer", peer = "client \"1\"", attempt = 2u8);
            let _outer = outer.enter();
            let inner = tracing::info_span!("inner");
            let _inner = inner.enter();
            tracing::info!(
                log.target = "rustls::client",
                log.line = 17u32,
                wide = 1u128 << 100,
                whole = 1.0f64,
                huge = 1e21f64,
                "bridged"
            );
            drop(_inner);
            drop(_outer);
            tracing::info!(
                request_id = "0193-abc",
                status = 201u16,
                negative = -4i64,
                latency_ms = 1.25f64,
                nan = f64::NAN,
                audited = true,
                peer = %"127.0.0.1:5000",
                debug = ?Some("x"),
                r#type = "raw identifier",
                awkward,
                "request {}",
                "done"
            );
            tracing::warn!(error = %std::io::Error::other(awkward), "failed: {awkward}");
            tracing::error!("bare message");
        });
        for (mut ours, mut theirs) in pairs {
            // Both are RFC 3339 times; they differ by when each line was written.
            let ts = ours["timestamp"].take();
            assert!(
                time::OffsetDateTime::parse(
                    ts.as_str().unwrap(),
                    &time::format_description::well_known::Rfc3339
                )
                .is_ok(),
                "{ts}"
            );
            theirs["timestamp"].take();
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn every_control_character_is_escaped() {
        let all: String = (0u8..0x80).map(char::from).collect();
        let mut out = String::new();
        Escaped(&mut out).write_str(&all).unwrap();
        assert!(out.bytes().all(|b| b >= 0x20), "{out:?}");
        let back: String = serde_json::from_str(&format!("\"{out}\"")).unwrap();
        assert_eq!(back, all);
        assert_eq!(out, serde_json::to_string(&all).unwrap().trim_matches('"'));
    }
}
