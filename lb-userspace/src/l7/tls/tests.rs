//! Certificates are made with rcgen in a tempdir; handshakes run between
//! tokio-rustls clients and servers over an in-memory duplex pipe.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, ProtocolVersion, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use rustls::pki_types::pem::PemObject;

// ---------------------------------------------------------------- fixtures

/// A test CA that issues leaf certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

/// One issued certificate with its key, as PEM, and the DER the server sends.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
            der: cert.der().clone(),
        }
    }

    /// A server certificate (ECDSA P-256) for these SAN names.
    fn server(&self, names: &[&str]) -> Leaf {
        self.issue(names, KeyPair::generate().unwrap(), false)
    }

    fn issue(&self, names: &[&str], key: KeyPair, client: bool) -> Leaf {
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.extended_key_usages = vec![match client {
            true => ExtendedKeyUsagePurpose::ClientAuth,
            false => ExtendedKeyUsagePurpose::ServerAuth,
        }];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        roots
    }
}

/// Writes `contents` to `dir/name` by renaming a temporary file into place,
/// as certificate renewal tools do (the path gets a new inode).
fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// Writes a leaf's cert and key as `NAME.crt`/`NAME.key`; returns the spec.
fn install(dir: &Path, file: &str, leaf: &Leaf, names: &[&str], default: bool) -> CertSpec {
    CertSpec {
        names: names.iter().map(|n| n.to_string()).collect(),
        cert_path: write(dir, &format!("{file}.crt"), &leaf.cert_pem),
        key_path: write(dir, &format!("{file}.key"), &leaf.key_pem),
        default,
    }
}

/// Accepts any server certificate but checks the handshake signatures, and
/// offers only `schemes`: lets a test see which certificate the server
/// picked even when it does not cover the name asked for.
#[derive(Debug)]
struct AcceptAny {
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &crypto_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &crypto_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
const TLS12_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
const TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// A client that accepts any certificate, offers `alpn`, speaks `versions`.
fn lenient_client(versions: &[&'static SupportedProtocolVersion], alpn: &[&[u8]]) -> ClientConfig {
    lenient_client_with(
        versions,
        alpn,
        crypto_provider()
            .signature_verification_algorithms
            .supported_schemes(),
    )
}

fn lenient_client_with(
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
    schemes: Vec<SignatureScheme>,
) -> ClientConfig {
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny { schemes }))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Every handshake a full one, so that each shows the certificate the
    // server picks now (a resumed session keeps its original certificate).
    config.resumption = rustls::client::Resumption::disabled();
    config
}

/// What one successful handshake showed, from both ends.
#[derive(Debug)]
struct Seen {
    /// The leaf certificate the server presented.
    leaf: CertificateDer<'static>,
    alpn: Option<Vec<u8>>,
    version: ProtocolVersion,
    /// SNI as the server saw it.
    server_sni: Option<String>,
    /// Length of the client certificate chain the server verified.
    client_chain: usize,
    /// The client resumed a session.
    resumed: bool,
}

/// One handshake: `sni` is the name the client connects to (sent as SNI
/// unless the client disabled it). The server then sends 5 bytes, which the
/// client reads, so that a rejection the client only learns after its
/// handshake (TLS 1.3 client auth) still fails here. `Err` holds both ends'
/// errors.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    sni: &str,
) -> Result<Seen, String> {
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let server_side = async move {
        let mut tls = TlsAcceptor::from(server)
            .accept(server_io)
            .await
            .map_err(|e| format!("server: {e}"))?;
        let (_, conn) = tls.get_ref();
        let seen = (
            conn.server_name().map(str::to_string),
            conn.peer_certificates().map_or(0, |c| c.len()),
        );
        tls.write_all(b"hello")
            .await
            .map_err(|e| format!("server write: {e}"))?;
        tls.shutdown().await.ok();
        Ok::<_, String>(seen)
    };
    let client_side = async move {
        let mut tls = TlsConnector::from(client)
            .connect(name, client_io)
            .await
            .map_err(|e| format!("client: {e}"))?;
        let mut hello = [0u8; 5];
        tls.read_exact(&mut hello)
            .await
            .map_err(|e| format!("client read: {e}"))?;
        let (_, conn) = tls.get_ref();
        Ok::<_, String>((
            conn.peer_certificates().unwrap()[0].clone().into_owned(),
            conn.alpn_protocol().map(<[u8]>::to_vec),
            conn.protocol_version().unwrap(),
            conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        ))
    };
    let (server, client) = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::future::join(server_side, client_side),
    )
    .await
    .expect("handshake timed out");
    match (server, client) {
        (Ok((server_sni, client_chain)), Ok((leaf, alpn, version, resumed))) => Ok(Seen {
            leaf,
            alpn,
            version,
            server_sni,
            client_chain,
            resumed,
        }),
        (server, client) => Err(format!("{server:?} / {client:?}")),
    }
}

/// The store's choice for `sni`, as the DER of its leaf.
fn chosen(store: &CertStore, sni: Option<&str>) -> Option<CertificateDer<'static>> {
    store.resolve_name(sni).map(|k| k.cert[0].clone())
}

/// The SNI fixture: an exact, a wildcard and a default certificate.
struct SniFixture {
    _dir: tempfile::TempDir,
    ca: Ca,
    exact: Leaf,
    wildcard: Leaf,
    default: Leaf,
    store: Arc<CertStore>,
}

fn sni_fixture(with_default: bool) -> SniFixture {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("xlb test CA");
    let exact = ca.server(&["a.example.com"]);
    let wildcard = ca.server(&["*.example.com"]);
    let default = ca.server(&["default.test"]);
    let mut specs = vec![
        // The wildcard first: order must not matter for exact-over-wildcard.
        install(dir.path(), "wild", &wildcard, &["*.example.com"], false),
        install(dir.path(), "exact", &exact, &["a.example.com"], false),
    ];
    if with_default {
        specs.push(install(dir.path(), "default", &default, &[], true));
    }
    let store = Arc::new(CertStore::load(specs).unwrap());
    SniFixture {
        _dir: dir,
        ca,
        exact,
        wildcard,
        default,
        store,
    }
}

/// Asserts that `leaf` is valid for `name` under `ca` (chain and SAN).
fn assert_covers(ca: &Ca, leaf: &CertificateDer<'_>, name: &str) {
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(ca.roots()), crypto_provider())
            .build()
            .unwrap();
    verifier
        .verify_server_cert(
            leaf,
            &[],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .unwrap_or_else(|e| panic!("certificate does not cover {name}: {e}"));
}

// ---------------------------------------------------------------- SNI

#[test]
fn sni_picks_exact_then_wildcard_then_default() {
    let f = sni_fixture(true);
    let s = &f.store;
    assert_eq!(chosen(s, Some("a.example.com")), Some(f.exact.der.clone()));
    assert_eq!(chosen(s, Some("A.Example.COM.")), Some(f.exact.der.clone()));
    assert_eq!(
        chosen(s, Some("x.example.com")),
        Some(f.wildcard.der.clone())
    );
    assert_eq!(
        chosen(s, Some("X.EXAMPLE.com.")),
        Some(f.wildcard.der.clone())
    );
    // A wildcard covers one label only, and not the bare domain.
    assert_eq!(
        chosen(s, Some("a.b.example.com")),
        Some(f.default.der.clone())
    );
    assert_eq!(chosen(s, Some("example.com")), Some(f.default.der.clone()));
    assert_eq!(chosen(s, Some("unknown.org")), Some(f.default.der.clone()));
    assert_eq!(chosen(s, None), Some(f.default.der.clone()));
}

#[test]
fn without_default_unknown_names_get_nothing() {
    let f = sni_fixture(false);
    let s = &f.store;
    assert_eq!(chosen(s, Some("a.example.com")), Some(f.exact.der.clone()));
    assert_eq!(
        chosen(s, Some("x.example.com")),
        Some(f.wildcard.der.clone())
    );
    assert_eq!(chosen(s, Some("a.b.example.com")), None);
    assert_eq!(chosen(s, Some("example.com")), None);
    assert_eq!(chosen(s, None), None);
}

#[tokio::test]
async fn handshakes_present_the_certificate_chosen_by_sni() {
    let f = sni_fixture(true);
    let server = build_server_config(&ListenerTls::default(), f.store.clone()).unwrap();
    let client = Arc::new(lenient_client(BOTH, &[b"h2", b"http/1.1"]));
    for (sni, want, covers) in [
        ("a.example.com", &f.exact, true),
        ("x.example.com", &f.wildcard, true),
        ("a.b.example.com", &f.default, false),
        ("example.com", &f.default, false),
        ("unknown.org", &f.default, false),
    ] {
        let seen = handshake(server.clone(), client.clone(), sni)
            .await
            .unwrap();
        assert_eq!(seen.leaf, want.der, "{sni}");
        assert_eq!(seen.server_sni.as_deref(), Some(sni));
        if covers {
            assert_covers(&f.ca, &seen.leaf, sni);
        }
    }
    assert_covers(&f.ca, &f.default.der, "default.test");

    // No SNI at all.
    let mut no_sni = lenient_client(BOTH, &[b"h2"]);
    no_sni.enable_sni = false;
    let seen = handshake(server, Arc::new(no_sni), "a.example.com")
        .await
        .unwrap();
    assert_eq!(seen.server_sni, None);
    assert_eq!(seen.leaf, f.default.der);
}

#[tokio::test]
async fn unknown_name_without_default_fails_the_handshake() {
    let f = sni_fixture(false);
    let server = build_server_config(&ListenerTls::default(), f.store.clone()).unwrap();
    let client = Arc::new(lenient_client(BOTH, &[]));
    let err = handshake(server.clone(), client.clone(), "unknown.org")
        .await
        .unwrap_err();
    assert!(err.contains("no server certificate"), "{err}");
    assert!(err.contains("AccessDenied"), "client sees the alert: {err}");

    let mut no_sni = lenient_client(BOTH, &[]);
    no_sni.enable_sni = false;
    handshake(server.clone(), Arc::new(no_sni), "a.example.com")
        .await
        .unwrap_err();

    let seen = handshake(server, client, "a.example.com").await.unwrap();
    assert_eq!(seen.leaf, f.exact.der);
}

#[tokio::test]
async fn same_name_with_two_key_types_follows_the_client_schemes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("xlb test CA");
    let ed = ca.issue(
        &["a.example.com"],
        KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
        false,
    );
    let ec = ca.server(&["a.example.com"]);
    let store = Arc::new(
        CertStore::load(vec![
            install(dir.path(), "ed", &ed, &["a.example.com"], false),
            install(dir.path(), "ec", &ec, &["a.example.com"], false),
        ])
        .unwrap(),
    );
    let server = build_server_config(&ListenerTls::default(), store).unwrap();
    for (scheme, want) in [
        (SignatureScheme::ECDSA_NISTP256_SHA256, &ec),
        (SignatureScheme::ED25519, &ed),
    ] {
        let client = lenient_client_with(BOTH, &[], vec![scheme]);
        let seen = handshake(server.clone(), Arc::new(client), "a.example.com")
            .await
            .unwrap();
        assert_eq!(seen.leaf, want.der, "{scheme:?}");
    }
}

// ---------------------------------------------------------------- ALPN, versions

#[tokio::test]
async fn alpn_prefers_h2_and_falls_back_to_http11_on_tls12_and_tls13() {
    let f = sni_fixture(true);
    let server = build_server_config(&ListenerTls::default(), f.store.clone()).unwrap();
    for (versions, version) in [
        (TLS12_ONLY, ProtocolVersion::TLSv1_2),
        (TLS13_ONLY, ProtocolVersion::TLSv1_3),
    ] {
        for (offer, want) in [
            (&[&b"h2"[..], b"http/1.1"][..], Some(&b"h2"[..])),
            (&[&b"http/1.1"[..], b"h2"][..], Some(&b"h2"[..])),
            (&[&b"http/1.1"[..]][..], Some(&b"http/1.1"[..])),
            (&[][..], None),
        ] {
            let client = Arc::new(lenient_client(versions, offer));
            let seen = handshake(server.clone(), client, "a.example.com")
                .await
                .unwrap();
            assert_eq!(seen.version, version);
            assert_eq!(seen.alpn.as_deref(), want, "{version:?} offering {offer:?}");
            assert_eq!(seen.leaf, f.exact.der);
            assert_covers(&f.ca, &seen.leaf, "a.example.com");
        }
        // A client offering only protocols we do not speak is refused
        // (no_application_protocol, RFC 7301).
        let client = Arc::new(lenient_client(versions, &[b"spdy/3"]));
        let err = handshake(server.clone(), client, "a.example.com")
            .await
            .unwrap_err();
        assert!(err.contains("NoApplicationProtocol"), "{err}");
    }
}

#[tokio::test]
async fn sessions_resume_on_tls12_and_tls13() {
    let f = sni_fixture(true);
    let server = build_server_config(&ListenerTls::default(), f.store.clone()).unwrap();
    for versions in [TLS12_ONLY, TLS13_ONLY] {
        let mut client = lenient_client(versions, &[b"h2"]);
        client.resumption = rustls::client::Resumption::default();
        let client = Arc::new(client);
        let first = handshake(server.clone(), client.clone(), "a.example.com")
            .await
            .unwrap();
        assert!(!first.resumed);
        let second = handshake(server.clone(), client, "a.example.com")
            .await
            .unwrap();
        assert!(second.resumed, "{versions:?}");
        assert_eq!(second.leaf, f.exact.der);
        assert_eq!(second.alpn.as_deref(), Some(&b"h2"[..]));
    }
}

#[tokio::test]
async fn min_version_tls13_refuses_tls12_clients() {
    let f = sni_fixture(true);
    let tls = ListenerTls {
        min_version: TlsVersion::Tls13,
        ..ListenerTls::default()
    };
    let server = build_server_config(&tls, f.store.clone()).unwrap();
    let client = Arc::new(lenient_client(TLS12_ONLY, &[b"h2"]));
    handshake(server.clone(), client, "a.example.com")
        .await
        .unwrap_err();
    let client = Arc::new(lenient_client(BOTH, &[b"h2"]));
    let seen = handshake(server, client, "a.example.com").await.unwrap();
    assert_eq!(seen.version, ProtocolVersion::TLSv1_3);
}

#[test]
fn bad_alpn_ids_are_config_errors() {
    let f = sni_fixture(true);
    for bad in [Vec::new(), vec![b'x'; 256]] {
        let tls = ListenerTls {
            alpn: vec![b"h2".to_vec(), bad],
            ..ListenerTls::default()
        };
        let err = build_server_config(&tls, f.store.clone()).unwrap_err();
        assert!(matches!(err, TlsError::BadAlpn(_)), "{err}");
    }
    assert_eq!(default_alpn(), vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
}

// ---------------------------------------------------------------- reload

#[tokio::test]
async fn reload_serves_new_certificates_to_new_handshakes_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("xlb test CA");
    let old = ca.server(&["a.example.com"]);
    let spec = install(dir.path(), "a", &old, &["a.example.com"], true);
    let store = Arc::new(CertStore::load(vec![spec.clone()]).unwrap());
    assert_eq!(store.generation(), 1);
    let server = build_server_config(&ListenerTls::default(), store.clone()).unwrap();
    let client = Arc::new(lenient_client(BOTH, &[b"h2"]));

    // An established connection, echoing, made before the reload.
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let acceptor = TlsAcceptor::from(server.clone());
    let echo = tokio::spawn(async move {
        let mut tls = acceptor.accept(server_io).await.unwrap();
        let mut buf = [0u8; 4];
        while tls.read_exact(&mut buf).await.is_ok() {
            tls.write_all(&buf).await.unwrap();
        }
    });
    let mut established = TlsConnector::from(client.clone())
        .connect(ServerName::try_from("a.example.com").unwrap(), client_io)
        .await
        .unwrap();

    // New files on disk change nothing until reload.
    let new = ca.server(&["a.example.com"]);
    install(dir.path(), "a", &new, &["a.example.com"], true);
    let seen = handshake(server.clone(), client.clone(), "a.example.com")
        .await
        .unwrap();
    assert_eq!(seen.leaf, old.der);

    assert_eq!(store.reload().unwrap(), 2);
    assert_eq!(store.generation(), 2);
    let seen = handshake(server.clone(), client.clone(), "a.example.com")
        .await
        .unwrap();
    assert_eq!(seen.leaf, new.der);
    assert_covers(&ca, &seen.leaf, "a.example.com");

    // The established connection still works, with its old certificate.
    established.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    established.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    assert_eq!(
        established.get_ref().1.peer_certificates().unwrap()[0],
        old.der
    );
    drop(established);
    echo.await.unwrap();
}

#[tokio::test]
async fn a_broken_replacement_fails_the_reload_and_keeps_the_old_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("xlb test CA");
    let old = ca.server(&["a.example.com"]);
    let other = ca.server(&["b.example.com"]);
    let spec = install(dir.path(), "a", &old, &["a.example.com"], false);
    let wild = install(dir.path(), "w", &other, &["*.example.com"], false);
    let store = Arc::new(CertStore::load(vec![spec.clone(), wild]).unwrap());
    let server = build_server_config(&ListenerTls::default(), store.clone()).unwrap();
    let client = Arc::new(lenient_client(BOTH, &[b"h2"]));
    let key_name = spec.key_path.display().to_string();
    let cert_name = spec.cert_path.display().to_string();

    // Garbage in the key file.
    write(dir.path(), "a.key", "this is not a key\n");
    let err = store.reload().unwrap_err();
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
    assert!(err.to_string().contains(&key_name), "{err}");
    // A PEM block whose contents are no key.
    write(
        dir.path(),
        "a.key",
        "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n",
    );
    let err = store.reload().unwrap_err();
    assert!(matches!(err, TlsError::UnsupportedKey { .. }), "{err}");
    assert!(err.to_string().contains(&key_name), "{err}");
    // A valid key of another certificate.
    write(dir.path(), "a.key", &other.key_pem);
    let err = store.reload().unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&key_name), "{err}");
    assert!(err.to_string().contains(&cert_name), "{err}");
    // The certificate file gone.
    write(dir.path(), "a.key", &old.key_pem);
    std::fs::remove_file(&spec.cert_path).unwrap();
    let err = store.reload().unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err}");
    assert!(err.to_string().contains(&cert_name), "{err}");

    // Nothing changed: same generation, the old certificate is still served.
    assert_eq!(store.generation(), 1);
    assert_eq!(chosen(&store, Some("a.example.com")), Some(old.der.clone()));
    let seen = handshake(server.clone(), client.clone(), "a.example.com")
        .await
        .unwrap();
    assert_eq!(seen.leaf, old.der);

    // Fixed files reload.
    let new = ca.server(&["a.example.com"]);
    install(dir.path(), "a", &new, &["a.example.com"], false);
    assert_eq!(store.reload().unwrap(), 2);
    let seen = handshake(server, client, "a.example.com").await.unwrap();
    assert_eq!(seen.leaf, new.der);
}

#[test]
fn replace_swaps_the_certificate_list_or_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("xlb test CA");
    let a = ca.server(&["a.example.com"]);
    let b = ca.server(&["b.example.com"]);
    let spec_a = install(dir.path(), "a", &a, &["a.example.com"], false);
    let spec_b = install(dir.path(), "b", &b, &["b.example.com"], true);
    let store = CertStore::load(vec![spec_a.clone()]).unwrap();
    assert_eq!(chosen(&store, Some("b.example.com")), None);

    let broken = CertSpec {
        key_path: dir.path().join("missing.key"),
        ..spec_b.clone()
    };
    let err = store.replace(vec![spec_a.clone(), broken]).unwrap_err();
    assert!(err.to_string().contains("missing.key"), "{err}");
    assert_eq!(store.specs(), vec![spec_a.clone()]);

    assert_eq!(store.replace(vec![spec_a, spec_b.clone()]).unwrap(), 2);
    assert_eq!(chosen(&store, Some("b.example.com")), Some(b.der.clone()));
    assert_eq!(chosen(&store, None), Some(b.der.clone()));
    assert!(matches!(
        store.replace(Vec::new()),
        Err(TlsError::NoCertificates)
    ));
    assert_eq!(store.generation(), 2);
}

#[test]
fn reload_if_changed_follows_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("xlb test CA");
    let old = ca.server(&["a.example.com"]);
    let spec = install(dir.path(), "a", &old, &["a.example.com"], true);
    let store = CertStore::load(vec![spec]).unwrap();
    assert!(store.reload_if_changed().is_none());

    // A half-done renewal (new certificate, old key) fails once...
    let new = ca.server(&["a.example.com"]);
    write(dir.path(), "a.crt", &new.cert_pem);
    assert!(matches!(
        store.reload_if_changed(),
        Some(Err(TlsError::KeyMismatch { .. }))
    ));
    // ...is not retried while nothing changes...
    assert!(store.reload_if_changed().is_none());
    assert_eq!(chosen(&store, None), Some(old.der.clone()));
    // ...and the key's arrival completes it.
    write(dir.path(), "a.key", &new.key_pem);
    assert!(matches!(store.reload_if_changed(), Some(Ok(2))));
    assert!(store.reload_if_changed().is_none());
    assert_eq!(chosen(&store, None), Some(new.der.clone()));
}

#[tokio::test]
async fn watch_reloads_changed_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("xlb test CA");
    let old = ca.server(&["a.example.com"]);
    let spec = install(dir.path(), "a", &old, &["a.example.com"], true);
    let store = Arc::new(CertStore::load(vec![spec]).unwrap());
    let watcher = watch(&store, Duration::from_millis(20));

    async fn wait_for(store: &CertStore, want: &CertificateDer<'_>) {
        for _ in 0..250 {
            if chosen(store, None).as_ref() == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the watcher did not reload");
    }

    let new = ca.server(&["a.example.com"]);
    install(dir.path(), "a", &new, &["a.example.com"], true);
    wait_for(&store, &new.der).await;
    assert_eq!(store.generation(), 2);

    // A garbage key: the watcher fails the reload and keeps serving.
    write(dir.path(), "a.key", "garbage");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.generation(), 2);
    assert_eq!(chosen(&store, None), Some(new.der.clone()));

    let newer = ca.server(&["a.example.com"]);
    install(dir.path(), "a", &newer, &["a.example.com"], true);
    wait_for(&store, &newer.der).await;
    assert_eq!(store.generation(), 3);

    // The task ends with the store.
    drop(store);
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("the watcher outlived its store")
        .unwrap();
}

// ---------------------------------------------------------------- loading

/// The contents of a PKCS#8 `PrivateKeyInfo`'s `privateKey` OCTET STRING:
/// the PKCS#1 `RSAPrivateKey` or SEC1 `ECPrivateKey` it wraps.
fn unwrap_pkcs8(pkcs8: &[u8]) -> Vec<u8> {
    fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = input[0];
        let (len, header) = match input[1] {
            n if n < 0x80 => (n as usize, 2),
            n => {
                let count = (n & 0x7f) as usize;
                let len = input[2..2 + count]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | *b as usize);
                (len, 2 + count)
            }
        };
        (tag, &input[header..header + len], &input[header + len..])
    }
    let (tag, info, _) = tlv(pkcs8);
    assert_eq!(tag, 0x30);
    let (_, _version, rest) = tlv(info);
    let (_, _algorithm, rest) = tlv(rest);
    let (tag, key, _) = tlv(rest);
    assert_eq!(tag, 0x04);
    key.to_vec()
}

fn pem(label: &str, der: &[u8]) -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            text.push(match i <= chunk.len() {
                true => B64[(n >> (18 - 6 * i)) as usize & 63] as char,
                false => '=',
            });
        }
    }
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A 2048-bit RSA key made for these tests only (rcgen cannot generate RSA
/// keys with the ring backend).
const TEST_RSA_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC2ENh3VasLmLNF
H1rtiWEgLrggMd23vedmJUWZEuleq1ox/8zEis3aCNnWAE+vTIkaO37E3mVqsP/0
P4+0uVB3kLdBaxhjoxLlcuabRe0bI7DAII1iQR8rzX4U5RLMfbwZAuu851kLYRWG
S5nBRRScJ2LUJN1/HKipAu++Y4qHSgV4xFrR0WG1AA5FKwMx2PkFsv7BtfiO3QE2
DnXpA5jjF3jSReSoC80f/4PIpuFGuA6jgiyMC2MZcc6p7orVs/q3LmvTTrxGuNPR
plAVoeWU3DAP+fM6lkZOdTWT4048eikAjLcs6tqDLCQnt0DtLT0li0+KvdOMT2qh
0NjGtGYRAgMBAAECggEAC961yjP04pzqRS2p5zYvdaJuITU3FBlmun9gFf6IZgJs
bzmS71ZwXNB6aUwcZdyqzKHH3kx0lrvi+BjjxN/XGfB+rh5uGOLjIr/2vnVU49HU
HnaQ2TDPODMdzv1vWBMzffr1hRudL9N8zIRlyha3pQWhWRztLvIeoeQ93q8NM0w5
NvUr5vu1gj1OpetbvaXn9MaWjT9qJhpFSeLByDQtfXPeYcthhHhqlaD/Lu+inFV0
9Tsh8lFbBw6mov7NfuOB4XH3536jXDRpW0o4OvXjlTN/o3bFAqF7CTDuQ9E8zfjo
1YrcXKFy/aMyyZp6PW7vjjwG0gD77Kt5u1BevlWc8QKBgQDi99wwwjWWo7frqbqD
zIdZthOEeIM0Gkmw1bT5FMkMBUqEJOgi6KFsWx/3UiTpt5CtsB5UB8j2IzLhiF9I
xV0m5QS1/MaMZKsAuB/0L3NpSeAGdOILhtBMdzqOxX8ThvLaHi8duNG9TUJLHjl6
hPHh+eFm8TPTR38X0afig2A8mQKBgQDNWqStzckmJ92ZTKLrz5GLf5T5Fwluu0eL
JKgs4+3CE+We2tNdjKv/BASxJk7Tv0LcrZWIxfe4ryV+9FPl8txruONVrWXo3RwY
d/2WeEawO8MHUmwpWDlziCx/2M0xPrhYR1rdM9Iyq3gxwKJgkpxjcYyTvnF0kZms
HQoOvacoOQKBgQCK0NOwUqfZ6WoszZNQ1wAVY2IOjHKapFVbvWlBSnAoVPgdWEFO
UH+iOR2U8322IFpxkJ0MAfLsb9zHydOVO3jcuAeokuCQr2VTPEn23Cq3Q8Kr0EMM
j7jIe8ep2Kr/M3NG6l0gzZAiOqWIMgUvpS4XavBsOKvc1gaqd8U5qeZrSQKBgFzS
JvOku9IyXNjpKg86wIf0gCrjPdE+d8UuKZI46IQ8KCNYuAdmCWx4rYJBVYoivp8v
GxM6oJFrIaCz4aRj1Twf0yor+Y97OjLZMdeswA7yxGHv4JIDndxZ5ftXzNAAkKTe
g/TOcqmSlf6vGvZZ7rSIY8l4YKIXGgYRDjXBhegJAoGAf71oyoXtI+JfTOXkqB85
My//Je+A14Ztgf8mzgh2DH7vKyAZ7hIWy10NG7RYEBQv86F4rpLnHAhDTef7GxaQ
NIYqb1Rm642HXSPz5kpf3VNO+CbFCCuKMxzpCMqj9cwgEzOsfVnFirdQ91glJzNQ
IXctim1UwAz0/xM0kXTQGn8=
-----END PRIVATE KEY-----
";

#[tokio::test]
async fn keys_load_as_pkcs8_pkcs1_and_sec1() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("xlb test CA");

    let ec = ca.server(&["ec.example.com"]);
    let ec_sec1 = pem(
        "EC PRIVATE KEY",
        &unwrap_pkcs8(
            PrivateKeyDer::from_pem_slice(ec.key_pem.as_bytes())
                .unwrap()
                .secret_der(),
        ),
    );
    let p384 = ca.issue(
        &["p384.example.com"],
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
        false,
    );
    let ed = ca.issue(
        &["ed.example.com"],
        KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
        false,
    );
    let rsa = ca.issue(
        &["rsa.example.com"],
        KeyPair::from_pkcs8_pem_and_sign_algo(TEST_RSA_PKCS8, &rcgen::PKCS_RSA_SHA256).unwrap(),
        false,
    );
    let rsa_pkcs1 = pem(
        "RSA PRIVATE KEY",
        &unwrap_pkcs8(
            PrivateKeyDer::from_pem_slice(TEST_RSA_PKCS8.as_bytes())
                .unwrap()
                .secret_der(),
        ),
    );
    assert!(ec_sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    assert!(matches!(
        PrivateKeyDer::from_pem_slice(rsa_pkcs1.as_bytes()).unwrap(),
        PrivateKeyDer::Pkcs1(_)
    ));

    let spec = |name: &str, cert: &Leaf, key: &str| CertSpec {
        names: vec![format!("{name}.example.com")],
        cert_path: write(dir.path(), &format!("{name}.crt"), &cert.cert_pem),
        key_path: write(dir.path(), &format!("{name}.key"), key),
        default: false,
    };
    // Certificate and key in one file.
    let combined = write(
        dir.path(),
        "combined.pem",
        &format!("{}{}", rsa.cert_pem, rsa_pkcs1),
    );
    let specs = vec![
        spec("ec", &ec, &ec.key_pem),
        spec("sec1", &ec, &ec_sec1),
        spec("p384", &p384, &p384.key_pem),
        spec("ed", &ed, &ed.key_pem),
        spec("rsa", &rsa, &rsa.key_pem),
        spec("pkcs1", &rsa, &rsa_pkcs1),
        CertSpec {
            names: vec!["combined.example.com".into()],
            cert_path: combined.clone(),
            key_path: combined,
            default: false,
        },
    ];
    let store = Arc::new(CertStore::load(specs).unwrap());
    for (name, leaf) in [
        ("ec", &ec),
        ("sec1", &ec),
        ("p384", &p384),
        ("ed", &ed),
        ("rsa", &rsa),
        ("pkcs1", &rsa),
        ("combined", &rsa),
    ] {
        let sni = format!("{name}.example.com");
        assert_eq!(chosen(&store, Some(&sni)), Some(leaf.der.clone()), "{name}");
    }

    // Each key type signs real handshakes.
    let server = build_server_config(&ListenerTls::default(), store).unwrap();
    for versions in [TLS12_ONLY, TLS13_ONLY] {
        for (sni, leaf) in [
            ("pkcs1.example.com", &rsa),
            ("sec1.example.com", &ec),
            ("p384.example.com", &p384),
        ] {
            let client = Arc::new(lenient_client(versions, &[b"h2"]));
            let seen = handshake(server.clone(), client, sni).await.unwrap();
            assert_eq!(seen.leaf, leaf.der);
        }
    }
    // Ed25519 over TLS 1.3 (TLS 1.2 clients rarely offer it; rustls does).
    let client = Arc::new(lenient_client(TLS13_ONLY, &[b"h2"]));
    let seen = handshake(server, client, "ed.example.com").await.unwrap();
    assert_eq!(seen.leaf, ed.der);
}

#[test]
fn load_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("xlb test CA");
    let a = ca.server(&["a.example.com"]);
    let b = ca.server(&["b.example.com"]);
    let good = install(dir.path(), "a", &a, &["a.example.com"], false);
    let b_key = write(dir.path(), "b.key", &b.key_pem);
    let load = |cert_path: PathBuf, key_path: PathBuf| {
        CertStore::load(vec![CertSpec {
            names: vec!["a.example.com".into()],
            cert_path,
            key_path,
            default: false,
        }])
        .unwrap_err()
    };
    let text = |e: &TlsError| e.to_string();

    let missing = dir.path().join("missing.crt");
    let err = load(missing.clone(), good.key_path.clone());
    assert!(matches!(err, TlsError::Read { .. }), "{err}");
    assert!(text(&err).contains(&missing.display().to_string()), "{err}");
    assert!(text(&err).contains("No such file"), "{err}");

    // A key where the certificate should be.
    let err = load(good.key_path.clone(), good.key_path.clone());
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    assert!(text(&err).contains(&good.key_path.display().to_string()));
    assert!(text(&err).contains("no certificate"), "{err}");

    // A certificate where the key should be.
    let err = load(good.cert_path.clone(), good.cert_path.clone());
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
    assert!(text(&err).contains(&good.cert_path.display().to_string()));

    let err = load(good.cert_path.clone(), b_key.clone());
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert!(text(&err).contains(&b_key.display().to_string()), "{err}");
    assert!(
        text(&err).contains("does not match the certificate"),
        "{err}"
    );

    let junk_key = write(
        dir.path(),
        "junk.key",
        "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n",
    );
    let err = load(good.cert_path.clone(), junk_key.clone());
    assert!(matches!(err, TlsError::UnsupportedKey { .. }), "{err}");
    assert!(
        text(&err).contains(&junk_key.display().to_string()),
        "{err}"
    );
    assert!(text(&err).contains("unsupported key type"), "{err}");

    let junk_cert = write(
        dir.path(),
        "junk.crt",
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n",
    );
    let err = load(junk_cert.clone(), good.key_path.clone());
    assert!(matches!(err, TlsError::BadCertificate { .. }), "{err}");
    assert!(
        text(&err).contains(&junk_cert.display().to_string()),
        "{err}"
    );

    let broken_pem = write(
        dir.path(),
        "broken.crt",
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n",
    );
    let err = load(broken_pem.clone(), good.key_path.clone());
    assert!(matches!(err, TlsError::Pem { .. }), "{err}");
    assert!(
        text(&err).contains(&broken_pem.display().to_string()),
        "{err}"
    );

    // Configuration mistakes.
    assert!(matches!(
        CertStore::load(Vec::new()),
        Err(TlsError::NoCertificates)
    ));
    let err = CertStore::load(vec![CertSpec {
        names: Vec::new(),
        ..good.clone()
    }])
    .unwrap_err();
    assert!(matches!(err, TlsError::Unreachable { .. }), "{err}");
    let err = CertStore::load(vec![CertSpec {
        names: vec!["a.*.example.com".into()],
        ..good.clone()
    }])
    .unwrap_err();
    assert!(text(&err).contains("a.*.example.com"), "{err}");
    // Any bad spec fails the whole store.
    let err = CertStore::load(vec![
        good.clone(),
        CertSpec {
            key_path: b_key,
            ..good.clone()
        },
    ])
    .unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
}

// ---------------------------------------------------------------- client auth

struct ClientAuthFixture {
    _dir: tempfile::TempDir,
    store: Arc<CertStore>,
    ca_path: PathBuf,
    /// A client certificate from the trusted CA, and one from another CA.
    good: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    rogue: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
}

fn client_auth_fixture() -> ClientAuthFixture {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("xlb server CA");
    let client_ca = Ca::new("xlb client CA");
    let rogue_ca = Ca::new("rogue CA");
    let leaf = server_ca.server(&["a.example.com"]);
    let spec = install(dir.path(), "a", &leaf, &["a.example.com"], true);
    let ca_path = write(dir.path(), "clients-ca.pem", &client_ca.pem);
    let client = |ca: &Ca| {
        let leaf = ca.issue(&["client.example.com"], KeyPair::generate().unwrap(), true);
        (
            vec![leaf.der.clone()],
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
        )
    };
    ClientAuthFixture {
        store: Arc::new(CertStore::load(vec![spec]).unwrap()),
        ca_path,
        good: client(&client_ca),
        rogue: client(&rogue_ca),
        _dir: dir,
    }
}

fn client_with_cert(
    versions: &[&'static SupportedProtocolVersion],
    cert: Option<&(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny {
            schemes: crypto_provider()
                .signature_verification_algorithms
                .supported_schemes(),
        }));
    let mut config = match cert {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

#[tokio::test]
async fn required_client_auth_rejects_clients_without_a_trusted_certificate() {
    let f = client_auth_fixture();
    let tls = ListenerTls {
        client_auth: Some(ClientAuthSpec {
            ca_path: f.ca_path.clone(),
            required: true,
        }),
        ..ListenerTls::default()
    };
    let server = build_server_config(&tls, f.store.clone()).unwrap();
    for versions in [TLS12_ONLY, TLS13_ONLY] {
        let err = handshake(
            server.clone(),
            client_with_cert(versions, None),
            "a.example.com",
        )
        .await
        .unwrap_err();
        assert!(err.contains("server: "), "the server refuses: {err}");
        assert!(err.contains("peer sent no certificates"), "{err}");

        let err = handshake(
            server.clone(),
            client_with_cert(versions, Some(&f.rogue)),
            "a.example.com",
        )
        .await
        .unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");

        let seen = handshake(
            server.clone(),
            client_with_cert(versions, Some(&f.good)),
            "a.example.com",
        )
        .await
        .unwrap();
        assert_eq!(seen.client_chain, 1);
    }
}

#[tokio::test]
async fn optional_client_auth_accepts_anonymous_clients_but_verifies_given_certificates() {
    let f = client_auth_fixture();
    let tls = ListenerTls {
        client_auth: Some(ClientAuthSpec {
            ca_path: f.ca_path.clone(),
            required: false,
        }),
        ..ListenerTls::default()
    };
    let server = build_server_config(&tls, f.store.clone()).unwrap();
    for versions in [TLS12_ONLY, TLS13_ONLY] {
        let seen = handshake(
            server.clone(),
            client_with_cert(versions, None),
            "a.example.com",
        )
        .await
        .unwrap();
        assert_eq!(seen.client_chain, 0);
        let seen = handshake(
            server.clone(),
            client_with_cert(versions, Some(&f.good)),
            "a.example.com",
        )
        .await
        .unwrap();
        assert_eq!(seen.client_chain, 1);
        handshake(
            server.clone(),
            client_with_cert(versions, Some(&f.rogue)),
            "a.example.com",
        )
        .await
        .unwrap_err();
    }
}

#[test]
fn client_auth_ca_errors_name_the_file() {
    let f = client_auth_fixture();
    let tls = |ca_path: PathBuf| ListenerTls {
        client_auth: Some(ClientAuthSpec {
            ca_path,
            required: true,
        }),
        ..ListenerTls::default()
    };
    let missing = f.ca_path.with_file_name("nope.pem");
    let err = build_server_config(&tls(missing.clone()), f.store.clone()).unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    let spec = f.store.specs().remove(0);
    let err = build_server_config(&tls(spec.key_path.clone()), f.store.clone()).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
}

// ---------------------------------------------------------------- upstream

#[tokio::test]
async fn upstream_client_config_verifies_against_the_given_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("upstream CA");
    let other_ca = Ca::new("other CA");
    let ca_path = write(dir.path(), "upstream-ca.pem", &ca.pem);
    let upstream = |leaf: &Leaf, file: &str| {
        let spec = install(dir.path(), file, leaf, &["backend.internal"], true);
        let store = Arc::new(CertStore::load(vec![spec]).unwrap());
        build_server_config(&ListenerTls::default(), store).unwrap()
    };
    let trusted = upstream(&ca.server(&["backend.internal"]), "trusted");
    let untrusted = upstream(&other_ca.server(&["backend.internal"]), "untrusted");

    let h2 = build_client_config(Some(&ca_path), &default_alpn()).unwrap();
    let seen = handshake(trusted.clone(), h2.clone(), "backend.internal")
        .await
        .unwrap();
    assert_eq!(seen.alpn.as_deref(), Some(ALPN_H2));
    assert_eq!(seen.server_sni.as_deref(), Some("backend.internal"));
    assert_eq!(seen.version, ProtocolVersion::TLSv1_3);

    let http11 = build_client_config(Some(&ca_path), &[ALPN_HTTP11.to_vec()]).unwrap();
    let seen = handshake(trusted.clone(), http11, "backend.internal")
        .await
        .unwrap();
    assert_eq!(seen.alpn.as_deref(), Some(ALPN_HTTP11));

    // A certificate from another CA, or for another name, is refused.
    let err = handshake(untrusted, h2.clone(), "backend.internal")
        .await
        .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    let err = handshake(trusted, h2, "other.internal").await.unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");

    // Configuration errors.
    assert!(matches!(
        build_client_config(None, &default_alpn()),
        Err(TlsError::UpstreamCaRequired)
    ));
    let not_ca = write(dir.path(), "empty.pem", "nothing here\n");
    let err = build_client_config(Some(&not_ca), &[]).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    assert!(err.to_string().contains("empty.pem"), "{err}");
}

#[test]
fn upstream_server_names() {
    assert!(matches!(
        upstream_server_name("backend.internal").unwrap(),
        ServerName::DnsName(_)
    ));
    assert!(matches!(
        upstream_server_name("10.0.0.1").unwrap(),
        ServerName::IpAddress(_)
    ));
    assert!(matches!(
        upstream_server_name("[2001:db8::1]").unwrap(),
        ServerName::IpAddress(_)
    ));
    assert!(matches!(
        upstream_server_name("bad name"),
        Err(TlsError::BadServerName(_))
    ));
}
