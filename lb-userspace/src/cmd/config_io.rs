//! `xlb config import` / `xlb config export`: move resources between a
//! YAML file (the same shape as the config file's `l7.routes`,
//! `l7.upstreams`, `l7.certificates`, `l7.rate_limits`, `l4.vips`) and the
//! store that the node config's `config_store:` names.
use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

use crate::config::{
    node::StoreKind,
    resource::{Context, Kind},
    Config,
};
use crate::store::{
    keys::Layout,
    resources::{Resources, Write, WriteError},
    Store,
};

async fn open(config: &Config) -> anyhow::Result<Resources> {
    let kind = config.config_store.effective_kind(config.admin.is_some());
    if kind == StoreKind::File {
        anyhow::bail!("config_store.kind is `file`: the resources are in the config file already");
    }
    let store = Store::open(&config.config_store, kind, config.instance.as_str())
        .await?
        .context("no store")?;
    Ok(Resources {
        store,
        layout: Layout::new(&config.config_store.prefix),
        node: Context::of_node(config),
    })
}

/// The list at `l7.routes` (etc.) of a YAML document, as JSON.
fn section(doc: &Value, kind: Kind) -> Option<&Vec<Value>> {
    let mut v = doc;
    for part in kind.file_section().split('.') {
        v = v.get(part)?;
    }
    v.as_array()
}

/// Writes every resource of `file` into the store; returns how many. One
/// transaction per resource, in an order where what is referenced comes
/// first; stops at the first refused resource, naming its field path.
pub async fn import(config: &Config, file: &Path) -> anyhow::Result<usize> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("{}: not YAML", file.display()))?;
    let doc = serde_json::to_value(yaml)
        .with_context(|| format!("{}: not representable as JSON", file.display()))?;
    let res = open(config).await?;
    let mut n = 0;
    for kind in Kind::ALL {
        for (i, item) in section(&doc, kind).into_iter().flatten().enumerate() {
            let here = format!("{}[{i}]", kind.file_section());
            let Some(id) = item.get(kind.id_field()).and_then(Value::as_str) else {
                anyhow::bail!("{}: {here}.{}: missing", file.display(), kind.id_field());
            };
            let w = Write::Put {
                kind,
                id: id.to_string(),
                value: item.clone(),
                if_match: None,
            };
            match res.write(&[w]).await {
                Ok(_) => n += 1,
                Err(WriteError::Invalid { issues, .. }) => {
                    let lines: Vec<String> = issues
                        .iter()
                        .map(|is| {
                            format!(
                                "{}: {here}{}{}: {}",
                                file.display(),
                                if is.path.is_empty() || is.path.starts_with('[') {
                                    ""
                                } else {
                                    "."
                                },
                                is.path,
                                is.message
                            )
                        })
                        .collect();
                    anyhow::bail!(
                        "{}\n({n} resources imported before this one)",
                        lines.join("\n")
                    );
                }
                Err(e) => anyhow::bail!(
                    "{}: {here}: {e} ({n} resources imported before this one)",
                    file.display()
                ),
            }
        }
    }
    Ok(n)
}

/// Every resource in the store, as YAML in the config file's shape.
pub async fn export(config: &Config) -> anyhow::Result<String> {
    let res = open(config).await?;
    let mut l7 = serde_json::Map::new();
    let mut l4 = serde_json::Map::new();
    for kind in Kind::ALL {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, next) = res.list(kind, after.as_deref(), 1000).await?;
            items.extend(page.into_iter().map(|s| s.value));
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        if items.is_empty() {
            continue;
        }
        let (map, name) = match kind.file_section().split_once('.') {
            Some(("l4", name)) => (&mut l4, name),
            Some((_, name)) => (&mut l7, name),
            None => continue,
        };
        map.insert(name.to_string(), Value::Array(items));
    }
    let mut doc = serde_json::Map::new();
    if !l7.is_empty() {
        doc.insert("l7".into(), Value::Object(l7));
    }
    if !l4.is_empty() {
        doc.insert("l4".into(), Value::Object(l4));
    }
    Ok(serde_yaml_ng::to_string(&Value::Object(doc))?)
}
