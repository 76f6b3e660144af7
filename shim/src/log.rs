//! The shim's log: one line per event, `TIME LEVEL target: message key=value ...`.
//!
//! tracing-subscriber's fmt stack keeps a span registry whose slab alone pins 32 KiB in
//! every shim for spans the shim never creates; this flat writer keeps none (docs/shim.md,
//! "Memory"). Spans of libraries are accepted and ignored; their events are written.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

pub struct LineLogger<W> {
    max: Level,
    out: Mutex<W>,
}

impl<W: Write + Send + 'static> LineLogger<W> {
    /// Events up to `max` (DEBUG includes INFO, WARN, ERROR) go to `out`.
    pub fn new(out: W, max: Level) -> Self {
        LineLogger {
            max,
            out: Mutex::new(out),
        }
    }

    /// Installs the logger for the whole process. Each process installs one, once, at
    /// start; a second one would be a no-op.
    pub fn install(self) {
        let _ = tracing::subscriber::set_global_default(self);
    }
}

impl<W: Write + Send + 'static> Subscriber for LineLogger<W> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // tracing orders levels by verbosity: TRACE is the greatest.
        *metadata.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(self.max.into())
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let mut line = format!(
            "{} {:>5} {}:",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            meta.level(),
            meta.target()
        );
        event.record(&mut Fields(&mut line));
        line.push('\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // Nowhere to report a failing log write; the next line tries again.
        let _ = out.write_all(line.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Appends ` message` and ` key=value` for each field.
struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_enabled_events_as_lines() {
        let buf = Buf::default();
        let logger = LineLogger::new(buf.clone(), Level::INFO);
        tracing::subscriber::with_default(logger, || {
            let path = "/x y";
            tracing::info!(pid = 7, path, "serving");
            tracing::debug!("hidden");
            tracing::warn!(error = %"boom", "failed");
        });
        let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].ends_with(" INFO berth_shim::log::tests: serving pid=7 path=\"/x y\""),
            "{text}"
        );
        assert!(
            lines[1].ends_with(" WARN berth_shim::log::tests: failed error=boom"),
            "{text}"
        );
    }
}
