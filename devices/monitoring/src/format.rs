//! The two formats metrics leave the unikernel in: the OpenMetrics / Prometheus text
//! exposition format (served on `GET /metrics`) and InfluxDB's line protocol (pushed).
//!
//! Both take the metrics as a slice of [`Metric`]s (in the unikernel,
//! `compose_devices::metrics::ALL`) in which metrics sharing a name are adjacent, plus the
//! uptime, which the monitoring device reads from the monotonic clock.

use alloc::string::String;
use core::fmt::Write as _;
use core::time::Duration;

use compose_devices::metrics::{Kind, Metric};

/// `Content-Type` of the Prometheus text format, version 0.0.4.
pub const PROMETHEUS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of the OpenMetrics text format, version 1.0.0.
pub const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether a request's `Accept` header asks for OpenMetrics (as Prometheus does when it
/// scrapes: `application/openmetrics-text;version=1.0.0,...;q=0.5`), with a non-zero q.
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let mut params = part.split(';').map(str::trim);
        let media = params.next().unwrap_or("");
        media.eq_ignore_ascii_case("application/openmetrics-text")
            && params.all(|p| match p.split_once('=') {
                Some((k, v)) if k.trim().eq_ignore_ascii_case("q") => v
                    .trim()
                    .trim_start_matches(['0', '.'])
                    .chars()
                    .any(|c| c != '0'),
                _ => true,
            })
    })
}

/// Seconds with millisecond precision, as `12.345`.
fn seconds(d: Duration) -> impl core::fmt::Display {
    struct S(u64, u32);
    impl core::fmt::Display for S {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "{}.{:03}", self.0, self.1)
        }
    }
    S(d.as_secs(), d.subsec_millis())
}

/// Writes `metrics` and `uptime_seconds` in the text exposition format: OpenMetrics 1.0
/// (`# TYPE NAME counter` for the family, samples `NAME_total`, ending in `# EOF`) if
/// `openmetrics`, else Prometheus 0.0.4 (`# TYPE NAME_total counter`).
pub fn exposition(out: &mut String, metrics: &[&Metric], uptime: Duration, openmetrics: bool) {
    let mut previous: Option<&str> = None;
    for m in metrics {
        let (kind, suffix) = match m.kind {
            Kind::Counter => ("counter", "_total"),
            Kind::Gauge => ("gauge", ""),
        };
        if previous != Some(m.name) {
            // OpenMetrics names the family; Prometheus 0.0.4 the sample.
            let family_suffix = if openmetrics { "" } else { suffix };
            let _ = writeln!(out, "# HELP {}{family_suffix} {}", m.name, m.help);
            let _ = writeln!(out, "# TYPE {}{family_suffix} {kind}", m.name);
        }
        previous = Some(m.name);
        let _ = write!(out, "{}{suffix}", m.name);
        if let Some((k, v)) = m.label {
            let _ = write!(out, "{{{k}=\"{v}\"}}");
        }
        let _ = writeln!(out, " {}", m.get());
    }
    let name = "uptime_seconds";
    let _ = writeln!(out, "# HELP {name} seconds since the unikernel started");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name} {}", seconds(uptime));
    if openmetrics {
        out.push_str("# EOF\n");
    }
}

/// Writes `s` as a tag value or measurement of the line protocol: commas, spaces and
/// equals signs escaped with a backslash.
fn escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        if matches!(c, ',' | ' ' | '=' | '\\') {
            out.push('\\');
        }
        // Line breaks end a line: they have no escape, so they are dropped.
        if c != '\n' && c != '\r' {
            out.push(c);
        }
    }
}

/// Writes `metrics` and the uptime in InfluxDB's line protocol, one line per metric family:
/// `MEASUREMENT,unikernel=NAME FIELDS TIMESTAMP`. An unlabelled metric has one field,
/// `value=Ni`; a labelled family one field per label value, `KEY_VALUE=Ni`
/// (`http_responses,unikernel=site status_2xx=7i,status_3xx=0i,...`); the uptime is
/// `uptime_seconds,unikernel=NAME value=12.345`. Counters are measured without `_total`.
/// `timestamp_ns` is nanoseconds since the Unix epoch (the line protocol's default
/// precision).
pub fn line_protocol(
    out: &mut String,
    metrics: &[&Metric],
    unikernel: &str,
    uptime: Duration,
    timestamp_ns: u128,
) {
    let mut i = 0;
    while i < metrics.len() {
        let name = metrics[i].name;
        let family = metrics[i..]
            .iter()
            .take_while(|m| m.name == name)
            .collect::<alloc::vec::Vec<_>>();
        escaped(out, name);
        out.push_str(",unikernel=");
        escaped(out, unikernel);
        out.push(' ');
        for (j, m) in family.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            match m.label {
                Some((k, v)) => {
                    escaped(out, k);
                    out.push('_');
                    escaped(out, v);
                }
                None => out.push_str("value"),
            }
            let _ = write!(out, "={}i", m.get());
        }
        let _ = writeln!(out, " {timestamp_ns}");
        i += family.len();
    }
    out.push_str("uptime_seconds,unikernel=");
    escaped(out, unikernel);
    let _ = writeln!(out, " value={} {timestamp_ns}", seconds(uptime));
}

#[cfg(test)]
mod tests {
    use super::*;

    static OPENED: Metric = Metric::counter("tcp_connections_opened", "TCP connections opened");
    static OK: Metric = Metric::counter("http_responses", "HTTP responses by status class")
        .labelled("status", "2xx");
    static BAD: Metric = Metric::counter("http_responses", "HTTP responses by status class")
        .labelled("status", "4xx");
    static HEAP: Metric = Metric::gauge("heap_in_use_bytes", "heap bytes allocated now");

    fn values() -> [&'static Metric; 4] {
        OPENED.set(3);
        OK.set(7);
        BAD.set(1);
        HEAP.set(4096);
        [&OPENED, &OK, &BAD, &HEAP]
    }

    #[test]
    fn prometheus_text_names_samples_with_total() {
        let mut out = String::new();
        exposition(&mut out, &values(), Duration::from_millis(12_345), false);
        assert_eq!(
            out,
            "# HELP tcp_connections_opened_total TCP connections opened\n\
             # TYPE tcp_connections_opened_total counter\n\
             tcp_connections_opened_total 3\n\
             # HELP http_responses_total HTTP responses by status class\n\
             # TYPE http_responses_total counter\n\
             http_responses_total{status=\"2xx\"} 7\n\
             http_responses_total{status=\"4xx\"} 1\n\
             # HELP heap_in_use_bytes heap bytes allocated now\n\
             # TYPE heap_in_use_bytes gauge\n\
             heap_in_use_bytes 4096\n\
             # HELP uptime_seconds seconds since the unikernel started\n\
             # TYPE uptime_seconds gauge\n\
             uptime_seconds 12.345\n"
        );
    }

    #[test]
    fn openmetrics_names_families_and_ends_with_eof() {
        let mut out = String::new();
        exposition(&mut out, &values(), Duration::from_millis(1_005), true);
        assert!(out.starts_with(
            "# HELP tcp_connections_opened TCP connections opened\n\
             # TYPE tcp_connections_opened counter\n\
             tcp_connections_opened_total 3\n\
             # HELP http_responses HTTP responses by status class\n\
             # TYPE http_responses counter\n\
             http_responses_total{status=\"2xx\"} 7\n"
        ));
        assert!(out.ends_with("uptime_seconds 1.005\n# EOF\n"), "{out}");
        assert_eq!(out.matches("# EOF").count(), 1);
    }

    #[test]
    fn accept_headers_choose_the_format() {
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(wants_openmetrics("Application/OpenMetrics-Text"));
        assert!(!wants_openmetrics("text/plain"));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
        assert!(!wants_openmetrics("application/openmetrics-text; q=0.000"));
        assert!(wants_openmetrics("application/openmetrics-text; q=0.01"));
    }

    #[test]
    fn line_protocol_has_a_line_per_family() {
        let mut out = String::new();
        line_protocol(
            &mut out,
            &values(),
            "site",
            Duration::from_millis(2_500),
            1_700_000_000_123_456_789,
        );
        assert_eq!(
            out,
            "tcp_connections_opened,unikernel=site value=3i 1700000000123456789\n\
             http_responses,unikernel=site status_2xx=7i,status_4xx=1i 1700000000123456789\n\
             heap_in_use_bytes,unikernel=site value=4096i 1700000000123456789\n\
             uptime_seconds,unikernel=site value=2.500 1700000000123456789\n"
        );
    }

    #[test]
    fn line_protocol_escapes_tags() {
        let mut out = String::new();
        line_protocol(&mut out, &[], "a b,c=d\n", Duration::ZERO, 1);
        assert_eq!(
            out,
            "uptime_seconds,unikernel=a\\ b\\,c\\=d value=0.000 1\n"
        );
    }
}
