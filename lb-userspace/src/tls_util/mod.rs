//! TLS pieces shared by the proxy's upstream connections and the HTTPS
//! health checks: the crypto provider, server names, and the verifier of
//! `verify: false`. A leaf: it imports nothing of xlb.
pub mod unverified;

use std::sync::Arc;

use rustls::pki_types::ServerName;

/// The *ring* crypto provider every TLS config of xlb is built with
/// (passed explicitly: nothing depends on a process-wide default).
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The TLS server name of a peer host (DNS name or IP address literal,
/// IPv6 with or without brackets); `None` when it is neither.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_string()).ok()
}
