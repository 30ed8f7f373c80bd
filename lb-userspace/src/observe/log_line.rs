//! One access-log line: the record as a JSON object, written by hand
//! straight into the writer's batch buffer.
//!
//! Why by hand rather than `serde_json` over a derived struct: the derived
//! form needed three allocations per line (the timestamp formatted by
//! `jiff`, the client and node addresses as strings) and a full calendar
//! conversion per request; `cargo xtask bench l7` measured the access log
//! at about half of the whole observability cost. Here the calendar part
//! of the timestamp is formatted once per second and reused, numbers go
//! through `itoa`, and strings are escaped in place. The output is the
//! same JSON, field for field (docs/access-log.md; the tests parse it back
//! with `serde_json`).
use std::{
    io::Write as _,
    time::{Duration, SystemTime},
};

use crate::l7::record::RequestRecord;

/// Formats lines; keeps the timestamp's second-level prefix between
/// lines (one writer thread owns one).
#[derive(Debug, Default)]
pub struct LineWriter {
    /// The Unix second `prefix` is for.
    second: Option<u64>,
    /// `2023-11-14T22:13:20` for that second.
    prefix: String,
}

impl LineWriter {
    /// Appends `r`'s line, without the newline, to `out`.
    pub fn write(&mut self, r: &RequestRecord, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":");
        self.time(r.time, out);
        field_str(out, "request_id", r.request_id_str());
        out.extend_from_slice(b",\"client\":\"");
        // A socket address has nothing to escape.
        let _ = write!(out, "{}", r.client);
        out.push(b'"');
        field_str(out, "listener", &r.listener);
        field_str(out, "method", r.method.as_str());
        field_str(out, "host", r.host_str());
        field_str(out, "path", r.path());
        field_str(out, "protocol", r.protocol);
        field_int(out, "status", u64::from(r.status));
        field_int(out, "bytes_in", r.bytes_in);
        field_int(out, "bytes_out", r.bytes_out);
        key(out, "duration_ms");
        millis(out, r.total);
        key(out, "connect_ms");
        match r.connect {
            Some(d) => millis(out, d),
            None => out.extend_from_slice(b"null"),
        }
        key(out, "first_byte_ms");
        match r.first_byte {
            Some(d) => millis(out, d),
            None => out.extend_from_slice(b"null"),
        }
        field_opt(out, "route", r.route.as_deref());
        field_opt(out, "upstream", r.upstream.as_deref());
        key(out, "node");
        match r.node {
            Some(n) => {
                let _ = write!(out, "\"{n}\"");
            }
            None => out.extend_from_slice(b"null"),
        }
        field_int(out, "retries", r.retries.len() as u64);
        key(out, "retry_reasons");
        out.push(b'[');
        for (i, reason) in r.retries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, reason);
        }
        out.push(b']');
        field_opt(out, "cache", r.cache);
        field_str(out, "rate_limit", r.rate_limit.name());
        field_opt(out, "error", r.error.as_deref());
        field_opt(out, "tls_version", r.tls_version);
        field_opt(out, "sni", r.sni.as_deref());
        key(out, "complete");
        out.extend_from_slice(if r.complete { b"true" } else { b"false" });
        out.push(b'}');
    }

    /// `"2023-11-14T22:13:20.123Z"` (UTC, milliseconds), or `""` for a
    /// time before the epoch.
    fn time(&mut self, t: SystemTime, out: &mut Vec<u8>) {
        let Ok(since) = t.duration_since(SystemTime::UNIX_EPOCH) else {
            out.extend_from_slice(b"\"\"");
            return;
        };
        let second = since.as_secs();
        if self.second != Some(second) {
            let Some(prefix) = i64::try_from(second)
                .ok()
                .and_then(|s| jiff::Timestamp::from_second(s).ok())
                .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%S").to_string())
            else {
                out.extend_from_slice(b"\"\"");
                return;
            };
            self.second = Some(second);
            self.prefix = prefix;
        }
        out.push(b'"');
        out.extend_from_slice(self.prefix.as_bytes());
        let ms = since.subsec_millis();
        out.extend_from_slice(&[
            b'.',
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
            b'"',
        ]);
    }
}

/// `,"name":` (every field but the first).
fn key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn field_str(out: &mut Vec<u8>, name: &str, v: &str) {
    key(out, name);
    string(out, v);
}

fn field_opt(out: &mut Vec<u8>, name: &str, v: Option<&str>) {
    key(out, name);
    match v {
        Some(v) => string(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

fn field_int(out: &mut Vec<u8>, name: &str, v: u64) {
    key(out, name);
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Milliseconds with microsecond precision, written as `serde_json` writes
/// the `f64` it used to be: `1.5`, `0.9`, `12.0`.
fn millis(out: &mut Vec<u8>, d: Duration) {
    let micros = d.as_micros();
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    out.push(b'.');
    let frac = (micros % 1000) as u32;
    let digits = [
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ];
    let keep = if frac.is_multiple_of(100) {
        1
    } else if frac.is_multiple_of(10) {
        2
    } else {
        3
    };
    out.extend_from_slice(&digits[..keep]);
}

/// A JSON string (RFC 8259 §7): quote, backslash and control characters
/// escaped, everything else (UTF-8 included) as is.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{:04x}", c);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> String {
        let mut out = Vec::new();
        string(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_round_trip_through_a_json_parser() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "nl\n\tx\u{1}\u{7f}",
            "ünï",
        ] {
            let back: String = serde_json::from_str(&json(s)).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn millis_are_written_like_the_f64_they_stand_for() {
        for (us, text) in [
            (1500, "1.5"),
            (900, "0.9"),
            (12_000, "12.0"),
            (1, "0.001"),
            (1230, "1.23"),
        ] {
            let mut out = Vec::new();
            millis(&mut out, Duration::from_micros(us));
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }

    #[test]
    fn the_second_prefix_is_reused_and_renewed() {
        let mut w = LineWriter::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut out = Vec::new();
        w.time(t0, &mut out);
        w.time(t0 + Duration::from_millis(5), &mut out);
        w.time(t0 + Duration::from_millis(1000), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"2023-11-14T22:13:20.123Z\"\"2023-11-14T22:13:20.128Z\"\"2023-11-14T22:13:21.123Z\""
        );
    }
}
