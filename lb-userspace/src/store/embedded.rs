//! The embedded store: a redb database file on this node. A write is one
//! redb transaction, committed with `Durability::Immediate` (fsync before
//! the write is acknowledged) unless the operator chose `durable: false`.
//!
//! redb has keys and values but no revisions or watches, so this module
//! adds them: a revision counter in the `meta` table, each key's last
//! revision stored in front of its value, and a change log (`log`, one
//! entry per revision, the last [`LOG_KEEP`] kept) from which a watch can
//! resume; live changes reach watchers through a broadcast channel sent
//! while the write lock is held, so they arrive in revision order.
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock, RwLockReadGuard},
};

use redb::{Database, Durability, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc};

use super::{Compare, Event, KeyValue, Op, StoreError, TxnOutcome, WatchBatch, WatchStream};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");

/// redb's page cache.
const CACHE_BYTES: usize = 32 << 20;

/// Revisions kept in the change log; a watch from an older revision is
/// told to re-read everything.
pub const LOG_KEEP: i64 = 100_000;

/// A redb-backed store.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` while released to a successor process during a handover
    /// ([`EmbeddedStore::release`]): redb locks the file, so one process
    /// at a time can have it open.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    durable: bool,
    /// Held across commit and broadcast, so that watchers see revisions in
    /// order.
    write: Mutex<()>,
    changes: broadcast::Sender<Arc<WatchBatch>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("durable", &self.inner.durable)
            .finish()
    }
}

/// What a call on a released store answers (the admin API: 503 with
/// `Retry-After`).
const RELEASED: &str =
    "the embedded store was released to a successor process (handover); retry in a moment";

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Marks an open error caused by another process holding the file.
#[derive(Debug)]
struct Held;

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the database file is open in another process")
    }
}

fn is_held(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Held>().is_some()
}

/// A read lock on the open database.
struct DbGuard<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for DbGuard<'_> {
    type Target = Database;
    fn deref(&self) -> &Database {
        // `db()` checked that it is open, and the guard keeps it so.
        self.0.as_ref().expect("checked open")
    }
}

/// `[mod_revision: i64 LE][value]`.
fn encode(rev: i64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&rev.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn decode(key: &str, raw: &[u8]) -> Result<KeyValue, StoreError> {
    if raw.len() < 8 {
        return Err(corrupt(format!(
            "value of {key} is shorter than its revision"
        )));
    }
    let (rev, value) = raw.split_at(8);
    Ok(KeyValue {
        key: key.to_string(),
        value: value.to_vec(),
        mod_revision: i64::from_le_bytes(rev.try_into().unwrap_or_default()),
    })
}

/// Log entry: per event `[tag u8][key len u32][key][value len u32][value]`
/// (tag 1 put, 0 delete). Hand-written: five lines, and no format crate
/// for one private record.
fn encode_log(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        let (tag, key, value): (u8, &str, &[u8]) = match e {
            Event::Put(kv) => (1, &kv.key, &kv.value),
            Event::Delete { key, .. } => (0, key, &[]),
        };
        out.push(tag);
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    out
}

fn decode_log(rev: i64, mut raw: &[u8]) -> Result<Vec<Event>, StoreError> {
    let mut out = Vec::new();
    let take = |raw: &mut &[u8], n: usize| -> Result<Vec<u8>, StoreError> {
        if raw.len() < n {
            return Err(corrupt(format!("log entry {rev} is cut short")));
        }
        let (a, b) = raw.split_at(n);
        *raw = b;
        Ok(a.to_vec())
    };
    while !raw.is_empty() {
        let tag = take(&mut raw, 1)?[0];
        let klen = u32::from_le_bytes(take(&mut raw, 4)?.try_into().unwrap_or_default());
        let key = String::from_utf8(take(&mut raw, klen as usize)?).map_err(corrupt)?;
        let vlen = u32::from_le_bytes(take(&mut raw, 4)?.try_into().unwrap_or_default());
        let value = take(&mut raw, vlen as usize)?;
        out.push(if tag == 1 {
            Event::Put(KeyValue {
                key,
                value,
                mod_revision: rev,
            })
        } else {
            Event::Delete {
                key,
                mod_revision: rev,
            }
        });
    }
    Ok(out)
}

impl EmbeddedStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path, durable: bool) -> anyhow::Result<EmbeddedStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("config store directory {}: {e}", dir.display()))?;
        }
        let db = Self::open_db(path)?;
        let (changes, _) = broadcast::channel(4096);
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                db: RwLock::new(Some(db)),
                path: path.to_path_buf(),
                durable,
                write: Mutex::new(()),
                changes,
            }),
        })
    }

    /// Opens the database file, waiting up to `wait` while another process
    /// holds it (a predecessor that is releasing it in a handover).
    pub fn open_waiting(
        path: &Path,
        durable: bool,
        wait: std::time::Duration,
    ) -> anyhow::Result<EmbeddedStore> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Self::open(path, durable) {
                Err(e) if is_held(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) if is_held(&e) => {
                    return Err(e.context(format!(
                        "config store {}: still held by another process after {wait:?}",
                        path.display()
                    )))
                }
                other => return other,
            }
        }
    }

    fn open_db(path: &Path) -> anyhow::Result<Database> {
        // redb's default page cache is 1 GiB; the resources are read
        // once at start and then only by key, so a small cache does.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| {
                let held = matches!(e, redb::DatabaseError::DatabaseAlreadyOpen);
                let e = anyhow::anyhow!("config store {}: {e}", path.display());
                if held {
                    e.context(Held)
                } else {
                    e
                }
            })?;
        let txn = db.begin_write()?;
        {
            txn.open_table(KV)?;
            txn.open_table(LOG)?;
            let mut meta = txn.open_table(META)?;
            if meta.get("revision")?.is_none() {
                meta.insert("revision", 1)?;
            }
        }
        txn.commit()?;
        Ok(db)
    }

    /// Closes the database so that a successor process can open the file
    /// (handover). Waits for a write in progress to commit and its watch
    /// event to go out; afterwards every call answers
    /// `Unavailable` until [`EmbeddedStore::reopen`]. Returns the
    /// revision at release. Blocking.
    pub fn release(&self) -> Result<i64, StoreError> {
        let _write = self.inner.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut db = self.inner.db.write().unwrap_or_else(|e| e.into_inner());
        let rev = match db.as_ref() {
            Some(d) => {
                let r = d.begin_read().map_err(corrupt)?;
                let meta = r.open_table(META).map_err(corrupt)?;
                Self::revision_of(&meta)?
            }
            None => return Err(StoreError::Unavailable(RELEASED.into())),
        };
        // Dropping the database closes the file and its lock.
        *db = None;
        Ok(rev)
    }

    /// Opens the file again after [`EmbeddedStore::release`] (a handover
    /// that failed), waiting up to `wait` for the failed successor to let
    /// go of it. Changes it committed after revision `released_at` reach
    /// this process's watchers as if written here. Blocking.
    pub fn reopen(&self, released_at: i64, wait: std::time::Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + wait;
        let opened = loop {
            match Self::open_db(&self.inner.path) {
                Err(e) if is_held(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        let _write = self.inner.write.lock().unwrap_or_else(|e| e.into_inner());
        *self.inner.db.write().unwrap_or_else(|e| e.into_inner()) = Some(opened);
        let (batches, _) = self.replay("", released_at + 1)?;
        for b in batches {
            let _ = self.inner.changes.send(Arc::new(b));
        }
        Ok(())
    }

    /// Whether the database is closed for a successor ([`Self::release`]).
    pub fn is_released(&self) -> bool {
        self.inner
            .db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// The open database, or `Unavailable` while released.
    fn db(&self) -> Result<DbGuard<'_>, StoreError> {
        let g = self.inner.db.read().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            return Err(StoreError::Unavailable(RELEASED.into()));
        }
        Ok(DbGuard(g))
    }

    fn revision_of(meta: &impl ReadableTable<&'static str, i64>) -> Result<i64, StoreError> {
        Ok(meta
            .get("revision")
            .map_err(corrupt)?
            .map(|v| v.value())
            .unwrap_or(1))
    }

    /// See [`super::Store::get`].
    pub fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let db = self.db()?;
        let r = db.begin_read().map_err(corrupt)?;
        let kv = r.open_table(KV).map_err(corrupt)?;
        let got = kv.get(key).map_err(corrupt)?;
        got.map(|v| decode(key, v.value())).transpose()
    }

    /// See [`super::Store::range`].
    pub fn range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<(Vec<KeyValue>, i64), StoreError> {
        let db = self.db()?;
        let r = db.begin_read().map_err(corrupt)?;
        let kv = r.open_table(KV).map_err(corrupt)?;
        let meta = r.open_table(META).map_err(corrupt)?;
        let rev = Self::revision_of(&meta)?;
        let start = after.filter(|a| *a >= prefix).unwrap_or(prefix);
        let mut out = Vec::new();
        for item in kv.range::<&str>(start..).map_err(corrupt)? {
            let (k, v) = item.map_err(corrupt)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if after == Some(key) {
                continue;
            }
            out.push(decode(key, v.value())?);
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
        Ok((out, rev))
    }

    /// See [`super::Store::ranges`]: one read transaction, so every
    /// range sees the same revision.
    pub fn ranges(&self, prefixes: &[String]) -> Result<(Vec<Vec<KeyValue>>, i64), StoreError> {
        let db = self.db()?;
        let r = db.begin_read().map_err(corrupt)?;
        let kv = r.open_table(KV).map_err(corrupt)?;
        let meta = r.open_table(META).map_err(corrupt)?;
        let rev = Self::revision_of(&meta)?;
        let mut all = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            let mut out = Vec::new();
            for item in kv.range::<&str>(prefix.as_str()..).map_err(corrupt)? {
                let (k, v) = item.map_err(corrupt)?;
                if !k.value().starts_with(prefix.as_str()) {
                    break;
                }
                out.push(decode(k.value(), v.value())?);
            }
            all.push(out);
        }
        Ok((all, rev))
    }

    /// See [`super::Store::txn`].
    pub fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<TxnOutcome, StoreError> {
        let _write = self.inner.write.lock().unwrap_or_else(|e| e.into_inner());
        let db = self.db()?;
        let mut txn = db.begin_write().map_err(corrupt)?;
        txn.set_durability(if self.inner.durable {
            Durability::Immediate
        } else {
            Durability::None
        });
        let (outcome, batch) = {
            let mut kv = txn.open_table(KV).map_err(corrupt)?;
            let mut meta = txn.open_table(META).map_err(corrupt)?;
            let rev = Self::revision_of(&meta)?;
            let mut holds = true;
            for c in compares {
                let (key, want) = match c {
                    Compare::ModRevision(k, r) => (k, Some(*r)),
                    Compare::Exists(k) => (k, None),
                };
                let now = match kv.get(key.as_str()).map_err(corrupt)? {
                    Some(v) => decode(key, v.value())?.mod_revision,
                    None => 0,
                };
                holds &= match want {
                    Some(r) => now == r,
                    None => now != 0,
                };
            }
            if !holds || ops.is_empty() {
                (
                    TxnOutcome {
                        succeeded: holds,
                        revision: rev,
                    },
                    None,
                )
            } else {
                let next = rev + 1;
                let mut events = Vec::with_capacity(ops.len());
                for op in ops {
                    match op {
                        Op::Put(k, v) => {
                            kv.insert(k.as_str(), encode(next, v).as_slice())
                                .map_err(corrupt)?;
                            events.push(Event::Put(KeyValue {
                                key: k.clone(),
                                value: v.clone(),
                                mod_revision: next,
                            }));
                        }
                        Op::Delete(k) => {
                            if kv.remove(k.as_str()).map_err(corrupt)?.is_some() {
                                events.push(Event::Delete {
                                    key: k.clone(),
                                    mod_revision: next,
                                });
                            }
                        }
                    }
                }
                meta.insert("revision", next).map_err(corrupt)?;
                let mut log = txn.open_table(LOG).map_err(corrupt)?;
                log.insert(next, encode_log(&events).as_slice())
                    .map_err(corrupt)?;
                log.remove(next - LOG_KEEP).map_err(corrupt)?;
                (
                    TxnOutcome {
                        succeeded: true,
                        revision: next,
                    },
                    Some(WatchBatch {
                        revision: next,
                        events,
                    }),
                )
            }
        };
        txn.commit().map_err(corrupt)?;
        if let Some(b) = batch {
            // No receiver is fine: nobody watches yet.
            let _ = self.inner.changes.send(Arc::new(b));
        }
        Ok(outcome)
    }

    /// The logged batches of revisions `from..`, filtered by `prefix`, and
    /// the last revision logged; `Compacted` when `from` is older than the
    /// log.
    fn replay(&self, prefix: &str, from: i64) -> Result<(Vec<WatchBatch>, i64), StoreError> {
        let db = self.db()?;
        let r = db.begin_read().map_err(corrupt)?;
        let log = r.open_table(LOG).map_err(corrupt)?;
        let meta = r.open_table(META).map_err(corrupt)?;
        let rev = Self::revision_of(&meta)?;
        if from <= rev && from > 1 && log.get(from).map_err(corrupt)?.is_none() {
            return Err(StoreError::Compacted(from));
        }
        let mut out = Vec::new();
        for item in log.range(from..).map_err(corrupt)? {
            let (k, v) = item.map_err(corrupt)?;
            let events: Vec<Event> = decode_log(k.value(), v.value())?
                .into_iter()
                .filter(|e| e.key().starts_with(prefix))
                .collect();
            if !events.is_empty() {
                out.push(WatchBatch {
                    revision: k.value(),
                    events,
                });
            }
        }
        Ok((out, rev))
    }

    /// See [`super::Store::watch`].
    pub fn watch(&self, prefix: &str, from: i64) -> Result<WatchStream, StoreError> {
        let mut live = self.inner.changes.subscribe();
        let (backlog, mut last) = self.replay(prefix, from)?;
        let (tx, rx) = mpsc::channel(1024);
        let store = self.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            for b in backlog {
                if tx.send(Ok(b)).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(b) if b.revision <= last => {}
                    Ok(b) => {
                        last = b.revision;
                        let events: Vec<Event> = b
                            .events
                            .iter()
                            .filter(|e| e.key().starts_with(&prefix))
                            .cloned()
                            .collect();
                        if !events.is_empty()
                            && tx
                                .send(Ok(WatchBatch {
                                    revision: b.revision,
                                    events,
                                }))
                                .await
                                .is_err()
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Fell behind the channel: catch up from the log.
                        match store.replay(&prefix, last + 1) {
                            Ok((batches, _)) => {
                                for b in batches {
                                    last = b.revision;
                                    if tx.send(Ok(b)).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Op {
        Op::Put(k.into(), v.as_bytes().to_vec())
    }

    #[tokio::test]
    async fn writes_survive_reopening_and_revisions_count_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let rev = {
            let s = EmbeddedStore::open(&path, true).unwrap();
            let a = s.txn(&[], &[put("/x/a", "1")]).unwrap();
            let b = s.txn(&[], &[put("/x/b", "2"), put("/y/c", "3")]).unwrap();
            assert!(a.succeeded && b.succeeded);
            assert_eq!(b.revision, a.revision + 1);
            b.revision
        };
        let s = EmbeddedStore::open(&path, true).unwrap();
        let (kvs, now) = s.range("/x/", None, None).unwrap();
        assert_eq!(now, rev);
        assert_eq!(
            kvs.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
            ["/x/a", "/x/b"]
        );
        let (page, _) = s.range("/x/", Some("/x/a"), Some(1)).unwrap();
        assert_eq!(page[0].key, "/x/b");
    }

    #[tokio::test]
    async fn compare_and_swap_refuses_a_stale_revision() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(&dir.path().join("s.redb"), true).unwrap();
        let first = s
            .txn(&[Compare::ModRevision("/k".into(), 0)], &[put("/k", "1")])
            .unwrap();
        assert!(first.succeeded);
        let stale = s
            .txn(&[Compare::ModRevision("/k".into(), 0)], &[put("/k", "2")])
            .unwrap();
        assert!(!stale.succeeded);
        assert_eq!(s.get("/k").unwrap().unwrap().value, b"1");
        let ok = s
            .txn(
                &[Compare::ModRevision("/k".into(), first.revision)],
                &[put("/k", "2")],
            )
            .unwrap();
        assert!(ok.succeeded);
        assert!(
            !s.txn(&[Compare::Exists("/nope".into())], &[put("/z", "1")])
                .unwrap()
                .succeeded
        );
    }

    /// A handover: released, the file opens in another handle (the
    /// successor) while calls here answer `Unavailable`; a waiting open
    /// gives up with a clear error while the file is held; after a failed
    /// handover the store reopens and its watchers get what the other
    /// handle wrote meanwhile.
    #[tokio::test]
    async fn release_lets_another_open_and_reopen_replays_its_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let s = EmbeddedStore::open(&path, true).unwrap();
        let r1 = s.txn(&[], &[put("/w/a", "1")]).unwrap().revision;
        let mut w = s.watch("/w/", r1 + 1).unwrap();
        let held = EmbeddedStore::open_waiting(&path, true, std::time::Duration::from_millis(100))
            .unwrap_err();
        assert!(format!("{held:#}").contains("still held"), "{held:#}");
        assert_eq!(s.release().unwrap(), r1);
        assert!(s.is_released());
        assert!(matches!(s.get("/w/a"), Err(StoreError::Unavailable(_))));
        assert!(matches!(
            s.txn(&[], &[put("/w/b", "2")]),
            Err(StoreError::Unavailable(_))
        ));
        let other =
            EmbeddedStore::open_waiting(&path, true, std::time::Duration::from_secs(1)).unwrap();
        assert_eq!(other.get("/w/a").unwrap().unwrap().value, b"1");
        let r2 = other.txn(&[], &[put("/w/c", "3")]).unwrap().revision;
        drop(other);
        s.reopen(r1, std::time::Duration::from_secs(1)).unwrap();
        assert!(!s.is_released());
        let b = w.recv().await.unwrap().unwrap();
        assert_eq!(b.revision, r2);
        assert_eq!(s.get("/w/c").unwrap().unwrap().value, b"3");
    }

    #[tokio::test]
    async fn a_watch_replays_from_its_revision_then_follows() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(&dir.path().join("s.redb"), true).unwrap();
        let r1 = s.txn(&[], &[put("/w/a", "1")]).unwrap().revision;
        s.txn(&[], &[put("/other", "1")]).unwrap();
        let mut w = s.watch("/w/", r1).unwrap();
        let b = w.recv().await.unwrap().unwrap();
        assert_eq!((b.revision, b.events.len()), (r1, 1));
        let r3 = s.txn(&[], &[Op::Delete("/w/a".into())]).unwrap().revision;
        let b = w.recv().await.unwrap().unwrap();
        assert_eq!(b.revision, r3);
        assert!(matches!(&b.events[0], Event::Delete { key, .. } if key == "/w/a"));
    }
}
