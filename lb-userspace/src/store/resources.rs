//! Resource writes and reads over a [`Store`]: each write checked by the
//! same code as `xlb check` (`config::resource`), then made in one
//! transaction together with its index and reference keys, guarded by a
//! compare-and-swap on the resource's revision (and on the existence of
//! what it references), so that concurrent writers through several nodes
//! never leave the indexes out of step.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{keys::Layout, Compare, KeyValue, Op, Store, StoreError};
use crate::config::{
    l7::RouteConfig,
    resource::{self, Context, Kind},
    Issue,
};
use crate::l7::router::HostSlot;

/// How many times a write is retried when another writer changed what it
/// read (without `If-Match`).
const CAS_RETRIES: usize = 8;

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("invalid {kind}: {}", issues.iter().map(|i| format!("{}: {}", if i.path.is_empty() { "(body)" } else { &i.path }, i.message)).collect::<Vec<_>>().join("; "))]
    Invalid {
        kind: &'static str,
        issues: Vec<Issue>,
    },
    #[error("no {0} named `{1}`")]
    NotFound(&'static str, String),
    /// `If-Match` named another revision than the current one.
    #[error("{kind} `{id}` is at revision {current}, not {expected}")]
    Precondition {
        kind: &'static str,
        id: String,
        current: i64,
        expected: i64,
    },
    /// Deleting a resource that routes still reference.
    #[error("{kind} `{id}` is referenced by routes {routes:?}")]
    Referenced {
        kind: &'static str,
        id: String,
        routes: Vec<String>,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Other writers kept changing the same keys.
    #[error("the resource kept changing under concurrent writes; try again")]
    Contended,
}

/// One write of a batch.
#[derive(Debug, Clone)]
pub enum Write {
    Put {
        kind: Kind,
        id: String,
        value: Value,
        if_match: Option<i64>,
    },
    Delete {
        kind: Kind,
        id: String,
        if_match: Option<i64>,
    },
}

/// A stored resource.
#[derive(Debug, Clone)]
pub struct Stored {
    pub value: Value,
    pub revision: i64,
}

/// Resource reads and writes of one configuration.
#[derive(Debug, Clone)]
pub struct Resources {
    pub store: Store,
    pub layout: Layout,
    /// The node's own settings, the frame a resource is checked in.
    pub node: Context,
}

/// The store as a batch sees it: what it read, with the batch's own
/// earlier writes laid over it.
struct View<'a> {
    res: &'a Resources,
    overlay: BTreeMap<String, Option<Vec<u8>>>,
    /// Revisions read, compared in the transaction.
    read: BTreeMap<String, i64>,
    exists: BTreeSet<String>,
}

impl<'a> View<'a> {
    async fn get(&mut self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(v.clone().map(|value| KeyValue {
                key: key.to_string(),
                value,
                mod_revision: -1,
            }));
        }
        let got = self.res.store.get(key).await?;
        self.read
            .entry(key.to_string())
            .or_insert(got.as_ref().map_or(0, |k| k.mod_revision));
        Ok(got)
    }

    async fn keys(&self, prefix: &str) -> Result<BTreeSet<String>, StoreError> {
        let (kvs, _) = self.res.store.range(prefix, None, None).await?;
        let mut keys: BTreeSet<String> = kvs.into_iter().map(|k| k.key).collect();
        for (k, v) in self.overlay.range(prefix.to_string()..) {
            if !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(_) => keys.insert(k.clone()),
                None => keys.remove(k),
            };
        }
        Ok(keys)
    }

    fn put(&mut self, key: String, value: Vec<u8>) {
        self.overlay.insert(key, Some(value));
    }

    fn delete(&mut self, key: String) {
        self.overlay.insert(key, None);
    }

    async fn resource<T: serde::de::DeserializeOwned>(
        &mut self,
        kind: Kind,
        id: &str,
    ) -> Result<Option<T>, WriteError> {
        let key = self.res.layout.resource(kind, id);
        let Some(kv) = self.get(&key).await? else {
            return Ok(None);
        };
        let value: Value = serde_json::from_slice(&kv.value)
            .map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))?;
        Ok(resource::parse(&value).ok())
    }
}

fn invalid(kind: Kind, issues: Vec<Issue>) -> WriteError {
    WriteError::Invalid {
        kind: kind.singular(),
        issues,
    }
}

/// The host slots, upstream and rules of a route: its index entries.
fn route_keys(layout: &Layout, r: &RouteConfig) -> Vec<String> {
    let mut keys: Vec<String> = HostSlot::of_route(&r.hosts)
        .unwrap_or_default()
        .iter()
        .map(|s| layout.slot_entry(s, &r.id))
        .collect();
    if let Some(u) = &r.upstream {
        keys.push(layout.ref_entry(Kind::Upstreams, u, &r.id));
    }
    for n in &r.rate_limits {
        keys.push(layout.ref_entry(Kind::RateLimits, n, &r.id));
    }
    keys
}

impl Resources {
    /// One resource.
    pub async fn get(&self, kind: Kind, id: &str) -> Result<Option<Stored>, StoreError> {
        let key = self.layout.resource(kind, id);
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(None);
        };
        Ok(Some(Stored {
            value: serde_json::from_slice(&kv.value)
                .map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))?,
            revision: kv.mod_revision,
        }))
    }

    /// Up to `limit` resources of `kind` with ids after `after`, in id
    /// order, and the id to continue after when there may be more.
    pub async fn list(
        &self,
        kind: Kind,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Stored>, Option<String>), StoreError> {
        let prefix = self.layout.kind(kind);
        let after_key = after.map(|a| format!("{prefix}{a}"));
        let (kvs, _) = self
            .store
            .range(&prefix, after_key.as_deref(), Some(limit))
            .await?;
        let next = (kvs.len() == limit)
            .then(|| kvs.last().map(|k| Layout::last_segment(&k.key).to_string()))
            .flatten();
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            out.push(Stored {
                value: serde_json::from_slice(&kv.value)
                    .map_err(|e| StoreError::Corrupt(format!("{}: {e}", kv.key)))?,
                revision: kv.mod_revision,
            });
        }
        Ok((out, next))
    }

    /// Makes `writes` in one transaction; the revision it committed at.
    pub async fn write(&self, writes: &[Write]) -> Result<i64, WriteError> {
        let pinned = writes.iter().any(|w| match w {
            Write::Put { if_match, .. } | Write::Delete { if_match, .. } => if_match.is_some(),
        });
        for _ in 0..CAS_RETRIES {
            let mut view = View {
                res: self,
                overlay: BTreeMap::new(),
                read: BTreeMap::new(),
                exists: BTreeSet::new(),
            };
            for w in writes {
                self.plan(&mut view, w).await?;
            }
            let mut compares: Vec<Compare> = view
                .read
                .iter()
                .map(|(k, r)| Compare::ModRevision(k.clone(), *r))
                .collect();
            compares.extend(view.exists.iter().cloned().map(Compare::Exists));
            let ops: Vec<Op> = view
                .overlay
                .into_iter()
                .map(|(k, v)| match v {
                    Some(v) => Op::Put(k, v),
                    None => Op::Delete(k),
                })
                .collect();
            let outcome = self.store.txn(compares, ops).await?;
            if outcome.succeeded {
                return Ok(outcome.revision);
            }
            if pinned {
                // Someone wrote in between: report the resource's revision
                // now, as a plain read would have.
                for w in writes {
                    let (Write::Put {
                        kind,
                        id,
                        if_match: Some(e),
                        ..
                    }
                    | Write::Delete {
                        kind,
                        id,
                        if_match: Some(e),
                    }) = w
                    else {
                        continue;
                    };
                    let current = self.get(*kind, id).await?.map_or(0, |s| s.revision);
                    if current != *e {
                        return Err(WriteError::Precondition {
                            kind: kind.singular(),
                            id: id.clone(),
                            current,
                            expected: *e,
                        });
                    }
                }
            }
        }
        Err(WriteError::Contended)
    }

    /// Adds the keys of one write to `view`.
    async fn plan(&self, view: &mut View<'_>, w: &Write) -> Result<(), WriteError> {
        let (kind, id, if_match) = match w {
            Write::Put {
                kind, id, if_match, ..
            }
            | Write::Delete { kind, id, if_match } => (*kind, id.as_str(), *if_match),
        };
        if !resource::valid_id(id) {
            return Err(invalid(
                kind,
                vec![Issue {
                    path: kind.id_field().into(),
                    message: format!("`{id}` is not a valid id (1-200 letters, digits, -_.:@)"),
                }],
            ));
        }
        let key = self.layout.resource(kind, id);
        let old = view.get(&key).await?;
        if let Some(expected) = if_match {
            let current = old.as_ref().map_or(0, |k| k.mod_revision);
            if current != expected && current != -1 {
                return Err(WriteError::Precondition {
                    kind: kind.singular(),
                    id: id.to_string(),
                    current,
                    expected,
                });
            }
        }
        let old_route: Option<RouteConfig> = match (&old, kind) {
            (Some(kv), Kind::Routes) => serde_json::from_slice::<Value>(&kv.value)
                .ok()
                .and_then(|v| resource::parse(&v).ok()),
            _ => None,
        };
        if let Some(r) = &old_route {
            for k in route_keys(&self.layout, r) {
                view.delete(k);
            }
        }
        match w {
            Write::Delete { .. } => {
                if old.is_none() {
                    return Err(WriteError::NotFound(kind.singular(), id.to_string()));
                }
                if matches!(kind, Kind::Upstreams | Kind::RateLimits) {
                    let refs = view.keys(&self.layout.refs(kind, id)).await?;
                    if !refs.is_empty() {
                        return Err(WriteError::Referenced {
                            kind: kind.singular(),
                            id: id.to_string(),
                            routes: refs
                                .iter()
                                .take(10)
                                .map(|k| Layout::last_segment(k).to_string())
                                .collect(),
                        });
                    }
                }
                view.delete(key);
            }
            Write::Put { value, .. } => {
                let value = resource::with_id(kind, id, value.clone())
                    .map_err(|i| invalid(kind, vec![i]))?;
                let bytes =
                    serde_json::to_vec(&value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                if kind == Kind::Routes {
                    let route: RouteConfig =
                        resource::parse(&value).map_err(|i| invalid(kind, vec![i]))?;
                    self.check_route(view, &route).await?;
                    // A host index entry carries the route itself, so that
                    // a lazy lookup of a host is one read (the index range)
                    // rather than the range and then one get per route.
                    let slots = HostSlot::of_route(&route.hosts).unwrap_or_default().len();
                    for (i, k) in route_keys(&self.layout, &route).into_iter().enumerate() {
                        view.put(k, if i < slots { bytes.clone() } else { Vec::new() });
                    }
                } else {
                    resource::check_alone(kind, &value).map_err(|i| invalid(kind, i))?;
                }
                view.put(key, bytes);
            }
        }
        Ok(())
    }

    /// Checks `route` with what it references and the routes that share
    /// a host with it; records the references as "must exist".
    async fn check_route(
        &self,
        view: &mut View<'_>,
        route: &RouteConfig,
    ) -> Result<(), WriteError> {
        let mut ctx = self.node.clone();
        if let Some(u) = &route.upstream {
            if let Some(up) = view.resource(Kind::Upstreams, u).await? {
                ctx.upstreams.push(up);
                // Written by this batch: nothing to compare.
                let key = self.layout.resource(Kind::Upstreams, u);
                if !view.overlay.contains_key(&key) {
                    view.exists.insert(key);
                }
            }
        }
        for n in &route.rate_limits {
            if let Some(rule) = view.resource(Kind::RateLimits, n).await? {
                ctx.rate_limits.push(rule);
                let key = self.layout.resource(Kind::RateLimits, n);
                if !view.overlay.contains_key(&key) {
                    view.exists.insert(key);
                }
            }
        }
        let mut others = Vec::new();
        if let Ok(slots) = HostSlot::of_route(&route.hosts) {
            for slot in slots {
                for k in view.keys(&self.layout.slot(&slot)).await? {
                    let other = Layout::last_segment(&k).to_string();
                    if other == route.id {
                        continue;
                    }
                    if let Some(r) = view.resource::<RouteConfig>(Kind::Routes, &other).await? {
                        // The other route's own references, so that the
                        // check plans it as it is planned when applied.
                        if let Some(u) = &r.upstream {
                            if !ctx.upstreams.iter().any(|x| &x.id == u) {
                                if let Some(up) = view.resource(Kind::Upstreams, u).await? {
                                    ctx.upstreams.push(up);
                                }
                            }
                        }
                        others.push(r);
                    }
                }
            }
        }
        // Rules the other routes name would be reported against them, not
        // this route: give the check every rule they name.
        for r in &others {
            for n in &r.rate_limits {
                if !ctx.rate_limits.iter().any(|x| &x.name == n) {
                    if let Some(rule) = view.resource(Kind::RateLimits, n).await? {
                        ctx.rate_limits.push(rule);
                    }
                }
            }
        }
        resource::check_route(route, &others, &ctx).map_err(|i| invalid(Kind::Routes, i))
    }
}
