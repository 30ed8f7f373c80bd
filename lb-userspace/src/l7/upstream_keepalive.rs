//! How long a pooled upstream HTTP/1.1 connection may be reused: the
//! default idle time, and the node's own `Keep-Alive: timeout=N` (which
//! only ever shortens it).
//!
//! The race this guards against: a node closes a connection that has been
//! idle for its keep-alive time at the very moment xlb writes the next
//! request on it. The close (FIN) and the request cross on the wire; the
//! node never reads the request, but xlb cannot prove that (it saw the
//! request written and then the connection end), so a POST cannot be
//! replayed and the client gets a 502. A connection whose close has
//! already reached xlb is not the problem: hyper's HTTP/1.1 dispatcher
//! reads the socket before it writes a queued request (`poll_read` before
//! `poll_write`), sees the end of stream, and gives the request back
//! unsent, which the pool then sends on a fresh connection. So the remedy
//! is to stop reusing a connection *before* the node's deadline, with a
//! margin for the time between xlb's clock and the node's.
use std::time::Duration;

use http::HeaderMap;

use super::headers::KEEP_ALIVE;

/// Default idle time of a pooled upstream connection: 4 s.
///
/// Below the shortest idle timeout that common backends apply without
/// announcing it (uvicorn 5 s; Node.js and Apache httpd also use 5 s but
/// announce it with `Keep-Alive: timeout=5`, which [`reuse_limit`] honours;
/// nginx 75 s; Go's `net/http` none), with a second of margin. A shorter
/// default would cost a new connection (and TLS handshake) for every
/// request on a quiet upstream. Backends with a shorter unannounced
/// timeout (gunicorn's async workers: 2 s) need `keepalive.idle_timeout`
/// set below it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// The longest margin kept before a node's announced keep-alive deadline.
const MAX_MARGIN: Duration = Duration::from_secs(1);

/// The `timeout` parameter of a `Keep-Alive` response header (RFC 2068
/// §19.7.1.1; not in RFC 9110, but sent by Node.js, Apache httpd and
/// others): how many seconds the node keeps an idle connection open.
/// `None` when there is no header or no valid `timeout`.
pub fn announced_timeout(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all(KEEP_ALIVE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|param| {
            let (name, value) = param.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("timeout") {
                return None;
            }
            let value = value.trim().trim_matches('"');
            value.parse::<u64>().ok().map(Duration::from_secs)
        })
}

/// How long after its response a connection may be reused, given the
/// node's announced `timeout`: a quarter of it, at most [`MAX_MARGIN`],
/// is kept as margin (the node's clock starts when it has written the
/// response, xlb's a little later when the head arrives, and the next
/// request takes time to reach the node). `timeout=1` → 750 ms,
/// `timeout=5` → 4 s, `timeout=0` → never.
pub fn reuse_limit(announced: Duration) -> Duration {
    announced - (announced / 4).min(MAX_MARGIN)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("keep-alive", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_timeout_parameter_is_read_as_node_and_apache_send_it() {
        let secs = |v: &[&str]| announced_timeout(&headers(v)).map(|d| d.as_secs());
        assert_eq!(secs(&["timeout=5"]), Some(5));
        assert_eq!(secs(&["timeout=5, max=100"]), Some(5));
        assert_eq!(secs(&["max=100, Timeout = 3"]), Some(3));
        assert_eq!(secs(&["timeout=\"2\""]), Some(2));
        assert_eq!(secs(&["max=100", "timeout=7"]), Some(7));
        assert_eq!(secs(&["max=100"]), None);
        assert_eq!(secs(&["timeout=soon"]), None);
        assert_eq!(secs(&["timeout=-1"]), None);
        assert_eq!(secs(&[]), None);
    }

    #[test]
    fn reuse_stops_before_the_announced_deadline() {
        let ms = |s: u64| reuse_limit(Duration::from_secs(s)).as_millis();
        assert_eq!(ms(0), 0);
        assert_eq!(ms(1), 750);
        assert_eq!(ms(2), 1500);
        assert_eq!(ms(5), 4000);
        assert_eq!(ms(75), 74_000);
    }
}
