//! The etcd (v3 API) store, for fleets: every node of a fleet reads and
//! watches the same keys, so a write through one node's admin API reaches
//! the others through their watches. Every call has a deadline
//! ([`super::CALL_TIMEOUT`]): while etcd is down, admin writes fail fast
//! and the running proxy keeps what it last applied.
use std::time::Duration;

use etcd_client::{
    Client, Compare as ECompare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::{mpsc, watch};

use super::apply::Applied;

/// Life of a node's announcement without keep-alives: a node that
/// stopped is out of the fleet this long after.
const NODE_TTL: i64 = 10;

use super::{
    prefix_end, Compare, Event, KeyValue, Op, StoreError, TxnOutcome, WatchBatch, WatchStream,
    CALL_TIMEOUT,
};

/// A connection to an etcd cluster (cheap to clone: one shared channel).
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Runs `fut` with the call deadline.
async fn timed<T>(
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(r) => r.map_err(unavailable),
        Err(_) => Err(StoreError::Unavailable(format!(
            "etcd did not answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

fn kv_of(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: kv
            .key_str()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?
            .to_string(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
    })
}

impl EtcdStore {
    /// Connects to `endpoints`. The channel reconnects by itself after an
    /// outage; the first connection must succeed.
    pub async fn connect(endpoints: &[String]) -> anyhow::Result<EtcdStore> {
        if endpoints.is_empty() {
            anyhow::bail!("config_store.endpoints: etcd needs at least one endpoint");
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(std::time::Duration::from_secs(2), CALL_TIMEOUT)
            .with_keep_alive_while_idle(true);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| anyhow::anyhow!("config_store: etcd at {endpoints:?}: {e}"))?;
        Ok(EtcdStore { client })
    }

    /// See [`super::Store::get`].
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = timed(kv.get(key, None)).await?;
        resp.kvs().first().map(kv_of).transpose()
    }

    /// See [`super::Store::range`].
    pub async fn range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<(Vec<KeyValue>, i64), StoreError> {
        let mut kv = self.client.kv_client();
        // After `after`: from the key that follows it (`after` + NUL).
        let start = match after.filter(|a| *a >= prefix) {
            Some(a) => format!("{a}\0"),
            None => prefix.to_string(),
        };
        let mut options = GetOptions::new()
            .with_range(prefix_end(prefix))
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        if let Some(l) = limit {
            options = options.with_limit(l as i64);
        }
        let resp = timed(kv.get(start, Some(options))).await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        let kvs = resp.kvs().iter().map(kv_of).collect::<Result<_, _>>()?;
        Ok((kvs, rev))
    }

    /// See [`super::Store::ranges`]: one transaction of range reads, one
    /// round trip at one revision.
    pub async fn ranges(
        &self,
        prefixes: &[String],
    ) -> Result<(Vec<Vec<KeyValue>>, i64), StoreError> {
        let mut kv = self.client.kv_client();
        let reads: Vec<TxnOp> = prefixes
            .iter()
            .map(|p| {
                TxnOp::get(
                    p.as_str(),
                    Some(
                        GetOptions::new()
                            .with_range(prefix_end(p))
                            .with_sort(SortTarget::Key, SortOrder::Ascend),
                    ),
                )
            })
            .collect();
        let resp = timed(kv.txn(Txn::new().and_then(reads))).await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        let mut all = Vec::with_capacity(prefixes.len());
        for op in resp.op_responses() {
            let TxnOpResponse::Get(get) = op else {
                return Err(StoreError::Corrupt(
                    "a read transaction answered a write".into(),
                ));
            };
            all.push(get.kvs().iter().map(kv_of).collect::<Result<_, _>>()?);
        }
        if all.len() != prefixes.len() {
            return Err(StoreError::Corrupt(
                "a read transaction lost a range".into(),
            ));
        }
        Ok((all, rev))
    }

    /// See [`super::Store::txn`].
    pub async fn txn(
        &self,
        compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> Result<TxnOutcome, StoreError> {
        let mut kv = self.client.kv_client();
        let when: Vec<ECompare> = compares
            .into_iter()
            .map(|c| match c {
                Compare::ModRevision(k, r) => ECompare::mod_revision(k, CompareOp::Equal, r),
                Compare::Exists(k) => ECompare::create_revision(k, CompareOp::Greater, 0),
            })
            .collect();
        let then: Vec<TxnOp> = ops
            .into_iter()
            .map(|o| match o {
                Op::Put(k, v) => TxnOp::put(k, v, None),
                Op::Delete(k) => TxnOp::delete(k, None),
            })
            .collect();
        let resp = timed(kv.txn(Txn::new().when(when).and_then(then))).await?;
        Ok(TxnOutcome {
            succeeded: resp.succeeded(),
            revision: resp.header().map_or(0, |h| h.revision()),
        })
    }

    /// See [`super::Store::watch`]. The stream ends with an error when etcd
    /// goes away (the caller resumes from its last revision) or when `from`
    /// was compacted (the caller re-reads everything).
    pub async fn watch(&self, prefix: &str, from: i64) -> Result<WatchStream, StoreError> {
        let mut wc = self.client.watch_client();
        let options = WatchOptions::new()
            .with_range(prefix_end(prefix))
            .with_start_revision(from);
        let mut stream = timed(wc.watch(prefix, Some(options))).await?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let msg = match stream.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        let _ = tx
                            .send(Err(StoreError::Unavailable("etcd ended the watch".into())))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(unavailable(e))).await;
                        return;
                    }
                };
                if msg.compact_revision() > 0 {
                    let _ = tx.send(Err(StoreError::Compacted(from))).await;
                    return;
                }
                if msg.canceled() {
                    let _ = tx
                        .send(Err(StoreError::Unavailable(
                            "etcd cancelled the watch".into(),
                        )))
                        .await;
                    return;
                }
                // One response may carry several revisions: group by
                // revision so that each batch is one transaction.
                let mut batches: Vec<WatchBatch> = Vec::new();
                for ev in msg.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let Ok(kv) = kv_of(kv) else { continue };
                    let rev = kv.mod_revision;
                    let event = match ev.event_type() {
                        EventType::Put => Event::Put(kv),
                        EventType::Delete => Event::Delete {
                            key: kv.key,
                            mod_revision: rev,
                        },
                    };
                    match batches.last_mut() {
                        Some(b) if b.revision == rev => b.events.push(event),
                        _ => batches.push(WatchBatch {
                            revision: rev,
                            events: vec![event],
                        }),
                    }
                }
                for b in batches {
                    if tx.send(Ok(b)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// Announces this node under `key` (leased: it disappears
    /// [`NODE_TTL`] seconds after the node stops), with the revision of
    /// the resources it has applied, until the task is aborted. After an
    /// outage the lease is granted again.
    ///
    /// `lease` carries the id of the lease in force (0 while there is
    /// none), so that other keys of this node (its health verdicts) can be
    /// bound to the same lease and vanish with the node.
    pub async fn announce(
        self,
        key: String,
        mut applied: watch::Receiver<Applied>,
        lease_out: watch::Sender<i64>,
    ) {
        loop {
            let mut c = self.client.clone();
            let lease = match timed(c.lease_grant(NODE_TTL, None)).await {
                Ok(l) => l.id(),
                Err(_) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Ok((mut keeper, mut acks)) = timed(c.lease_keep_alive(lease)).await else {
                continue;
            };
            let mut tick = tokio::time::interval(Duration::from_secs((NODE_TTL / 3) as u64));
            let mut last = -1;
            let mut shared = false;
            loop {
                let now = applied.borrow_and_update().resources;
                if now != last {
                    let put = c.put(
                        key.as_str(),
                        now.to_string(),
                        Some(PutOptions::new().with_lease(lease)),
                    );
                    if timed(put).await.is_err() {
                        break;
                    }
                    last = now;
                }
                // Only once the node key exists: a vote must never be
                // live while its node is not.
                if !shared {
                    lease_out.send_replace(lease);
                    shared = true;
                }
                tokio::select! {
                    r = applied.changed() => if r.is_err() { return },
                    _ = tick.tick() => {
                        if timed(keeper.keep_alive()).await.is_err() {
                            break;
                        }
                        match tokio::time::timeout(super::CALL_TIMEOUT, acks.message()).await {
                            Ok(Ok(Some(ack))) if ack.ttl() > 0 => {}
                            _ => break,
                        }
                    }
                }
            }
            lease_out.send_replace(0);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Writes `value` under `key`, bound to `lease` (gone when it expires).
    pub async fn put_leased(&self, key: &str, value: &str, lease: i64) -> Result<(), StoreError> {
        let mut kv = self.client.kv_client();
        timed(kv.put(key, value, Some(PutOptions::new().with_lease(lease)))).await?;
        Ok(())
    }

    /// Revokes `lease`: every key bound to it is deleted at once (a node
    /// leaving the fleet on purpose, rather than after its TTL).
    pub async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        let mut c = self.client.clone();
        timed(c.lease_revoke(lease)).await?;
        Ok(())
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let mut kv = self.client.kv_client();
        timed(kv.delete(key, None)).await?;
        Ok(())
    }

    /// Whether etcd answers a status call now.
    pub async fn healthy(&self) -> bool {
        let mut c = self.client.clone();
        timed(c.status()).await.is_ok()
    }
}
