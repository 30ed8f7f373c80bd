//! TLS termination for the L7 proxy, and the TLS client side towards upstreams.
//!
//! Downstream: a listener's [`ListenerTls`] lists its certificates
//! ([`CertSpec`]); [`CertStore`] loads them and picks one per handshake by
//! SNI (exact name, then a one-label wildcard, then the default), and
//! [`build_server_config`] turns the listener settings plus the store into a
//! [`rustls::ServerConfig`] (ALPN `h2`/`http/1.1`, TLS 1.2 and 1.3, optional
//! client-certificate verification). Build one `ServerConfig` per listener
//! and share its `Arc` between the listener's workers, so that they share
//! the session-resumption cache.
//!
//! Certificates are reloaded without a restart: [`CertStore::reload`]
//! re-reads every file and swaps the whole table atomically, or changes
//! nothing when any file fails to load; [`watch`] polls the files'
//! modification times and reloads when they change. New handshakes see the
//! new certificate at once; established connections keep theirs.
//!
//! Upstream: [`build_client_config`] verifies upstream servers against a
//! configured CA bundle. The connector sends SNI itself, per connection:
//! `tokio_rustls::TlsConnector::connect(upstream_server_name(host)?, tcp)`.
//!
//! All cryptography comes from rustls' *ring* provider, passed explicitly;
//! nothing here depends on a process-wide default provider.

mod config;
mod store;
#[cfg(test)]
mod tests;
pub use crate::tls_util::{crypto_provider, unverified};

use std::{io, path::PathBuf};

pub use config::{build_client_config, build_server_config, upstream_server_name};
pub use store::{watch, CertStore, DEFAULT_WATCH_INTERVAL};

/// ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The ALPN list a listener offers unless configured otherwise, in order of
/// preference: `h2`, then `http/1.1`. A client that offers no ALPN at all
/// gets no ALPN answer and should be served HTTP/1.1.
pub fn default_alpn() -> Vec<Vec<u8>> {
    vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()]
}

/// One certificate of a listener: a PEM chain (leaf first) and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// SNI names this certificate answers: exact (`a.example.com`) or a
    /// wildcard over one label (`*.example.com`, which matches
    /// `x.example.com` but neither `a.b.example.com` nor `example.com`).
    /// Case-insensitive; a trailing dot is ignored. May be empty for a
    /// certificate that is only the default.
    pub names: Vec<String>,
    /// PEM file with the certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// PEM file with the private key: PKCS#8 (`PRIVATE KEY`), PKCS#1
    /// (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`). RSA, ECDSA P-256 and
    /// P-384, and Ed25519 keys are supported. May be the same file as
    /// `cert_path`.
    pub key_path: PathBuf,
    /// Served when SNI is absent or matches no name.
    pub default: bool,
}

/// The lowest TLS version a listener accepts (it always accepts TLS 1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    #[default]
    Tls12,
    Tls13,
}

/// Client-certificate verification of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuthSpec {
    /// PEM bundle of the CA certificates client certificates must chain to.
    pub ca_path: PathBuf,
    /// `true`: a client without a valid certificate is refused. `false`: a
    /// certificate is asked for, and verified when given, but not required.
    pub required: bool,
}

/// The TLS settings of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    pub certs: Vec<CertSpec>,
    /// ALPN protocols in order of preference (the server's preference wins).
    /// Empty: no ALPN. Default: `h2`, `http/1.1`.
    pub alpn: Vec<Vec<u8>>,
    /// Default TLS 1.2.
    pub min_version: TlsVersion,
    pub client_auth: Option<ClientAuthSpec>,
}

impl ListenerTls {
    /// These certificates with the default ALPN, TLS 1.2 and 1.3, and no
    /// client authentication.
    pub fn new(certs: Vec<CertSpec>) -> ListenerTls {
        ListenerTls {
            certs,
            alpn: default_alpn(),
            min_version: TlsVersion::default(),
            client_auth: None,
        }
    }
}

impl Default for ListenerTls {
    fn default() -> ListenerTls {
        ListenerTls::new(Vec::new())
    }
}

/// Why certificates or a TLS configuration could not be loaded. Every
/// file-related error names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: malformed PEM: {source}", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: no certificate (no \"BEGIN CERTIFICATE\" block) in file", path.display())]
    NoCertificate { path: PathBuf },
    #[error(
        "{}: no private key in file (expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block)",
        path.display()
    )]
    NoPrivateKey { path: PathBuf },
    #[error(
        "{}: unsupported key type or malformed key (supported: RSA, ECDSA P-256/P-384, Ed25519): {reason}",
        path.display()
    )]
    UnsupportedKey { path: PathBuf, reason: String },
    #[error("{}: invalid certificate: {source}", path.display())]
    BadCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{}: key does not match the certificate in {}", key_path.display(), cert_path.display())]
    KeyMismatch {
        key_path: PathBuf,
        cert_path: PathBuf,
    },
    #[error("{}: invalid CA certificate #{index} in bundle: {source}", path.display())]
    BadCaCertificate {
        path: PathBuf,
        index: usize,
        #[source]
        source: rustls::Error,
    },
    #[error("{}: cannot build the client-certificate verifier: {source}", path.display())]
    ClientVerifier {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("certificate name {name:?}: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("{}: certificate has no names and is not the default: it would never be served", cert_path.display())]
    Unreachable { cert_path: PathBuf },
    #[error("no certificates configured")]
    NoCertificates,
    #[error("ALPN protocol {0:?}: must be 1 to 255 bytes")]
    BadAlpn(Vec<u8>),
    #[error("upstream TLS needs a CA bundle (`ca`): this build has no system trust roots")]
    UpstreamCaRequired,
    #[error("upstream host {0:?} is not a valid TLS server name (DNS name or IP address)")]
    BadServerName(String),
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}
