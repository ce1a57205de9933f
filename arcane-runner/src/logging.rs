//! Structured logging: one JSON object per line (or text on a terminal), every line carrying the
//! stream's identity.

use std::fmt;

use arcane_core::StreamContext;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{ENV_LOG_FILTER, LogFormat};

/// The fields added to every log line: `streamId`, `streamKind`, `ApplicationVersion`,
/// `BackfillId` (the names the platform's log queries use) and the
/// `ARCANE__LOGGING_PROPERTIES` fields; and `shard`/`shards` in a shard of a sharded backfill.
pub fn context_fields(ctx: &StreamContext) -> Map<String, Value> {
    let mut fields = Map::new();
    for (k, v) in &ctx.logging_properties {
        fields.insert(k.clone(), v.clone());
    }
    fields.insert("streamId".into(), Value::String(ctx.stream_id.clone()));
    fields.insert("streamKind".into(), Value::String(ctx.stream_kind.clone()));
    if let Some(v) = &ctx.application_version {
        fields.insert("ApplicationVersion".into(), Value::String(v.clone()));
    }
    if let Some(id) = &ctx.backfill_id {
        fields.insert("BackfillId".into(), Value::String(id.clone()));
    }
    if let Ok(Some(shard)) = ctx.shard() {
        fields.insert("shard".into(), Value::from(shard.index()));
        fields.insert("shards".into(), Value::from(shard.count()));
    }
    fields
}

/// Report panics through the log (one JSON line in a container) instead of the default
/// hook's free text on stderr, which log pipelines would split and mis-parse.
pub fn log_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let what = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            tracing::error!(panic = %what, location = %at, "a task panicked; the run fails without acknowledging anything it did not commit");
        }));
    });
}

/// Install the global `tracing` subscriber writing to stderr (stdout is left to command output).
///
/// Returns an error naming `RUST_LOG` when the filter is invalid (the subscriber is then
/// installed with `info`); returns `Ok(false)` when a subscriber was already installed (an
/// embedding application's own).
pub fn install(
    format: LogFormat,
    filter: &str,
    fields: Map<String, Value>,
) -> Result<bool, arcane_core::Error> {
    let (filter, filter_err) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (
            EnvFilter::new("info"),
            Some(arcane_core::Error::config(
                format!("{ENV_LOG_FILTER} (--log)"),
                format!(
                    "invalid log filter {filter:?} ({e}); use directives such as info or arcane_core=debug,info"
                ),
            )),
        ),
    };
    let installed = match format {
        LogFormat::Json => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines { fields })
            .try_init()
            .is_ok(),
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(crate::progress::ClearingStderr)
            .with_target(false)
            .try_init()
            .is_ok(),
    };
    match filter_err {
        Some(e) => Err(e),
        None => Ok(installed),
    }
}

/// Formats events as one JSON object per line: `timestamp`, `level`, `target`, `message`, the
/// stream's fields, the fields of the enclosing spans and the event's fields.
#[derive(Debug, Clone, Default)]
pub struct JsonLines {
    fields: Map<String, Value>,
}

impl JsonLines {
    /// A formatter adding `fields` to every line.
    pub fn new(fields: Map<String, Value>) -> Self {
        Self { fields }
    }
}

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
        let meta = event.metadata();
        let mut obj = Map::new();
        obj.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        obj.insert("level".into(), Value::String(meta.level().to_string()));
        obj.insert("target".into(), Value::String(meta.target().to_string()));
        for (k, v) in &self.fields {
            obj.insert(k.clone(), v.clone());
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(formatted) = ext.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(formatted)
                {
                    obj.extend(map);
                }
            }
        }
        event.record(&mut JsonVisitor(&mut obj));
        let line = Value::Object(obj).to_string();
        writeln!(writer, "{line}")
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        self.0.insert(field.name().into(), Value::from(text));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_the_stream_fields_span_fields_and_event_fields() {
        let mut ctx = StreamContext::new("orders", "BlobLanding", json!({})).with_backfill("bf-1");
        ctx.application_version = Some("1.2.3".into());
        ctx.logging_properties.insert("team".into(), json!("data"));
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines::new(context_fields(&ctx)))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("commit", file = "part-1.parquet");
            let _g = span.enter();
            tracing::info!(rows = 42_u64, ok = true, "committed");
            let err = std::io::Error::other("disk full");
            tracing::warn!(error = &err as &dyn std::error::Error, "failed");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let l = &lines[0];
        assert_eq!(l["message"], "committed");
        assert_eq!(l["level"], "INFO");
        assert_eq!(l["streamId"], "orders");
        assert_eq!(l["streamKind"], "BlobLanding");
        assert_eq!(l["ApplicationVersion"], "1.2.3");
        assert_eq!(l["BackfillId"], "bf-1");
        assert_eq!(l["team"], "data");
        assert_eq!(l["file"], "part-1.parquet");
        assert_eq!(l["rows"], 42);
        assert_eq!(l["ok"], true);
        assert!(l["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["error"], "disk full");
        assert_eq!(lines[1]["level"], "WARN");
    }
}
