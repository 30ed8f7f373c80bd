//! One probe of one target: TCP connect, or an HTTP/1.1 `GET` over TCP or
//! TLS, judged by a [`CheckSpec`]. A [`Plan`] is the spec made ready to run
//! (the TLS client config built once, not per probe).
use std::{
    fmt::Write as _,
    io,
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, ServerName},
    ClientConfig, RootCertStore,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpSocket, TcpStream},
    task::JoinHandle,
};
use tokio_rustls::TlsConnector;

use super::spec::{CheckKind, CheckSpec, HttpCheck, SpecError, TlsCheck, MAX_BODY_BYTES};
use crate::tls_util::crypto_provider;

/// A [`CheckSpec`]'s probe, ready to run against one address.
#[derive(Clone)]
pub(crate) struct Plan {
    kind: PlanKind,
}

#[derive(Clone)]
enum PlanKind {
    Tcp,
    Http {
        check: HttpCheck,
        /// The Host header value.
        host: String,
        tls: Option<(TlsConnector, ServerName<'static>)>,
    },
}

impl Plan {
    /// The plan of `spec` against `addr`: validates it and loads its CA.
    pub(crate) fn new(spec: &CheckSpec, addr: SocketAddr) -> Result<Plan, SpecError> {
        spec.validate()?;
        let (check, tls) = match &spec.kind {
            CheckKind::Tcp => {
                return Ok(Plan {
                    kind: PlanKind::Tcp,
                })
            }
            CheckKind::Http(check) => (check, None),
            CheckKind::Https { http, tls } => (http, Some(tls)),
        };
        let host = check.host.clone().unwrap_or_else(|| addr.to_string());
        let tls = match tls {
            None => None,
            Some(tls) => {
                let name = server_name(tls, check.host.as_deref(), addr)?;
                let config = client_config(tls)?;
                Some((TlsConnector::from(config), name))
            }
        };
        Ok(Plan {
            kind: PlanKind::Http {
                check: check.clone(),
                host,
                tls,
            },
        })
    }
}

/// The name to send as SNI and to verify: `tls.server_name`, else the Host
/// header's name, else the IP address.
fn server_name(
    tls: &TlsCheck,
    host: Option<&str>,
    addr: SocketAddr,
) -> Result<ServerName<'static>, SpecError> {
    let name = match (&tls.server_name, host) {
        (Some(name), _) => name.clone(),
        (None, Some(host)) => strip_port(host).to_string(),
        (None, None) => return Ok(ServerName::IpAddress(addr.ip().into())),
    };
    crate::tls_util::server_name(&name).ok_or(SpecError::ServerName(name))
}

/// `host` without a trailing `:port` (`[v6]:port` → `[v6]`).
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.find(']') {
            Some(end) => &host[..end + 2],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port))
            if !name.contains(':')
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            name
        }
        _ => host,
    }
}

/// The rustls client config of an HTTPS check: TLS 1.2/1.3, ALPN
/// `http/1.1` (the probe speaks HTTP/1.1 only), no client certificate.
fn client_config(tls: &TlsCheck) -> Result<Arc<ClientConfig>, SpecError> {
    let provider = crypto_provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| SpecError::Tls(e.to_string()))?;
    let mut config = if tls.verify {
        let ca = tls.ca.as_deref().ok_or(SpecError::CaRequired)?;
        builder
            .with_root_certificates(read_roots(ca)?)
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(
                crate::tls_util::unverified::AnyCertificate(provider),
            ))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_roots(path: &Path) -> Result<RootCertStore, SpecError> {
    let ca_error = |why: String| SpecError::Ca {
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| ca_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ca_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(ca_error("no CERTIFICATE block".to_string()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
    }
    Ok(roots)
}

/// Runs one probe of `plan` against `addr` (from `source` when set) within
/// `timeout`: `Ok` when it passes, else why not.
pub(crate) async fn run(
    plan: &Plan,
    addr: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, run_inner(plan, addr, source)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "timed out after {}",
            humantime::format_duration(timeout)
        )),
    }
}

async fn run_inner(plan: &Plan, addr: SocketAddr, source: Option<IpAddr>) -> Result<(), String> {
    let tcp = connect(addr, source)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    match &plan.kind {
        PlanKind::Tcp => Ok(()),
        PlanKind::Http {
            check,
            host,
            tls: None,
        } => http_get(tcp, check, host).await,
        PlanKind::Http {
            check,
            host,
            tls: Some((connector, name)),
        } => {
            let stream = connector
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS: {}", chain(&e)))?;
            http_get(stream, check, host).await
        }
    }
}

/// A TCP connection to `addr`, bound to `source` when set. Closed with
/// linger 0 (a reset, as HAProxy does for its checks): a checker that opens
/// hundreds of connections a second must not be the side that keeps them in
/// TIME_WAIT and runs out of ephemeral ports.
async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    let sock = socket2::SockRef::from(&stream);
    sock.set_linger(Some(Duration::ZERO))?;
    sock.set_tcp_nodelay(true)?;
    Ok(stream)
}

/// Aborts the connection task when the probe ends (or is cancelled).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn http_get<S>(stream: S, check: &HttpCheck, host: &str) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP: {}", chain(&e)))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let request = http::Request::get(check.path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "xlb-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("HTTP request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {}", chain(&e)))?;
    let status = response.status().as_u16();
    if !check.expected.contains(status) {
        return Err(format!("HTTP status {status} not in {}", check.expected));
    }
    let Some(needle) = &check.body_contains else {
        return Ok(());
    };
    let needle = needle.as_bytes();
    let mut body = response.into_body();
    let mut seen: Vec<u8> = Vec::new();
    let mut truncated = false;
    // Bounded: at most MAX_BODY_BYTES are kept, and the loop ends at the
    // cap, at the end of the body, or at the probe's timeout.
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("HTTP body: {}", chain(&e)))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let room = MAX_BODY_BYTES - seen.len();
        if data.len() > room {
            truncated = true;
        }
        seen.extend_from_slice(&data[..data.len().min(room)]);
        if contains(&seen, needle) {
            return Ok(());
        }
        if seen.len() == MAX_BODY_BYTES {
            truncated = true;
            break;
        }
    }
    let mut why = format!(
        "HTTP body does not contain {:?}",
        String::from_utf8_lossy(needle)
    );
    if truncated {
        let _ = write!(why, " in its first {MAX_BODY_BYTES} bytes");
    }
    Err(why)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// An error and its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    // Bounded by the (finite) source chain; capped anyway.
    for _ in 0..8 {
        let Some(s) = source else { break };
        let next = s.to_string();
        if !text.contains(&next) {
            let _ = write!(text, ": {next}");
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("example.com:8443"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:443"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("10.0.0.1:80"), "10.0.0.1");
    }

    #[test]
    fn finds_needles() {
        assert!(contains(b"status: ok", b"ok"));
        assert!(!contains(b"status: ko", b"ok"));
        assert!(contains(b"", b""));
    }
}
