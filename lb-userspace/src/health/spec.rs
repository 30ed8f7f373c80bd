//! What an active health check does and how its results are judged: the
//! [`CheckSpec`] of one target, with documented defaults.
use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use thiserror::Error;

/// Default time between two probes of one target.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Default limit on one probe, from connect to the end of the response.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default consecutive successes that make an unhealthy target healthy.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// Default consecutive failures that make a healthy target unhealthy.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// Default spread of each interval, in percent either way (Envoy's
/// `interval_jitter_percent` idea): with 2 s, probes come 1.8–2.2 s apart,
/// so that targets added together drift apart instead of probing in
/// lockstep.
pub const DEFAULT_JITTER_PERCENT: u8 = 10;
/// Largest accepted jitter: beyond half the interval, "interval" means little.
pub const MAX_JITTER_PERCENT: u8 = 50;
/// How much of a response body an HTTP check reads to look for
/// [`HttpCheck::body_contains`]; the rest is never read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An invalid [`CheckSpec`] (or a TLS setting that cannot be loaded).
#[derive(Debug, Error)]
pub enum SpecError {
    /// `interval` or `timeout` is zero.
    #[error("{0} must be positive")]
    ZeroDuration(&'static str),
    /// A threshold is zero.
    #[error("{0} must be at least 1")]
    ZeroThreshold(&'static str),
    /// `jitter_percent` above [`MAX_JITTER_PERCENT`].
    #[error("jitter_percent {0} is above {MAX_JITTER_PERCENT}")]
    Jitter(u8),
    /// The HTTP path is not an origin-form path (`/…`, no spaces or controls).
    #[error(
        "HTTP check path {0:?} must start with '/' and contain no whitespace or control characters"
    )]
    Path(String),
    /// The Host header value is empty or not a valid header value.
    #[error("HTTP check host {0:?} is not a valid Host header")]
    Host(String),
    /// The expected-status set does not parse or is empty.
    #[error("expected statuses {text:?}: {why}")]
    Statuses { text: String, why: &'static str },
    /// TLS verification is on and no CA bundle is configured (this build
    /// has no system trust roots for health checks, like upstream TLS).
    #[error("HTTPS check with verification needs a CA file (or verify: false)")]
    CaRequired,
    /// The CA bundle could not be read or holds no usable certificate.
    #[error("HTTPS check CA {path}: {why}")]
    Ca { path: PathBuf, why: String },
    /// rustls refused the client configuration.
    #[error("HTTPS check TLS configuration: {0}")]
    Tls(String),
    /// The TLS server name is not a DNS name or an IP address.
    #[error("HTTPS check server name {0:?} is not a DNS name or IP address")]
    ServerName(String),
    /// Two targets share an id.
    #[error("two health-check targets have the id {0:?}")]
    DuplicateTarget(String),
}

/// A set of HTTP status codes: inclusive ranges, written `"200-399"` or
/// `"200,204,300-302"` (each code 100–599).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StatusSet {
    ranges: Vec<(u16, u16)>,
}

impl StatusSet {
    /// The set of these inclusive ranges; `None` if one is reversed, out of
    /// 100–599, or there is none.
    pub fn new(ranges: impl IntoIterator<Item = (u16, u16)>) -> Option<StatusSet> {
        let ranges: Vec<(u16, u16)> = ranges.into_iter().collect();
        let valid = !ranges.is_empty()
            && ranges.iter().all(|&(lo, hi)| {
                (100..=599).contains(&lo) && (100..=599).contains(&hi) && lo <= hi
            });
        valid.then_some(StatusSet { ranges })
    }

    /// Whether `status` is in the set.
    pub fn contains(&self, status: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

/// 200–399: success and redirects, the usual meaning of "up" (HAProxy's
/// `httpchk` default is 2xx and 3xx too).
impl Default for StatusSet {
    fn default() -> Self {
        StatusSet {
            ranges: vec![(200, 399)],
        }
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatusSet({self})")
    }
}

impl FromStr for StatusSet {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why| SpecError::Statuses {
            text: text.to_string(),
            why,
        };
        let code = |s: &str| -> Result<u16, SpecError> {
            let s = s.trim();
            if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("each code must be three digits"));
            }
            s.parse().map_err(|_| bad("each code must be three digits"))
        };
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let range = match part.split_once('-') {
                Some((lo, hi)) => (code(lo)?, code(hi)?),
                None => {
                    let c = code(part)?;
                    (c, c)
                }
            };
            ranges.push(range);
        }
        StatusSet::new(ranges).ok_or_else(|| bad("codes must be 100-599, ranges low-high"))
    }
}

/// The request of an HTTP(S) check: `GET path` with a Host header, judged on
/// the status and optionally on the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    /// Request target, origin form (default `/`).
    pub path: String,
    /// Host header; `None`: the target's `ip:port`.
    pub host: Option<String>,
    /// Statuses that pass (default 200–399).
    pub expected: StatusSet,
    /// When set, the first [`MAX_BODY_BYTES`] of the body must contain
    /// this string (byte-wise, case-sensitive).
    pub body_contains: Option<String>,
}

impl Default for HttpCheck {
    fn default() -> Self {
        HttpCheck {
            path: "/".to_string(),
            host: None,
            expected: StatusSet::default(),
            body_contains: None,
        }
    }
}

/// TLS settings of an HTTPS check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsCheck {
    /// PEM bundle of the CAs that may sign the target's certificate;
    /// required when `verify` is on.
    pub ca: Option<PathBuf>,
    /// Verify the certificate chain and name (default true). Off: any
    /// certificate passes (the handshake itself must still succeed), for
    /// backends with self-signed certificates.
    pub verify: bool,
    /// SNI and the name the certificate must match; `None`: the Host
    /// header's name (without port) if set, else the target's IP address
    /// (rustls then sends no SNI and matches an IP SAN).
    pub server_name: Option<String>,
}

impl Default for TlsCheck {
    fn default() -> Self {
        TlsCheck {
            ca: None,
            verify: true,
            server_name: None,
        }
    }
}

/// What one probe does.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum CheckKind {
    /// Passes when a TCP connection is established (then closed at once).
    #[default]
    Tcp,
    /// HTTP/1.1 `GET` over plain TCP.
    Http(HttpCheck),
    /// HTTP/1.1 `GET` over TLS.
    Https { http: HttpCheck, tls: TlsCheck },
}

/// A target's health before any probe has run.
///
/// The four choices are HAProxy's `init-state` values; they differ in what
/// a load balancer does in the seconds after a start, a reload or a new
/// node, and no choice is right for all: starting down black-holes a VIP on
/// every daemon restart until the probes come back, starting fully up sends
/// traffic to a dead node for `unhealthy_threshold × interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum InitialState {
    /// Eligible; `unhealthy_threshold` consecutive failures take it down
    /// (HAProxy `fully-up`).
    Healthy,
    /// Eligible, but the first probe decides at once either way: one failure
    /// takes it down, one success confirms it (HAProxy `up`, its default).
    ///
    /// The default here too: a restart or reload never removes a backend
    /// before there is evidence against it (no black hole, no Maglev
    /// reshuffle of the whole VIP), yet a dead backend is out after one
    /// probe (≤ interval + timeout) rather than after the full threshold.
    /// It also matches the L7 `Upstream`, whose new nodes start healthy.
    #[default]
    HealthyUntilFirstCheck,
    /// Not eligible until the first probe, which decides at once either way
    /// (Envoy's behaviour for hosts with active checks, HAProxy `down`).
    UnknownUntilFirstCheck,
    /// Not eligible; `healthy_threshold` consecutive successes bring it up
    /// (HAProxy `fully-down`).
    Unhealthy,
}

impl InitialState {
    /// Whether a target in this initial state receives traffic before its
    /// first probe.
    pub fn eligible(self) -> bool {
        matches!(
            self,
            InitialState::Healthy | InitialState::HealthyUntilFirstCheck
        )
    }

    /// Whether the first probe alone decides the state.
    pub fn first_check_decides(self) -> bool {
        matches!(
            self,
            InitialState::HealthyUntilFirstCheck | InitialState::UnknownUntilFirstCheck
        )
    }
}

/// The active health check of one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    /// What a probe does (default: TCP connect).
    pub kind: CheckKind,
    /// Time from the start of one probe to the start of the next (default
    /// 2 s), jittered by `jitter_percent`; a probe slower than that is
    /// followed at once by the next (never two at a time per target).
    pub interval: Duration,
    /// Limit on one probe: connect, TLS, request and response (default 1 s).
    /// Time spent waiting for the checker's concurrency limit is not counted.
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy target healthy (default 2).
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy target unhealthy (default 3).
    pub unhealthy_threshold: u32,
    /// Each interval is drawn from `interval ± jitter_percent %` (default
    /// 10, at most 50); the first probe of a new target comes after a random
    /// delay in `0..interval`.
    pub jitter_percent: u8,
    /// State before the first probe (default
    /// [`InitialState::HealthyUntilFirstCheck`]).
    pub initial: InitialState,
}

impl Default for CheckSpec {
    fn default() -> Self {
        CheckSpec {
            kind: CheckKind::Tcp,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            healthy_threshold: DEFAULT_HEALTHY_THRESHOLD,
            unhealthy_threshold: DEFAULT_UNHEALTHY_THRESHOLD,
            jitter_percent: DEFAULT_JITTER_PERCENT,
            initial: InitialState::default(),
        }
    }
}

impl CheckSpec {
    /// A TCP-connect check with the default timing.
    pub fn tcp() -> CheckSpec {
        CheckSpec::default()
    }

    /// An HTTP check with the default timing.
    pub fn http(http: HttpCheck) -> CheckSpec {
        CheckSpec {
            kind: CheckKind::Http(http),
            ..CheckSpec::default()
        }
    }

    /// An HTTPS check with the default timing.
    pub fn https(http: HttpCheck, tls: TlsCheck) -> CheckSpec {
        CheckSpec {
            kind: CheckKind::Https { http, tls },
            ..CheckSpec::default()
        }
    }

    /// Checks everything but the files (the checker loads the CA when the
    /// target is set).
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.interval.is_zero() {
            return Err(SpecError::ZeroDuration("interval"));
        }
        if self.timeout.is_zero() {
            return Err(SpecError::ZeroDuration("timeout"));
        }
        if self.healthy_threshold == 0 {
            return Err(SpecError::ZeroThreshold("healthy_threshold"));
        }
        if self.unhealthy_threshold == 0 {
            return Err(SpecError::ZeroThreshold("unhealthy_threshold"));
        }
        if self.jitter_percent > MAX_JITTER_PERCENT {
            return Err(SpecError::Jitter(self.jitter_percent));
        }
        let http = match &self.kind {
            CheckKind::Tcp => return Ok(()),
            CheckKind::Http(http) => http,
            CheckKind::Https { http, tls } => {
                if tls.verify && tls.ca.is_none() {
                    return Err(SpecError::CaRequired);
                }
                http
            }
        };
        let path_ok = http.path.starts_with('/')
            && !http
                .path
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control());
        if !path_ok {
            return Err(SpecError::Path(http.path.clone()));
        }
        if let Some(host) = &http.host {
            let ok = !host.is_empty()
                && !host
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
                && http::HeaderValue::from_str(host).is_ok();
            if !ok {
                return Err(SpecError::Host(host.clone()));
            }
        }
        Ok(())
    }
}
