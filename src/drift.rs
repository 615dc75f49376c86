//! Response drift: where an upstream's answer differs from what the document declares.
//!
//! [`check`] is the decision, a plain function: the status must be declared (or fall under a
//! `4XX`-style class or `default`), the `Content-Type` one of that response's media types,
//! each header it marks `required` present, and a JSON body valid against its schema (with
//! `writeOnly` properties not required). [`DriftMonitor`] runs it off the response path, on
//! a thread of its own fed by a bounded queue, and keeps what it found: a counter per
//! operation and kind, one log line per operation, kind and pointer a minute, and the table
//! `GET /drift` (and `specgate drift`) reports. Nothing here changes or delays a response.
//!
//! What is logged never holds a value of a property whose name looks like a secret, nor a
//! string shaped like a credential (the token is one): see [`excerpt`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, header};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::audit::rfc3339;
use crate::error::Source;
use crate::metrics::Metrics;
use crate::spec::{Operation, Responses, is_json, media_essence};

/// How a response differs from its declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A status the operation declares no response for (and no class or `default` covers).
    UndeclaredStatus,
    /// A `Content-Type` the declared response does not list.
    UndeclaredContentType,
    /// A JSON body the declared schema refuses.
    Schema,
    /// A header the declared response marks `required`, absent.
    MissingHeader,
}

impl Kind {
    /// Its name, in metrics, logs, audit records and reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::UndeclaredStatus => "undeclared_status",
            Kind::UndeclaredContentType => "undeclared_content_type",
            Kind::Schema => "schema",
            Kind::MissingHeader => "missing_header",
        }
    }
}

/// One difference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// What kind.
    pub kind: Kind,
    /// Where: for `schema` a JSON pointer into the body, each array index written `*` so one
    /// field of every item is one finding; otherwise what is undeclared or missing (the status,
    /// the media type, the header's name).
    pub pointer: String,
    /// What the document expects there, for a person (never a value from the response).
    pub detail: String,
    /// The offending value, cut short and redacted ([`excerpt`]); `None` where there is none.
    pub excerpt: Option<String>,
}

/// The response of an operation, as far as the check needs it.
#[derive(Clone, Copy, Debug)]
pub struct Answer<'a> {
    /// Its status.
    pub status: u16,
    /// Its headers.
    pub headers: &'a HeaderMap,
    /// Its whole body, decoded; `None` when it was not kept (too long, encoded in a way that
    /// could not be undone, cut off).
    pub body: Option<&'a [u8]>,
}

/// Where `answer` differs from what `responses` declares; empty when it does not.
pub fn check(responses: &Responses, answer: Answer<'_>) -> Vec<Finding> {
    let Some(declared) = responses.for_status(answer.status) else {
        return vec![Finding {
            kind: Kind::UndeclaredStatus,
            pointer: answer.status.to_string(),
            detail: format!("the operation declares no {} response", answer.status),
            excerpt: None,
        }];
    };
    let mut findings = Vec::new();
    for name in &declared.required_headers {
        if !answer.headers.contains_key(name) {
            findings.push(Finding {
                kind: Kind::MissingHeader,
                pointer: name.to_string(),
                detail: format!("the {} response requires header {name}", answer.status),
                excerpt: None,
            });
        }
    }
    if declared.media.is_empty() {
        // Nothing declared to compare a body with.
        return findings;
    }
    let content_type = answer
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(media_essence);
    let empty = answer.body.is_some_and(<[u8]>::is_empty);
    let Some(essence) = content_type else {
        if !empty {
            findings.push(Finding {
                kind: Kind::UndeclaredContentType,
                pointer: "none".to_owned(),
                detail: "a body without a Content-Type".to_owned(),
                excerpt: None,
            });
        }
        return findings;
    };
    let Some(media) = declared.media.iter().find(|m| m.admits(&essence)) else {
        findings.push(Finding {
            kind: Kind::UndeclaredContentType,
            detail: format!(
                "the {} response declares {}",
                answer.status,
                declared
                    .media
                    .iter()
                    .map(|m| m.range.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            pointer: essence,
            excerpt: None,
        });
        return findings;
    };
    let (Some(schema), Some(body)) = (&media.schema, answer.body) else {
        return findings;
    };
    if !is_json(&essence) {
        return findings;
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(_) => {
            findings.push(Finding {
                kind: Kind::Schema,
                pointer: String::new(),
                detail: format!("the body is not the JSON its Content-Type ({essence}) says"),
                excerpt: None,
            });
            return findings;
        }
    };
    let (value, violations) = schema.check_keeping(value);
    for violation in violations {
        let Source::Body { pointer } = violation.source else {
            continue;
        };
        let pointer_excerpt = excerpt(&value, &pointer);
        let pointer = generalise(&value, &pointer);
        // One finding per place: an array of a hundred items with the same fault is one.
        if findings
            .iter()
            .any(|f| f.kind == Kind::Schema && f.pointer == pointer)
        {
            continue;
        }
        findings.push(Finding {
            kind: Kind::Schema,
            pointer,
            detail: violation.title,
            excerpt: pointer_excerpt,
        });
    }
    findings
}

/// `pointer` (into `value`) with each token that indexes an array written `*`, and each
/// object key that looks like data rather than a name (digits, an email, a UUID, anything
/// shaped like a credential) written `*` too: those are the response's own values, and one
/// field of every entry is one finding.
pub fn generalise(value: &Value, pointer: &str) -> String {
    let mut out = String::with_capacity(pointer.len());
    let mut at = Some(value);
    for token in pointer.split('/').skip(1) {
        out.push('/');
        match at {
            Some(Value::Array(items)) => {
                out.push('*');
                at = token.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            Some(Value::Object(map)) => {
                let key = token.replace("~1", "/").replace("~0", "~");
                out.push_str(if data_like(&key) { "*" } else { token });
                at = map.get(&key);
            }
            _ => {
                let key = token.replace("~1", "/").replace("~0", "~");
                out.push_str(if data_like(&key) { "*" } else { token });
                at = None;
            }
        }
    }
    out
}

/// Whether an object key is a value rather than a name.
fn data_like(key: &str) -> bool {
    let uuid = key.len() == 36 && key.bytes().filter(|b| *b == b'-').count() == 4;
    (!key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()))
        || key.contains('@')
        || uuid
        || token_shaped(key)
}

/// Property names whose values are never shown, in lower case; a name containing one counts.
const SECRET_NAMES: [&str; 14] = [
    "pass",
    "pwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "auth",
    "bearer",
    "jwt",
    "credential",
    "cookie",
    "session",
    "private",
];

/// Whether a property called `name` may hold a secret. Generous on purpose: a value hidden
/// needlessly costs a log line some detail, one shown wrongly leaks it.
pub fn looks_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|secret| name.contains(secret))
        || name.ends_with("key")
        || name.ends_with("signature")
}

/// Whether a string is shaped like a credential: long, with no spaces, of the characters
/// tokens are written in (which takes in URLs and long numbers too). Such strings are never
/// shown, whatever their property is called; an RFC 3339 time is.
fn token_shaped(text: &str) -> bool {
    text.len() >= 16
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+/=:".contains(&b))
        && OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_err()
}

/// The value at `pointer` in `value`, for a log line: a number, boolean or null as it is; a
/// string quoted and cut to 32 characters, unless a word of it is shaped like a credential
/// (`Bearer abc…` included); an object or array by its size only. `[redacted]` under a
/// property whose name looks like a secret. `None` where there is no value (a missing
/// property).
pub fn excerpt(value: &Value, pointer: &str) -> Option<String> {
    let secret = pointer
        .split('/')
        .skip(1)
        .any(|token| looks_secret(&token.replace("~1", "/").replace("~0", "~")));
    let found = value.pointer(pointer)?;
    if secret {
        return Some("[redacted]".to_owned());
    }
    Some(match found {
        Value::String(text) if text.split_whitespace().any(token_shaped) => {
            format!("[redacted: {} characters]", text.chars().count())
        }
        Value::String(text) if text.chars().count() > 32 => {
            format!("{:?}…", text.chars().take(32).collect::<String>())
        }
        Value::Object(map) => format!("an object of {} properties", map.len()),
        Value::Array(items) => format!("an array of {} items", items.len()),
        other => other.to_string(),
    })
}

/// The monitor's settings.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// The share of responses checked while the check keeps up.
    pub sample_rate: f64,
    /// Bodies longer than this are not parsed.
    pub max_body_bytes: usize,
}

/// One response waiting for the check.
pub struct Job {
    /// Its operation.
    pub operation: Arc<Operation>,
    /// Its status.
    pub status: u16,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body as received (undecoded); `None` when not kept.
    pub body: Option<KeptBody>,
}

/// The chunks of a response body kept for the check, counted against the monitor's budget
/// until dropped.
pub struct KeptBody {
    chunks: Vec<Bytes>,
    len: usize,
    budget: Arc<AtomicUsize>,
}

impl KeptBody {
    /// Keeps `chunk` if the budget has room for it; `false` (and nothing kept) if not.
    pub fn keep(&mut self, chunk: &Bytes) -> bool {
        let taken = self.budget.fetch_add(chunk.len(), Ordering::Relaxed);
        if taken + chunk.len() > MAX_KEPT_BYTES {
            self.budget.fetch_sub(chunk.len(), Ordering::Relaxed);
            return false;
        }
        self.len += chunk.len();
        self.chunks.push(chunk.clone());
        true
    }

    /// Its length so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole body in one piece (a copy only when it came in several chunks).
    fn joined(&self) -> Bytes {
        match self.chunks.as_slice() {
            [one] => one.clone(),
            chunks => chunks.concat().into(),
        }
    }
}

impl Drop for KeptBody {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.len, Ordering::Relaxed);
    }
}

/// Why a response went unchecked (or its body unparsed), as the skipped metric labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Skipped {
    /// Not sampled.
    Sampled,
    /// The queue was full (sampling is lowered).
    QueueFull,
    /// The body was over `drift.max_body_bytes` or cut off (the rest was still checked).
    Body,
}

impl Skipped {
    /// Its label.
    pub fn name(self) -> &'static str {
        match self {
            Skipped::Sampled => "sampled_out",
            Skipped::QueueFull => "queue_full",
            Skipped::Body => "body_not_parsed",
        }
    }
}

/// Response bytes kept for the check at once, across every response in flight and queued:
/// past it a body is not parsed.
const MAX_KEPT_BYTES: usize = 16 * 1024 * 1024;

/// Sampling never drops below this share of responses.
const MIN_SAMPLE_RATE: f64 = 1.0 / 64.0;
/// Distinct (operation, kind, pointer) kept at most; past it the one seen longest ago is
/// forgotten. Each keeps at most a day of minutes: 11 MiB at worst.
const MAX_KEPT: usize = 1024;
/// How far back the report reaches.
pub const MAX_WINDOW_MINUTES: u64 = 24 * 60;
/// One log line per (operation, kind, pointer) in this long.
const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Seen {
    first: OffsetDateTime,
    last: OffsetDateTime,
    /// Per minute (since the epoch) with any, oldest first, kept for [`MAX_WINDOW_MINUTES`].
    minutes: VecDeque<(u32, u32)>,
    logged: Option<Instant>,
    /// Seen since the last log line.
    unlogged: u64,
}

type Key = (Arc<str>, Kind, String);

/// The response check, shared by every generation of the stack: its queue, its thread, the
/// adaptive sample rate and what it has found.
pub struct DriftMonitor {
    queue: SyncSender<Job>,
    /// The sample rate as `f64` bits: the configured one, lowered while the queue overflows.
    rate: AtomicU64,
    configured: AtomicU64,
    max_body_bytes: AtomicU64,
    sampled: AtomicU64,
    /// Jobs queued and not yet taken.
    pending: AtomicUsize,
    /// Bytes of response bodies kept ([`KeptBody`]).
    kept_bytes: Arc<AtomicUsize>,
    kept: Mutex<Kept>,
    metrics: Metrics,
}

/// What the monitor has found.
#[derive(Debug, Default)]
struct Kept {
    seen: HashMap<Key, Seen>,
}

impl std::fmt::Debug for DriftMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftMonitor")
            .field("sample_rate", &self.sample_rate())
            .finish_non_exhaustive()
    }
}

impl DriftMonitor {
    /// Starts the check's thread, with room for `queue` responses waiting.
    pub fn start(settings: Settings, queue: usize, metrics: Metrics) -> std::io::Result<Arc<Self>> {
        let (sender, receiver) = sync_channel(queue.max(1));
        let monitor = Arc::new(DriftMonitor {
            queue: sender,
            rate: AtomicU64::new(settings.sample_rate.to_bits()),
            configured: AtomicU64::new(settings.sample_rate.to_bits()),
            max_body_bytes: AtomicU64::new(settings.max_body_bytes as u64),
            sampled: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            kept_bytes: Arc::new(AtomicUsize::new(0)),
            kept: Mutex::new(Kept::default()),
            metrics,
        });
        monitor.metrics.drift_sample_rate(settings.sample_rate);
        // The thread holds the monitor weakly: it ends with the last stack that feeds it.
        let weak = Arc::downgrade(&monitor);
        std::thread::Builder::new()
            .name("specgate-drift".into())
            .spawn(move || work(&weak, &receiver))?;
        Ok(monitor)
    }

    /// Applies a reload's settings.
    pub fn configure(&self, settings: Settings) {
        self.configured
            .store(settings.sample_rate.to_bits(), Ordering::Relaxed);
        self.rate
            .store(settings.sample_rate.to_bits(), Ordering::Relaxed);
        self.max_body_bytes
            .store(settings.max_body_bytes as u64, Ordering::Relaxed);
        self.metrics.drift_sample_rate(settings.sample_rate);
    }

    /// The share of responses checked now.
    pub fn sample_rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    /// Bodies longer than this are not parsed.
    pub fn max_body_bytes(&self) -> usize {
        usize::try_from(self.max_body_bytes.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// An empty body to keep a response's chunks in.
    pub fn keep_body(&self) -> KeptBody {
        KeptBody {
            chunks: Vec::new(),
            len: 0,
            budget: self.kept_bytes.clone(),
        }
    }

    /// Counts a response whose body is not parsed (too long, or cut off).
    pub fn body_skipped(&self) {
        self.metrics.drift_skipped(Skipped::Body.name());
    }

    /// Whether this response is one of those checked: evenly spread, the sample rate of them.
    /// A create (`inline`: checked where its record is written, never queued) goes by the
    /// configured rate, which a full queue does not lower.
    pub fn sample(&self, inline: bool) -> bool {
        let rate = if inline {
            f64::from_bits(self.configured.load(Ordering::Relaxed))
        } else {
            self.sample_rate()
        };
        if rate >= 1.0 {
            return true;
        }
        let n = self.sampled.fetch_add(1, Ordering::Relaxed) as f64;
        let taken = (n + 1.0) * rate;
        if taken.floor() > (n * rate).floor() {
            return true;
        }
        self.metrics.drift_skipped(Skipped::Sampled.name());
        false
    }

    /// Queues `job` for the check; when the queue is full it is skipped and sampling halved.
    pub fn submit(&self, job: Job) {
        // Counted first, so the thread never takes a job it has not seen counted.
        self.pending.fetch_add(1, Ordering::Relaxed);
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                self.metrics.drift_skipped(Skipped::QueueFull.name());
                let lowered = (self.sample_rate() / 2.0).max(MIN_SAMPLE_RATE);
                self.rate.store(lowered.to_bits(), Ordering::Relaxed);
                self.metrics.drift_sample_rate(lowered);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Checks `job` here and now, records what it finds, and returns it: for an audited
    /// create, whose response is held for its record anyway.
    pub fn check_now(&self, job: &Job) -> Vec<Finding> {
        let Some(responses) = &job.operation.responses else {
            return Vec::new();
        };
        let joined = job.body.as_ref().map(KeptBody::joined);
        let decoded = joined.as_deref().and_then(|body| {
            let coding = crate::encoding::coding(&job.headers).ok()?;
            crate::encoding::decode(coding, body, self.max_body_bytes() as u64).ok()
        });
        if job.body.is_some() && decoded.is_none() {
            self.body_skipped();
        }
        let findings = check(
            responses,
            Answer {
                status: job.status,
                headers: &job.headers,
                body: decoded.as_deref(),
            },
        );
        self.record(&job.operation.id, job.status, &findings);
        findings
    }

    /// Counts, keeps and (at most once a minute per operation, kind and pointer) logs each
    /// finding.
    pub fn record(&self, operation: &Arc<str>, status: u16, findings: &[Finding]) {
        if findings.is_empty() {
            return;
        }
        let now = OffsetDateTime::now_utc();
        let minute = minute_of(now);
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        for finding in findings {
            self.metrics.response_drift(operation, finding.kind.name());
            let key = (operation.clone(), finding.kind, finding.pointer.clone());
            if !kept.seen.contains_key(&key) && kept.seen.len() >= MAX_KEPT {
                // Room for the new one: the one seen longest ago goes.
                let oldest = kept
                    .seen
                    .iter()
                    .min_by_key(|(_, seen)| seen.last)
                    .map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    kept.seen.remove(&oldest);
                }
            }
            let entry = kept.seen.entry(key).or_insert_with(|| Seen {
                first: now,
                last: now,
                minutes: VecDeque::new(),
                logged: None,
                unlogged: 0,
            });
            entry.last = now;
            match entry.minutes.back_mut() {
                Some((m, count)) if *m == minute => *count = count.saturating_add(1),
                _ => entry.minutes.push_back((minute, 1)),
            }
            while entry
                .minutes
                .front()
                .is_some_and(|(m, _)| u64::from(minute.saturating_sub(*m)) >= MAX_WINDOW_MINUTES)
            {
                entry.minutes.pop_front();
            }
            entry.unlogged += 1;
            if entry.logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                log(operation, status, finding, entry.unlogged);
                entry.logged = Some(Instant::now());
                entry.unlogged = 0;
            }
        }
    }

    /// What was found in the last `minutes` (at most a day), most frequent first.
    pub fn report(&self, minutes: u64) -> Value {
        let minutes = minutes.clamp(1, MAX_WINDOW_MINUTES);
        let since_minute = minute_of(OffsetDateTime::now_utc()) + 1 - minutes as u32;
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<(u64, &Key, &Seen)> = kept
            .seen
            .iter()
            .filter_map(|(key, entry)| {
                let count: u64 = entry
                    .minutes
                    .iter()
                    .filter(|(m, _)| *m >= since_minute)
                    .map(|(_, c)| u64::from(*c))
                    .sum();
                (count > 0).then_some((count, key, entry))
            })
            .collect();
        rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let drifts: Vec<Value> = rows
            .into_iter()
            .map(|(count, (operation, kind, pointer), entry)| {
                json!({
                    "operation": &**operation,
                    "kind": kind.name(),
                    "pointer": pointer,
                    "count": count,
                    "first_seen": rfc3339(entry.first),
                    "last_seen": rfc3339(entry.last),
                })
            })
            .collect();
        json!({
            "minutes": minutes,
            "sample_rate": self.sample_rate(),
            "drifts": drifts,
        })
    }

    /// Raises a lowered sample rate back toward the configured one, as the queue has room.
    fn recover(&self) {
        let configured = f64::from_bits(self.configured.load(Ordering::Relaxed));
        let rate = self.sample_rate();
        if rate < configured {
            let raised = (rate * 2.0).min(configured);
            self.rate.store(raised.to_bits(), Ordering::Relaxed);
            self.metrics.drift_sample_rate(raised);
        }
    }
}

/// Minutes since the epoch (a `u32` lasts until the year 10136).
fn minute_of(time: OffsetDateTime) -> u32 {
    u32::try_from(time.unix_timestamp() / 60).unwrap_or(u32::MAX)
}

fn log(operation: &str, status: u16, finding: &Finding, repeats: u64) {
    tracing::warn!(
        operation,
        kind = finding.kind.name(),
        pointer = %finding.pointer,
        upstream_status = status,
        excerpt = finding.excerpt.as_deref(),
        detail = %finding.detail,
        seen = repeats,
        "response drift"
    );
}

/// How long the check's thread rests after emptying the queue before it waits again.
const TICK: Duration = Duration::from_millis(2);

/// The check's thread. It takes what has queued up, then rests a [`TICK`]: only a thread
/// waiting on the queue is woken by a sender, so under load it wakes about once a tick rather
/// than once a response. Sampling is raised again at most once a second, when the queue has
/// run empty.
fn work(monitor: &std::sync::Weak<DriftMonitor>, jobs: &Receiver<Job>) {
    let mut changed = Instant::now();
    loop {
        let mut next = match jobs.recv_timeout(Duration::from_secs(1)) {
            Ok(job) => Some(job),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let busy = next.is_some();
        let Some(monitor) = monitor.upgrade() else {
            return;
        };
        while let Some(job) = next {
            monitor.pending.fetch_sub(1, Ordering::Relaxed);
            // A check that panics must not take the thread (and every later check) with it.
            let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                monitor.check_now(&job);
            }));
            if checked.is_err() {
                tracing::error!(
                    operation = %job.operation.id,
                    "the response drift check failed on a response; it was skipped"
                );
            }
            next = jobs.try_recv().ok();
        }
        if monitor.pending.load(Ordering::Relaxed) == 0
            && changed.elapsed() >= Duration::from_secs(1)
        {
            changed = Instant::now();
            monitor.recover();
        }
        drop(monitor);
        if busy {
            std::thread::sleep(TICK);
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::spec::Spec;

    fn operation() -> Arc<Operation> {
        let doc = json!({
            "openapi": "3.0.3",
            "info": {"title": "t", "version": "1"},
            "paths": {"/users": {"post": {
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {
                    "201": {
                        "description": "made",
                        "headers": {
                            "X-Request-Id": {"required": true, "schema": {"type": "string"}},
                            "X-Optional": {"schema": {"type": "string"}}
                        },
                        "content": {"application/json": {"schema":
                            {"$ref": "#/components/schemas/Created"}}}
                    },
                    "4XX": {"description": "refused",
                            "content": {"application/problem+json": {}}},
                    "202": {"description": "accepted, nothing declared about it"}
                }
            }}},
            "components": {"schemas": {
                "Created": {"type": "object", "required": ["user"], "properties": {"user": {
                    "type": "object",
                    "required": ["id", "password"],
                    "properties": {
                        "id": {"type": "string"},
                        "password": {"type": "string", "writeOnly": true},
                        "api_key": {"type": "integer"},
                        "note": {"type": "integer"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "plan": {"oneOf": [{"type": "integer"}, {"type": "boolean"}]},
                        "teams": {"type": "object",
                                  "additionalProperties": {"type": "integer"}}
                    }
                }}}
            }}
        });
        Spec::compile("t.json", doc).unwrap().operations[0].clone()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    http::HeaderName::from_static(n),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    fn findings(status: u16, headers: &HeaderMap, body: &str) -> Vec<Finding> {
        let op = operation();
        check(
            op.responses.as_ref().unwrap(),
            Answer {
                status,
                headers,
                body: Some(body.as_bytes()),
            },
        )
    }

    const JSON: (&str, &str) = ("content-type", "application/json; charset=utf-8");
    const ID: (&str, &str) = ("x-request-id", "r1");

    #[test]
    fn a_response_as_declared_has_no_findings() {
        let h = headers(&[JSON, ID]);
        assert_eq!(findings(201, &h, r#"{"user": {"id": "7"}}"#), []);
        // The class covers any 4xx; a declared media type with no schema checks no body.
        let problem = headers(&[("content-type", "application/problem+json")]);
        assert_eq!(findings(404, &problem, "not even json"), []);
        // No content declared for a status: nothing to compare a body with.
        let html = headers(&[("content-type", "text/html")]);
        assert_eq!(findings(202, &html, "<p>queued</p>"), []);
    }

    #[test]
    fn each_kind_of_drift_is_found_where_it_is() {
        let kinds = |f: &[Finding]| {
            f.iter()
                .map(|f| (f.kind.name(), f.pointer.clone()))
                .collect::<Vec<_>>()
        };
        let h = headers(&[JSON, ID]);
        assert_eq!(
            kinds(&findings(500, &h, "{}")),
            [("undeclared_status", "500".to_owned())]
        );
        let html = headers(&[("content-type", "text/html"), ID]);
        let found = findings(201, &html, "<html>");
        assert_eq!(
            kinds(&found),
            [("undeclared_content_type", "text/html".to_owned())]
        );
        assert!(found[0].detail.contains("application/json"), "{found:?}");
        assert_eq!(
            kinds(&findings(
                201,
                &headers(&[JSON]),
                r#"{"user": {"id": "7"}}"#
            )),
            [("missing_header", "x-request-id".to_owned())]
        );
        let found = findings(201, &h, r#"{"user": {"id": 7, "tags": ["a", 1, 2]}}"#);
        assert_eq!(
            kinds(&found),
            [
                ("schema", "/user/id".to_owned()),
                ("schema", "/user/tags/*".to_owned())
            ]
        );
        assert_eq!(found[0].excerpt.as_deref(), Some("7"));
        assert!(found[0].detail.contains("expected string"), "{found:?}");
        assert_eq!(
            kinds(&findings(201, &h, "{not json")),
            [("schema", String::new())]
        );
    }

    #[test]
    fn what_is_logged_holds_no_value_and_no_data_for_a_name() {
        let h = headers(&[JSON, ID]);
        let body = r#"{"user": {"id": "7", "plan": "hunter2-plan",
                       "teams": {"alice@example.com": "x", "12345": "y"}}}"#;
        let found = findings(201, &h, body);
        let places: Vec<&str> = found.iter().map(|f| f.pointer.as_str()).collect();
        // Keys that are data (an email, digits) are `*`, so they are one place, not two.
        assert_eq!(places, ["/user/plan", "/user/teams/*"], "{found:?}");
        for finding in &found {
            assert!(!finding.detail.contains("hunter2"), "{finding:?}");
            assert!(!finding.detail.contains("alice"), "{finding:?}");
        }
        assert_eq!(found[0].detail, "fails 'oneOf'");
        let bearer = json!({"message": "invalid Bearer 0123456789abcdef0123456789"});
        assert_eq!(
            excerpt(&bearer, "/message").unwrap(),
            "[redacted: 41 characters]"
        );
        let when = json!({"udate": "2017-02-02T14:56:05-06:00"});
        assert_eq!(
            excerpt(&when, "/udate").unwrap(),
            "\"2017-02-02T14:56:05-06:00\""
        );
        for name in ["accessKey", "signingKey", "pwd", "Authorization", "jwt"] {
            assert!(looks_secret(name), "{name}");
        }
    }

    #[test]
    fn responses_of_extensions_only_declare_nothing() {
        let doc = json!({
            "openapi": "3.0.3", "info": {"title": "t", "version": "1"},
            "paths": {"/a": {"get": {"responses": {"x-note": "later"}}}}
        });
        let spec = Spec::compile("t.json", doc).unwrap();
        assert!(spec.operations[0].responses.is_none());
    }

    #[test]
    fn write_only_properties_are_not_required_of_a_response() {
        let h = headers(&[JSON, ID]);
        // `password` is required, but only of requests: it is writeOnly.
        assert_eq!(findings(201, &h, r#"{"user": {"id": "7"}}"#), []);
        let missing = findings(201, &h, r#"{"user": {}}"#);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(missing[0].pointer, "/user/id");
        assert_eq!(missing[0].excerpt, None);
    }

    #[test]
    fn excerpts_never_show_secrets() {
        let h = headers(&[JSON, ID]);
        let token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let body = format!(r#"{{"user": {{"id": "7", "api_key": "{token}", "note": "{token}"}}}}"#);
        let found = findings(201, &h, &body);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].pointer, "/user/api_key");
        assert_eq!(found[0].excerpt.as_deref(), Some("[redacted]"));
        assert_eq!(found[1].pointer, "/user/note");
        assert_eq!(
            found[1].excerpt.as_deref(),
            Some("[redacted: 64 characters]")
        );
        let long = json!({"a": "a sentence that runs on well past the cut, with spaces"});
        assert_eq!(
            excerpt(&long, "/a").unwrap(),
            "\"a sentence that runs on well pas\"…"
        );
        assert_eq!(
            excerpt(&json!({"a": [1, 2]}), "/a").unwrap(),
            "an array of 2 items"
        );
        assert!(looks_secret("clientSecret") && looks_secret("X-Api-Key"));
        assert!(!looks_secret("name") && !looks_secret("keyboard"));
    }

    fn monitor(rate: f64, queue: usize) -> Arc<DriftMonitor> {
        let settings = Settings {
            sample_rate: rate,
            max_body_bytes: 1024,
        };
        DriftMonitor::start(settings, queue, Metrics::new()).unwrap()
    }

    fn job_with(monitor: &DriftMonitor, status: u16, body: &'static str) -> Job {
        let mut kept = monitor.keep_body();
        assert!(kept.keep(&Bytes::from_static(body.as_bytes())));
        Job {
            operation: operation(),
            status,
            headers: headers(&[JSON, ID]),
            body: Some(kept),
        }
    }

    #[test]
    fn the_report_counts_each_place_within_its_window() {
        let monitor = monitor(1.0, 4);
        for _ in 0..3 {
            monitor.check_now(&job_with(&monitor, 201, r#"{"user": {"id": 7}}"#));
        }
        monitor.check_now(&job_with(&monitor, 500, ""));
        monitor.check_now(&job_with(&monitor, 201, r#"{"user": {"id": "fine"}}"#));
        let report = monitor.report(5);
        let rows = report["drifts"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{report}");
        assert_eq!(rows[0]["operation"], "POST /users");
        assert_eq!(rows[0]["kind"], "schema");
        assert_eq!(rows[0]["pointer"], "/user/id");
        assert_eq!(rows[0]["count"], 3);
        assert_eq!(rows[1]["kind"], "undeclared_status");
        assert_eq!(rows[1]["pointer"], "500");
        assert!(rows[0]["first_seen"].as_str().unwrap() <= rows[0]["last_seen"].as_str().unwrap());
        let rendered = monitor.metrics.render();
        assert!(
            rendered.contains(
                "specgate_response_drift_total{operation=\"POST /users\",kind=\"schema\"} 3"
            ),
            "{rendered}"
        );
    }

    #[test]
    fn sampling_takes_an_even_share_and_a_full_queue_lowers_it() {
        let sampled = monitor(0.25, 1);
        let taken = (0..400).filter(|_| sampled.sample(false)).count();
        assert_eq!(taken, 100);
        assert!(
            sampled
                .metrics
                .render()
                .contains("specgate_response_drift_skipped_total{reason=\"sampled_out\"} 300")
        );

        let monitor = monitor(1.0, 1);
        // More than the queue holds, faster than one thread checks them.
        for _ in 0..64 {
            monitor.submit(job_with(&monitor, 201, r#"{"user": {"id": 7}}"#));
        }
        assert!(monitor.sample_rate() < 1.0, "{}", monitor.sample_rate());
        assert!(monitor.sample_rate() >= MIN_SAMPLE_RATE);
        // Creates are checked where their record is written, not queued: the configured rate.
        assert!((0..8).all(|_| monitor.sample(true)));
        let rendered = monitor.metrics.render();
        assert!(
            rendered.contains("specgate_response_drift_skipped_total{reason=\"queue_full\"}"),
            "{rendered}"
        );
        // Once the queue is drained the rate climbs back to the configured one.
        monitor.recover();
        monitor.recover();
        while monitor.sample_rate() < 1.0 {
            monitor.recover();
        }
        assert_eq!(monitor.sample_rate(), 1.0);
    }

    #[test]
    fn a_body_over_the_limit_is_not_parsed_but_the_rest_is_checked() {
        let monitor = monitor(1.0, 4);
        let mut big = job_with(&monitor, 201, "");
        big.body = None;
        big.headers = headers(&[("content-type", "text/plain")]);
        let found = monitor.check_now(&big);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].kind, Kind::MissingHeader);
        assert_eq!(found[1].kind, Kind::UndeclaredContentType);
    }
}
