//! `--log-format logfmt`: one `key=value` line per event (`ts=... level=INFO
//! target=millrace::access request_id=... operation=PutRecord stream=orders status=200
//! latency_us=120 msg=request`), the format Loki, Vector and Heroku-style tooling parse.
//!
//! Values with a space, `=`, `"` or a control character are quoted with Rust string escapes;
//! the event's message is `msg`. Span fields are not written (the request span is DEBUG and
//! its fields are repeated on the access line). Not here: colours, span nesting.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The logfmt event formatter.
pub struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        write!(
            writer,
            "ts={ts} level={} target={}",
            meta.level(),
            quoted(meta.target())
        )?;
        let mut visitor = Fields {
            line: String::new(),
        };
        event.record(&mut visitor);
        writer.write_str(&visitor.line)?;
        writeln!(writer)
    }
}

struct Fields {
    line: String,
}

impl Fields {
    fn push(&mut self, field: &Field, value: &str) {
        let key = match field.name() {
            "message" => "msg",
            name => name,
        };
        let _ = write!(self.line, " {key}={}", quoted(value));
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, &format!("{value:?}"));
    }
}

/// The value as logfmt wants it: bare when it can be, else a quoted string.
fn quoted(value: &str) -> String {
    let bare = !value.is_empty()
        && !value
            .chars()
            .any(|c| c == ' ' || c == '=' || c == '"' || c.is_control());
    if bare {
        value.to_string()
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn values_are_quoted_only_when_needed() {
        assert_eq!(quoted("PutRecord"), "PutRecord");
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(quoted("a b"), "\"a b\"");
        assert_eq!(quoted("a=\"b\"\n"), "\"a=\\\"b\\\"\\n\"");
    }
}
