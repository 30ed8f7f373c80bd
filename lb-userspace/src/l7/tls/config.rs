//! rustls server configs for listeners, client configs for upstreams.
use std::{path::Path, sync::Arc};

use rustls::{
    pki_types::ServerName,
    server::{danger::ClientCertVerifier, WebPkiClientVerifier},
    version::{TLS12, TLS13},
    ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion,
};

use super::{crypto_provider, store::read_certs, CertStore, ListenerTls, TlsError, TlsVersion};

/// The rustls server config of one listener: certificates by SNI from
/// `store`, `tls.alpn` (server preference order), TLS 1.3 and, unless
/// `min_version` is 1.3, TLS 1.2, and client-certificate verification when
/// `tls.client_auth` is set. Session resumption keeps rustls' defaults: an
/// in-memory cache of 256 sessions (TLS 1.2 session ids and TLS 1.3
/// stateful tickets, two sent per handshake); no stateless ticket key.
///
/// `tls.certs` is not read here: the store was loaded from it (and reloads
/// itself). The client CA bundle is read once, now; changing it needs a new
/// config.
pub fn build_server_config(
    tls: &ListenerTls,
    store: Arc<CertStore>,
) -> Result<Arc<ServerConfig>, TlsError> {
    check_alpn(&tls.alpn)?;
    let verifier: Arc<dyn ClientCertVerifier> = match &tls.client_auth {
        None => WebPkiClientVerifier::no_client_auth(),
        Some(auth) => {
            let roots = read_roots(&auth.ca_path)?;
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider());
            let builder = match auth.required {
                true => builder,
                false => builder.allow_unauthenticated(),
            };
            builder.build().map_err(|source| TlsError::ClientVerifier {
                path: auth.ca_path.clone(),
                source,
            })?
        }
    };
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(versions(tls.min_version))
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(store);
    config.alpn_protocols = tls.alpn.clone();
    Ok(Arc::new(config))
}

/// The rustls client config for TLS to upstreams: TLS 1.2 and 1.3, server
/// certificates verified against the CA bundle at `ca`, these ALPN ids
/// offered (`h2` to let the upstream choose HTTP/2), no client certificate.
///
/// This build has no system trust roots (neither `webpki-roots` nor
/// `rustls-native-certs` is a dependency), so upstream TLS requires `ca`:
/// `None` is refused here, at configuration time, with
/// [`TlsError::UpstreamCaRequired`], rather than failing every handshake
/// later against an empty root store.
///
/// SNI is not part of the config: the connector passes the upstream's name
/// per connection, `TlsConnector::from(config).connect(upstream_server_name(host)?, tcp)`,
/// and rustls both sends it (DNS names only; never an IP address) and
/// checks the certificate against it. Resumption uses rustls' default
/// in-memory client session cache; share one config per upstream.
pub fn build_client_config(
    ca: Option<&Path>,
    alpn: &[Vec<u8>],
) -> Result<Arc<ClientConfig>, TlsError> {
    check_alpn(alpn)?;
    let ca = ca.ok_or(TlsError::UpstreamCaRequired)?;
    let roots = read_roots(ca)?;
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(versions(TlsVersion::Tls12))
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.to_vec();
    Ok(Arc::new(config))
}

/// The TLS server name of an upstream host (DNS name or IP address literal,
/// IPv6 with or without brackets), for `TlsConnector::connect`.
pub fn upstream_server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    crate::tls_util::server_name(host).ok_or_else(|| TlsError::BadServerName(host.to_string()))
}

fn versions(min: TlsVersion) -> &'static [&'static SupportedProtocolVersion] {
    static BOTH: [&SupportedProtocolVersion; 2] = [&TLS13, &TLS12];
    static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&TLS13];
    match min {
        TlsVersion::Tls12 => &BOTH,
        TlsVersion::Tls13 => &TLS13_ONLY,
    }
}

fn check_alpn(alpn: &[Vec<u8>]) -> Result<(), TlsError> {
    match alpn.iter().find(|p| p.is_empty() || p.len() > 255) {
        Some(bad) => Err(TlsError::BadAlpn(bad.clone())),
        None => Ok(()),
    }
}

/// A CA bundle: every certificate of the PEM file, each a trust anchor.
fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (index, cert) in read_certs(path)?.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|source| TlsError::BadCaCertificate {
                path: path.to_path_buf(),
                index: index + 1,
                source,
            })?;
    }
    Ok(roots)
}
