//! `meridian cluster up|down|kill|restart` and the process view of `meridian cluster status`: a
//! whole cluster (nameservers, broker groups, archivers, tracer, query service, console) as separate `meridian` processes
//! on this machine, described by one TOML file (`examples/two-idc.toml`).
//!
//! [`plan`] turns a [`ClusterSpec`] into one [`Node`] per process and checks it before anything
//! starts (duplicate addresses, unknown IDCs, a group without exactly one master, and every
//! generated config through its service's own validation). `up` writes each node's config, data
//! dir, log and pid file under the cluster dir (`DIR/<node>/`), keeps a copy of the spec as
//! `DIR/cluster.toml` (what `down`, `kill`, `restart` and `status` read), starts the processes
//! detached (their own session, so they outlive the CLI) and waits for each to be healthy.

//! Start reading at [`commands`]; [`spec`] → [`plan`] → [`processes`], [`status`] for
//! `cluster status`, and [`verify`] for `cluster verify` (replicas compared record by record).

mod commands;
mod plan;
mod processes;
mod spec;
mod status;
mod verify;

pub use commands::{DirArgs, DownArgs, KillArgs, RestartArgs, UpArgs, down, kill, restart, up};
pub use plan::exists;
pub use status::process_view;
pub use verify::{VerifyArgs, verify};

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use meridian_broker::BrokerConfig;
    use meridian_nameserver::NameserverConfig;
    use meridian_query::QueryServiceConfig;
    use meridian_tracer::TracerConfig;
    use serde::Deserialize;

    use super::plan::*;
    use super::spec::*;

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
    }

    fn example_plan(name: &str) -> Plan {
        let path = examples().join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        plan(
            &parse_spec(&text, name).unwrap(),
            Path::new("/tmp/meridian-cluster-test"),
        )
        .unwrap()
    }

    #[test]
    fn the_example_specs_plan_valid_clusters() {
        let one = example_plan("one-node.toml");
        let kinds: Vec<Kind> = one.nodes.iter().map(|node| node.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Nameserver,
                Kind::Broker,
                Kind::Archiver,
                Kind::Tracer,
                Kind::Query,
                Kind::Ui
            ]
        );

        let one_idc = example_plan("one-idc.toml");
        assert_eq!(one_idc.nodes.iter().filter(|node| node.kind == Kind::Broker).count(), 3);

        let two = example_plan("two-idc.toml");
        let count = |kind: Kind| two.nodes.iter().filter(|node| node.kind == kind).count();
        assert_eq!(
            (
                count(Kind::Nameserver),
                count(Kind::Broker),
                count(Kind::Archiver),
                count(Kind::Tracer),
                count(Kind::Query),
                count(Kind::Ui)
            ),
            (3, 6, 6, 1, 1, 1)
        );
        // The console reads every nameserver-, broker-, tracer- and query-HTTP address of the plan.
        let ui = two.nodes.iter().find(|node| node.kind == Kind::Ui).unwrap();
        let console: crate::ui_cmd::UiConfig = toml::Value::Table(ui.config.clone().unwrap()).try_into().unwrap();
        assert_eq!(console.nameserver_http.as_deref(), Some("127.0.0.11:8080"));
        assert_eq!(console.broker_http.as_ref().map(Vec::len), Some(6));
        assert_eq!(console.tracer_http.as_deref(), Some("127.0.0.41:8090"));
        assert_eq!(console.query_http.as_deref(), Some("127.0.0.51:8095"));
        assert_eq!(console.listen, Some("127.0.0.61:8088".parse().unwrap()));
        let idcs: BTreeSet<&str> = two.nodes.iter().map(|node| node.idc.as_str()).collect();
        assert_eq!(idcs, BTreeSet::from(["dc1", "dc2", "witness"]));
        // Each group: the master and a slave in one IDC, a slave in the other.
        for group in ["broker-a", "broker-b"] {
            let members: Vec<&Node> = two
                .nodes
                .iter()
                .filter(|node| node.kind == Kind::Broker && node.group.as_deref() == Some(group))
                .collect();
            let master = members.iter().find(|node| node.master).unwrap();
            let beside = members.iter().filter(|node| node.idc == master.idc).count();
            assert_eq!((members.len(), beside), (3, 2), "{group}");
        }
        // Masters start before any slave.
        let first_slave = two
            .nodes
            .iter()
            .position(|node| node.kind == Kind::Broker && !node.master)
            .unwrap();
        assert!(
            two.nodes[..first_slave]
                .iter()
                .filter(|node| node.kind == Kind::Broker)
                .all(|node| node.master)
        );
        // The generated configs are what the services load.
        let broker = two.nodes.iter().find(|node| node.name == "a-0").unwrap();
        let config = BrokerConfig::deserialize(toml::Value::Table(broker.config.clone().unwrap())).unwrap();
        assert_eq!(config.nameservers.len(), 3);
        assert_eq!(config.replication.replicas, 3);
        assert_eq!(config.data_dir, Path::new("/tmp/meridian-cluster-test/a-0/data"));
    }

    #[test]
    fn the_deploy_configs_load_and_validate_as_each_services_config() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        for dir in ["k8s", "systemd"] {
            for entry in std::fs::read_dir(deploy.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if !name.ends_with(".toml") {
                    continue;
                }
                let result = if name.starts_with("nameserver") {
                    crate::config::load::<NameserverConfig>("deploy", Some(&path))
                        .and_then(|config| Ok(config.validate()?))
                } else if name.starts_with("broker") {
                    crate::config::load::<BrokerConfig>("deploy", Some(&path)).and_then(|config| Ok(config.validate()?))
                } else if name.starts_with("tracer") {
                    crate::config::load::<TracerConfig>("deploy", Some(&path)).and_then(|config| Ok(config.validate()?))
                } else if name.starts_with("query") {
                    crate::config::load::<QueryServiceConfig>("deploy", Some(&path))
                        .and_then(|config| config.query.validate().map_err(anyhow::Error::msg))
                } else if name.starts_with("ui") {
                    std::fs::read_to_string(&path)
                        .map_err(anyhow::Error::from)
                        .and_then(|text| Ok(toml::from_str::<crate::ui_cmd::UiConfig>(&text)?))
                        .and_then(|config| config.validate())
                } else {
                    panic!("deploy/{dir}/{name}: no service config of that name");
                };
                result.unwrap_or_else(|error| panic!("deploy/{dir}/{name}: {error:#}"));
            }
        }
    }

    const GOOD: &str = r#"
idcs = ["dc1", "dc2"]
[[nameservers]]
id = 1
idc = "dc1"
listen = "127.0.0.11:7800"
http = "127.0.0.11:8080"
[[broker_groups]]
name = "broker-a"
ack_policy = "idc_safe"
[[broker_groups.members]]
name = "a-0"
role = "master"
idc = "dc1"
listen = "127.0.0.21:7911"
http = "127.0.0.21:8081"
[[broker_groups.members]]
name = "a-1"
role = "slave"
idc = "dc2"
listen = "127.0.0.22:7911"
http = "127.0.0.22:8081"
"#;

    fn problems(text: &str) -> String {
        let spec = parse_spec(text, "test").unwrap();
        plan(&spec, Path::new("/tmp/x")).unwrap_err().to_string()
    }

    #[test]
    fn bad_specs_are_refused_with_every_reason() {
        plan(&parse_spec(GOOD, "good").unwrap(), Path::new("/tmp/x")).unwrap();

        let duplicate = GOOD.replace("127.0.0.22:8081", "127.0.0.21:7911");
        let error = problems(&duplicate);
        assert!(
            error.contains("duplicate port: a-1 http and a-0 listen both use 127.0.0.21:7911"),
            "{error}"
        );
        assert!(error.contains("nothing was started"), "{error}");
        let any_ip = GOOD.replace("127.0.0.22:8081", "0.0.0.0:8080");
        assert!(
            problems(&any_ip).contains("duplicate port"),
            "0.0.0.0 clashes with every address"
        );

        let unknown = GOOD.replace("idc = \"dc2\"", "idc = \"dc3\"");
        let error = problems(&unknown);
        assert!(
            error.contains("broker \"a-1\" of broker group \"broker-a\" is in IDC \"dc3\", which is not in idcs"),
            "{error}"
        );

        let masterless = GOOD.replace("role = \"master\"", "role = \"slave\"");
        let error = problems(&masterless);
        assert!(error.contains("broker group \"broker-a\" has no master"), "{error}");

        let two_masters = GOOD.replace("role = \"slave\"", "role = \"master\"");
        assert!(problems(&two_masters).contains("has 2 masters (a-0, a-1)"));

        let one_idc = GOOD.replace("idc = \"dc2\"\nlisten", "idc = \"dc1\"\nlisten");
        assert!(problems(&one_idc).contains("no member is outside the master's IDC"));

        let bad_policy = GOOD.replace("idc_safe", "most");
        assert!(problems(&bad_policy).contains("ack_policy \"most\" is not one of"));

        // A typo in an override is caught by the service's own config.
        let typo = format!("{GOOD}\n[overrides.broker.store]\nflush_mod = \"sync\"\n");
        let error = problems(&typo);
        assert!(error.contains("flush_mod"), "{error}");

        // Several problems are reported together.
        let both = unknown.replace("127.0.0.22:8081", "127.0.0.21:7911");
        assert!(problems(&both).contains("2 problem(s)"));

        let unknown_key = format!("{GOOD}\nbrokers = 3\n");
        let error = format!("{:#}", parse_spec(&unknown_key, "typo.toml").unwrap_err());
        assert!(error.contains("brokers"), "{error}");
    }

    #[test]
    fn overrides_merge_into_tables_from_the_cluster_to_the_member() {
        let text = format!(
            "{}\n[overrides.broker]\nheartbeat_interval_ms = 200\n[overrides.broker.store]\nsegment_size = 67108864\n",
            GOOD.replace(
                "http = \"127.0.0.22:8081\"",
                "http = \"127.0.0.22:8081\"\noverrides = { advertise_addr = \"127.0.0.99:1\", store = { flush_mode = \"sync\" } }"
            )
        );
        let plan = plan(&parse_spec(&text, "test").unwrap(), Path::new("/tmp/x")).unwrap();
        let config = |name: &str| {
            let node = plan.nodes.iter().find(|node| node.name == name).unwrap();
            BrokerConfig::deserialize(toml::Value::Table(node.config.clone().unwrap())).unwrap()
        };
        let (a0, a1) = (config("a-0"), config("a-1"));
        assert_eq!((a0.heartbeat_interval_ms, a0.store.segment_size), (200, 64 << 20));
        assert_eq!(a1.advertise_addr.as_deref(), Some("127.0.0.99:1"));
        assert_eq!(
            a1.store.segment_size,
            64 << 20,
            "a member's table merges, it does not replace"
        );
        assert_ne!(a0.store.flush_mode, a1.store.flush_mode);
    }
}
