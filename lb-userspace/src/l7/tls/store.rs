//! The SNI certificate table, its loading from PEM files, and hot reload.
use std::{
    borrow::Cow,
    collections::HashMap,
    fmt,
    net::IpAddr,
    os::unix::fs::MetadataExt,
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, DnsName, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    InconsistentKeys, SignatureScheme,
};

use super::{crypto_provider, CertSpec, TlsError};

/// How often [`watch`] looks at the files unless told otherwise.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// The certificates of one listener, chosen per handshake by SNI.
///
/// Lookup order: an exact name, then a wildcard one label deep (RFC 6125:
/// `*.example.com` matches `x.example.com`, not `a.b.example.com` nor
/// `example.com`), then the default certificate. Without SNI the default is
/// served. With no match and no default the handshake is refused (rustls
/// sends an `access_denied` alert). Names compare case-insensitively, and a
/// trailing dot is ignored.
///
/// Several certificates may carry the same name (say an ECDSA and an RSA
/// one): the first, in configuration order, whose key can produce a
/// signature scheme the client offers is served, else the first.
///
/// The table sits behind an [`ArcSwap`]: [`CertStore::reload`] and
/// [`CertStore::replace`] build a complete new table and swap it in, or
/// change nothing. A client resuming a session made before a reload
/// resumes it (no certificate is exchanged then); every full handshake gets
/// the current table.
pub struct CertStore {
    current: ArcSwap<Loaded>,
    /// Serializes reloads; holds the file stamps of the last failed reload
    /// so that [`CertStore::reload_if_changed`] retries only after another
    /// change.
    reloading: Mutex<Option<Vec<Option<Stamp>>>>,
}

/// One loaded generation: the specs, what they loaded into, and the files'
/// stamps taken just before they were read.
struct Loaded {
    specs: Vec<CertSpec>,
    table: Table,
    stamps: Vec<Option<Stamp>>,
    generation: u64,
}

#[derive(Default)]
struct Table {
    exact: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// Keyed by what follows `*.`.
    wildcard: HashMap<String, Vec<Arc<CertifiedKey>>>,
    default: Vec<Arc<CertifiedKey>>,
}

/// What identifies one version of a file on disk (`None` in a list: the file
/// could not be examined).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    ctime: (i64, i64),
    len: u64,
    dev: u64,
    ino: u64,
}

impl CertStore {
    /// Loads every certificate; any failure fails the whole store.
    pub fn load(specs: Vec<CertSpec>) -> Result<CertStore, TlsError> {
        let stamps = stamps_of(&specs);
        let loaded = Loaded::load(specs, stamps, 1)?;
        Ok(CertStore {
            current: ArcSwap::from_pointee(loaded),
            reloading: Mutex::new(None),
        })
    }

    /// Re-reads every certificate and key file and swaps the new table in
    /// atomically; if any file fails, nothing changes and its error is
    /// returned. Returns the new generation.
    pub fn reload(&self) -> Result<u64, TlsError> {
        let mut failed = self.lock();
        let specs = self.current.load().specs.clone();
        self.install(specs, &mut failed)
    }

    /// Loads a different list of certificates (a configuration reload) and
    /// swaps it in, or changes nothing on error. Returns the new generation.
    pub fn replace(&self, specs: Vec<CertSpec>) -> Result<u64, TlsError> {
        let mut failed = self.lock();
        let mut ignored = failed.clone();
        let generation = self.install(specs, &mut ignored)?;
        *failed = None;
        Ok(generation)
    }

    /// Reloads if any file changed (modification time, size, inode…) since
    /// the served generation was read, and since the last failed attempt.
    /// `None`: nothing changed. This is what [`watch`] calls.
    pub fn reload_if_changed(&self) -> Option<Result<u64, TlsError>> {
        let mut failed = self.lock();
        let current = self.current.load_full();
        let now = stamps_of(&current.specs);
        if now == current.stamps || failed.as_ref() == Some(&now) {
            return None;
        }
        Some(self.install(current.specs.clone(), &mut failed))
    }

    /// The served generation: 1 after [`CertStore::load`], plus one per
    /// successful reload.
    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// The specs the served generation was loaded from.
    pub fn specs(&self) -> Vec<CertSpec> {
        self.current.load().specs.clone()
    }

    /// The certificate a handshake with this SNI (`None`: no SNI) would get,
    /// ignoring the client's signature schemes.
    pub fn resolve_name(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.select(sni, None)
    }

    fn select(
        &self,
        sni: Option<&str>,
        schemes: Option<&[SignatureScheme]>,
    ) -> Option<Arc<CertifiedKey>> {
        let loaded = self.current.load();
        let candidates = loaded.table.candidates(sni)?;
        let compatible = schemes.and_then(|schemes| {
            candidates
                .iter()
                .find(|key| key.key.choose_scheme(schemes).is_some())
        });
        compatible.or_else(|| candidates.first()).cloned()
    }

    fn install(
        &self,
        specs: Vec<CertSpec>,
        failed: &mut Option<Vec<Option<Stamp>>>,
    ) -> Result<u64, TlsError> {
        let stamps = stamps_of(&specs);
        let generation = self.current.load().generation + 1;
        match Loaded::load(specs, stamps.clone(), generation) {
            Ok(loaded) => {
                self.current.store(Arc::new(loaded));
                *failed = None;
                Ok(generation)
            }
            Err(e) => {
                *failed = Some(stamps);
                Err(e)
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Vec<Option<Stamp>>>> {
        self.reloading.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = client_hello.server_name();
        let chosen = self.select(sni, Some(client_hello.signature_schemes()));
        if chosen.is_none() {
            log::debug!(
                "TLS: no certificate for SNI {:?} and no default certificate",
                sni.unwrap_or("(none)")
            );
        }
        chosen
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let loaded = self.current.load();
        f.debug_struct("CertStore")
            .field("generation", &loaded.generation)
            .field("certs", &loaded.specs.len())
            .field("exact_names", &loaded.table.exact.len())
            .field("wildcards", &loaded.table.wildcard.len())
            .field("defaults", &loaded.table.default.len())
            .finish()
    }
}

/// Polls the store's files every `every` (a tokio task; [`DEFAULT_WATCH_INTERVAL`]
/// is a good value) and reloads when any of them changed, logging the
/// outcome. A failed reload keeps the served certificates and is retried at
/// the next change. The task ends when the store is dropped, or when the
/// returned handle is aborted. Needs a tokio runtime.
///
/// Renewal tools should write the new files and then rename them into place
/// (or swap a symlink); writing the key before the certificate, in place,
/// may briefly fail a reload that the next change then fixes.
pub fn watch(store: &Arc<CertStore>, every: Duration) -> tokio::task::JoinHandle<()> {
    let store = Arc::downgrade(store);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate
        loop {
            tick.tick().await;
            let Some(store) = store.upgrade() else {
                return;
            };
            match tokio::task::spawn_blocking(move || store.reload_if_changed()).await {
                Ok(None) => {}
                Ok(Some(Ok(generation))) => {
                    log::info!("TLS certificates reloaded from disk (generation {generation})")
                }
                Ok(Some(Err(e))) => log::error!(
                    "TLS certificate reload failed, still serving the previous certificates: {e}"
                ),
                Err(e) => log::error!("TLS certificate watcher: reload task failed: {e}"),
            }
        }
    })
}

impl Loaded {
    fn load(
        specs: Vec<CertSpec>,
        stamps: Vec<Option<Stamp>>,
        generation: u64,
    ) -> Result<Loaded, TlsError> {
        if specs.is_empty() {
            return Err(TlsError::NoCertificates);
        }
        let mut table = Table::default();
        for spec in &specs {
            let patterns = spec
                .names
                .iter()
                .map(|name| parse_name(name))
                .collect::<Result<Vec<_>, _>>()?;
            if patterns.is_empty() && !spec.default {
                return Err(TlsError::Unreachable {
                    cert_path: spec.cert_path.clone(),
                });
            }
            let key = Arc::new(load_certified_key(&spec.cert_path, &spec.key_path)?);
            for pattern in patterns {
                let (map, name) = match pattern {
                    Pattern::Exact(name) => (&mut table.exact, name),
                    Pattern::Wildcard(suffix) => (&mut table.wildcard, suffix),
                };
                map.entry(name).or_default().push(key.clone());
            }
            if spec.default {
                table.default.push(key);
            }
        }
        Ok(Loaded {
            specs,
            table,
            stamps,
            generation,
        })
    }
}

impl Table {
    /// The certificates for this SNI, in preference order (never empty).
    fn candidates(&self, sni: Option<&str>) -> Option<&[Arc<CertifiedKey>]> {
        let found = sni.and_then(|sni| {
            let name = normalize(sni);
            if let Some(keys) = self.exact.get(name.as_ref()) {
                return Some(keys);
            }
            let (first, rest) = name.split_once('.')?;
            if first.is_empty() || rest.is_empty() {
                return None;
            }
            self.wildcard.get(rest)
        });
        let keys = found.unwrap_or(&self.default);
        (!keys.is_empty()).then_some(keys.as_slice())
    }
}

/// A configured certificate name, normalized.
#[derive(Debug, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    /// What follows `*.`.
    Wildcard(String),
}

fn parse_name(raw: &str) -> Result<Pattern, TlsError> {
    let bad = |reason| TlsError::BadName {
        name: raw.to_string(),
        reason,
    };
    let name = normalize(raw);
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(bad(
            "an IP address is never sent as SNI; mark the certificate `default` instead",
        ));
    }
    let (pattern, dns) = match name.strip_prefix("*.") {
        Some(rest) => (Pattern::Wildcard(rest.to_string()), rest),
        None => (Pattern::Exact(name.to_string()), name.as_ref()),
    };
    if dns.contains('*') {
        return Err(bad(
            "a wildcard must be the whole left-most label, as in *.example.com",
        ));
    }
    if DnsName::try_from(dns).is_err() {
        return Err(bad("not a valid DNS name"));
    }
    Ok(pattern)
}

/// Lower case, without one trailing dot.
fn normalize(name: &str) -> Cow<'_, str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    match name.bytes().any(|b| b.is_ascii_uppercase()) {
        true => Cow::Owned(name.to_ascii_lowercase()),
        false => Cow::Borrowed(name),
    }
}

/// Reads a PEM certificate chain (leaf first) and its private key, and checks
/// that they belong together.
pub(super) fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    let signing_key = crypto_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::UnsupportedKey {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                key_path: key_path.to_path_buf(),
                cert_path: cert_path.to_path_buf(),
            })
        }
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
            Err(TlsError::UnsupportedKey {
                path: key_path.to_path_buf(),
                reason: "its public key cannot be derived to check it against the certificate"
                    .to_string(),
            })
        }
        Err(source) => Err(TlsError::BadCertificate {
            path: cert_path.to_path_buf(),
            source,
        }),
    }
}

/// Every `CERTIFICATE` block of a PEM file, in order; at least one.
pub(super) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key block (PKCS#8, PKCS#1 or SEC1) of a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        },
        source => TlsError::Pem {
            path: path.to_path_buf(),
            source,
        },
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The stamps of every file of these specs, certificate then key, in order.
fn stamps_of(specs: &[CertSpec]) -> Vec<Option<Stamp>> {
    specs
        .iter()
        .flat_map(|spec| [&spec.cert_path, &spec.key_path])
        .map(|path| {
            // `metadata` follows symlinks: a swapped link is a change too.
            let meta = std::fs::metadata(path).ok()?;
            Some(Stamp {
                modified: meta.modified().ok(),
                ctime: (meta.ctime(), meta.ctime_nsec()),
                len: meta.len(),
                dev: meta.dev(),
                ino: meta.ino(),
            })
        })
        .collect()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn names_parse_and_normalize() {
        assert_eq!(
            parse_name("A.Example.COM.").unwrap(),
            Pattern::Exact("a.example.com".into())
        );
        assert_eq!(
            parse_name("*.Example.com").unwrap(),
            Pattern::Wildcard("example.com".into())
        );
        for bad in [
            "",
            ".",
            "*",
            "*.",
            "*.*.example.com",
            "a.*.example.com",
            "x*.example.com",
            "10.0.0.1",
            "::1",
            "bad name.example.com",
        ] {
            assert!(
                matches!(parse_name(bad), Err(TlsError::BadName { .. })),
                "{bad:?} should be rejected"
            );
        }
    }
}
