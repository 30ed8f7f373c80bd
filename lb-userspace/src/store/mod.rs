//! Where resources live when they are not in the YAML file: one store
//! interface — get, range by prefix, a transaction with compare-and-swap,
//! watch from a revision — over an embedded database ([`embedded`], redb)
//! or an etcd cluster ([`etcd`]). Above it: the key layout ([`keys`]), the
//! resource writes that keep the index keys in the same transaction
//! ([`resources`]), and the applier that feeds watch events into the
//! running proxy one host at a time ([`apply`]).
//!
//! The interface is an enum rather than a trait object: there are two
//! backends, both known here, and async methods on an enum need no boxing.

pub mod apply;
pub mod embedded;
pub mod etcd;
pub mod keys;
pub mod lazy;
pub mod resources;
pub mod slot_plan;
pub mod verdicts;

use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::node::{ConfigStoreYaml, StoreKind};

/// One key and its value as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision of the last write to this key.
    pub mod_revision: i64,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's last write is at this revision (0: the key is absent).
    ModRevision(String, i64),
    /// The key exists.
    Exists(String),
}

/// A write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every comparison held (and so the writes were made).
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: i64,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(KeyValue),
    Delete { key: String, mod_revision: i64 },
}

impl Event {
    /// The key the event is about.
    pub fn key(&self) -> &str {
        match self {
            Event::Put(kv) => &kv.key,
            Event::Delete { key, .. } => key,
        }
    }
}

/// The events of one revision (one transaction), in write order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub revision: i64,
    pub events: Vec<Event>,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or answered with an error; retrying
    /// later may work.
    #[error("config store unavailable: {0}")]
    Unavailable(String),
    /// The revision a watch asked for has been compacted away: read
    /// everything again.
    #[error("revision {0} was compacted; a full re-read is needed")]
    Compacted(i64),
    /// The store's own data is not what xlb wrote.
    #[error("config store: {0}")]
    Corrupt(String),
}

/// A watch: batches in revision order, or an error after which the watch
/// has ended.
pub type WatchStream = mpsc::Receiver<Result<WatchBatch, StoreError>>;

/// A configuration store.
#[derive(Debug, Clone)]
pub enum Store {
    Embedded(embedded::EmbeddedStore),
    /// Boxed: the etcd client is some 3.5 KB, the embedded store a pointer.
    Etcd(Box<etcd::EtcdStore>),
}

/// How long a store call may take before it counts as unavailable: admin
/// writes fail fast while etcd is down rather than hang.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

impl Store {
    /// Opens the store `settings` name (`file` has none: `Ok(None)`).
    /// `instance` names the default embedded database path.
    pub async fn open(
        settings: &ConfigStoreYaml,
        kind: StoreKind,
        instance: &str,
    ) -> anyhow::Result<Option<Store>> {
        Store::open_waiting(settings, kind, instance, Duration::ZERO).await
    }

    /// As [`Store::open`], but an embedded database file that another
    /// process holds is tried again for up to `wait` (a successor whose
    /// predecessor is releasing it).
    pub async fn open_waiting(
        settings: &ConfigStoreYaml,
        kind: StoreKind,
        instance: &str,
        wait: Duration,
    ) -> anyhow::Result<Option<Store>> {
        Ok(match kind {
            StoreKind::File => None,
            StoreKind::Embedded => {
                let path = settings.path.clone().unwrap_or_else(|| {
                    std::path::PathBuf::from(format!("/var/lib/xlb/{instance}/store.redb"))
                });
                let durable = settings.durable;
                let opened = tokio::task::spawn_blocking(move || {
                    embedded::EmbeddedStore::open_waiting(&path, durable, wait)
                })
                .await??;
                Some(Store::Embedded(opened))
            }
            StoreKind::Etcd => Some(Store::Etcd(Box::new(
                etcd::EtcdStore::connect(&settings.endpoints).await?,
            ))),
        })
    }

    /// `embedded` or `etcd`.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Embedded(_) => "embedded",
            Store::Etcd(_) => "etcd",
        }
    }

    /// The value of `key`.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        match self {
            Store::Embedded(s) => s.get(key),
            Store::Etcd(s) => s.get(key).await,
        }
    }

    /// Keys starting with `prefix`, in key order, after `after` (exclusive)
    /// when given, at most `limit` when given; and the store's revision at
    /// the time of the read.
    pub async fn range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<(Vec<KeyValue>, i64), StoreError> {
        match self {
            Store::Embedded(s) => s.range(prefix, after, limit),
            Store::Etcd(s) => s.range(prefix, after, limit).await,
        }
    }

    /// Every key under each of `prefixes`, all read at one revision (one
    /// read transaction: the lazy router's host lookup reads the exact and
    /// the wildcard index of a host this way).
    pub async fn ranges(
        &self,
        prefixes: &[String],
    ) -> Result<(Vec<Vec<KeyValue>>, i64), StoreError> {
        match self {
            Store::Embedded(s) => s.ranges(prefixes),
            Store::Etcd(s) => s.ranges(prefixes).await,
        }
    }

    /// Makes `ops` when every comparison in `compares` holds; atomically.
    pub async fn txn(
        &self,
        compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> Result<TxnOutcome, StoreError> {
        match self {
            Store::Embedded(s) => s.txn(&compares, &ops),
            Store::Etcd(s) => s.txn(compares, ops).await,
        }
    }

    /// Every change under `prefix` from revision `from` on.
    pub async fn watch(&self, prefix: &str, from: i64) -> Result<WatchStream, StoreError> {
        match self {
            Store::Embedded(s) => s.watch(prefix, from),
            Store::Etcd(s) => s.watch(prefix, from).await,
        }
    }

    /// Whether the store answers now.
    pub async fn healthy(&self) -> bool {
        match self {
            Store::Embedded(s) => !s.is_released(),
            Store::Etcd(s) => s.healthy().await,
        }
    }
}

/// The first key after every key starting with `prefix` (etcd's range
/// end for a prefix).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
