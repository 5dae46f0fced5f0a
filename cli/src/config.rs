//! Config loading for every service: a TOML file (optional), then `MERIDIAN_<SERVICE>__*`
//! environment overrides, applied here and nowhere else, then strict deserialization so a typo in
//! either place is an error that names the key.
//!
//! An override names a key path with `__` between levels: `MERIDIAN_BROKER__STORE__FLUSH_MODE=sync`
//! sets `[store] flush_mode = "sync"` of the broker config. Values are read as TOML (numbers,
//! booleans, quoted strings) and fall back to a plain string.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;

/// Loads a config of type `T` for `service` from `path` (if given) and the environment.
pub fn load<T: DeserializeOwned>(service: &str, path: Option<&Path>) -> Result<T> {
    let table = load_table(service, path)?;
    from_table(service, path, table)
}

/// The config table of `service` from `path` (if given) with the environment's overrides applied.
pub fn load_table(service: &str, path: Option<&Path>) -> Result<toml::Table> {
    let mut table = match path {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
            text.parse::<toml::Table>()
                .with_context(|| format!("config file {} is not valid TOML", path.display()))?
        }
        None => toml::Table::new(),
    };
    let prefix = format!("MERIDIAN_{}__", service.to_ascii_uppercase());
    apply_overrides(&mut table, &prefix, std::env::vars())?;
    Ok(table)
}

/// Deserializes a table [`load_table`] read, naming the file and the overrides in the error.
pub fn from_table<T: DeserializeOwned>(service: &str, path: Option<&Path>, table: toml::Table) -> Result<T> {
    let prefix = format!("MERIDIAN_{}__", service.to_ascii_uppercase());
    let source = path.map_or_else(|| "defaults".to_owned(), |path| path.display().to_string());
    T::deserialize(toml::Value::Table(table))
        .with_context(|| format!("invalid {service} config ({source} with {prefix}* overrides)"))
}

/// Applies every `PREFIX_KEY__SUBKEY=value` variable to `table`.
pub fn apply_overrides(
    table: &mut toml::Table,
    prefix: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<()> {
    let mut overrides: Vec<(String, String)> = vars.into_iter().filter(|(name, _)| name.starts_with(prefix)).collect();
    overrides.sort();
    for (name, raw) in overrides {
        let path: Vec<String> = name[prefix.len()..].split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            bail!("environment variable {name} has an empty key segment; use {prefix}SECTION__KEY");
        }
        let value = format!("value = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut parsed| parsed.remove("value"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let (last, parents) = path.split_last().expect("at least one segment");
        let mut current = &mut *table;
        for segment in parents {
            let entry = current
                .entry(segment.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            current = match entry {
                toml::Value::Table(inner) => inner,
                _ => bail!("environment variable {name}: {segment} is not a table in the config"),
            };
        }
        current.insert(last.clone(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_broker::BrokerConfig;
    use meridian_broker::store::FlushMode;

    #[test]
    fn environment_overrides_nested_keys_and_typos_are_errors() {
        let mut table: toml::Table = "broker_name = \"b1\"\n[store]\nsegment_size = 1048576".parse().unwrap();
        let vars = [
            ("MERIDIAN_BROKER__STORE__FLUSH_MODE".to_owned(), "sync".to_owned()),
            ("MERIDIAN_BROKER__CONSUMER_EXPIRY_MS".to_owned(), "5000".to_owned()),
            ("MERIDIAN_OTHER__X".to_owned(), "1".to_owned()),
        ];
        apply_overrides(&mut table, "MERIDIAN_BROKER__", vars).unwrap();
        let config = BrokerConfig::deserialize(toml::Value::Table(table.clone())).unwrap();
        assert_eq!(config.store.flush_mode, FlushMode::Sync);
        assert_eq!(config.store.segment_size, 1 << 20);
        assert_eq!(config.consumer_expiry_ms, 5000);
        assert_eq!(config.broker_name, "b1");

        apply_overrides(
            &mut table,
            "MERIDIAN_BROKER__",
            [("MERIDIAN_BROKER__STORE__FLUSH_MOD".to_owned(), "sync".to_owned())],
        )
        .unwrap();
        let error = BrokerConfig::deserialize(toml::Value::Table(table))
            .unwrap_err()
            .to_string();
        assert!(error.contains("flush_mod"), "{error}");
    }

    use serde::Deserialize;

    #[test]
    fn the_example_broker_config_loads_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/broker.toml");
        let config: BrokerConfig = load("example", Some(&path)).unwrap();
        assert_eq!(config.store.flush_mode, FlushMode::Sync);
        config.validate().unwrap();
    }

    #[test]
    fn the_example_broker_group_configs_load_and_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/group");
        let members: Vec<BrokerConfig> = ["a-0", "a-1", "a-2"]
            .iter()
            .map(|name| load("example", Some(&dir.join(format!("{name}.toml")))).unwrap())
            .collect();
        for member in &members {
            member.validate().unwrap();
            assert_eq!(
                (member.broker_name.as_str(), member.replication.replicas),
                ("broker-a", 3)
            );
        }
        let idcs: Vec<&str> = members.iter().map(|member| member.idc.as_str()).collect();
        assert_eq!(idcs, ["dc1", "dc1", "dc2"]);
        let nameserver: meridian_nameserver::NameserverConfig =
            load("example", Some(&dir.join("nameserver.toml"))).unwrap();
        nameserver.validate().unwrap();
        assert_eq!(members[0].nameservers, [nameserver.listen.to_string()]);
    }

    #[test]
    fn the_example_nameserver_config_loads_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/nameserver.toml");
        let config: meridian_nameserver::NameserverConfig = load("example", Some(&path)).unwrap();
        assert_eq!((config.node_id, config.members.len()), (3, 3));
        config.validate().unwrap();
    }
}
