//! The HTTP admin API of one real nameserver, served by `axum::serve` on a loopback socket and
//! driven by a minimal HTTP/1.1 client: governance through HTTP, every error in the JSON error
//! shape, routes and cluster views as JSON.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_nameserver::metrics::NameserverMetrics;
use meridian_nameserver::{Nameserver, NameserverConfig, NameserverService};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::harness::{PATIENCE, test_config};

struct Api {
    addr: SocketAddr,
    service: Arc<NameserverService>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: TempDir,
}

impl Api {
    /// A single-node nameserver (leader once elected) with the admin API on its own listener.
    async fn start() -> Api {
        let dir = TempDir::new().unwrap();
        let config = NameserverConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            http_listen: None,
            data_dir: dir.path().join("nameserver"),
            raft: test_config(),
            broker_timeout_ms: 1000,
            write_timeout_ms: 3000,
            ..NameserverConfig::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let nameserver = Nameserver::bind(config, Some(addr), Arc::new(NameserverMetrics::default()))
            .await
            .unwrap();
        let service = nameserver.service();
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let stopped = stop.clone();
        let raft_task = tracker.spawn(async move { nameserver.run(stopped.cancelled_owned()).await.unwrap() });
        // Merged with other routes, as `meridian dev` serves it next to a broker's on one listener.
        let other = axum::Router::new().route("/api/health", axum::routing::get(|| async { "other" }));
        let router = other.merge(meridian_nameserver::http::router(service.clone()));
        let stopped = stop.clone();
        let http_task = tracker.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await
                .unwrap()
        });
        tracker.close();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while service.raft().current_leader() != Some(1) {
            assert!(tokio::time::Instant::now() < deadline, "no leader within {PATIENCE:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Api {
            addr,
            service,
            stop,
            tasks: vec![http_task, raft_task],
            _dir: dir,
        }
    }

    /// Sends one request and answers its status and raw body.
    async fn raw(&self, method: &str, path: &str, content_type: Option<&str>, body: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let content_type = content_type
            .map(|content_type| format!("Content-Type: {content_type}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8(response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        // Shown when a test fails; also the source of the examples in docs/api.md.
        println!("{method} {path} {sent}\n=> {status} {body}\n", sent = body_of(&request));
        (status, body.to_owned())
    }

    /// Sends `body` as JSON and parses the answer, which must be JSON whatever the status.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        let (status, text) = self.raw(method, path, Some("application/json"), &body).await;
        let value =
            serde_json::from_str(&text).unwrap_or_else(|error| panic!("{status} {text:?} is not JSON: {error}"));
        (status, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

fn body_of(request: &str) -> &str {
    request.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// Asserts the error shape and returns the message.
#[track_caller]
fn error(answer: &(u16, Value), status: u16, code: &str) -> String {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
    answer.1["error"]["message"].as_str().unwrap().to_owned()
}

fn orders_request() -> Value {
    json!({
        "name": "orders",
        "owner": "team-a",
        "description": "orders of the shop",
        "queues": {"broker-a": 4},
        "requested_by": "alice",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_requested_approved_and_read_over_http_with_json_errors() {
    let api = Api::start().await;

    let (status, health) = api.get("/api/nameserver/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(
        health,
        json!({"status": "ok", "node_id": 1, "role": "Leader", "leader": 1, "cut_off": null})
    );
    let (status, cluster) = api.get("/api/cluster").await;
    assert_eq!(status, 200);
    assert_eq!(cluster["role"], "Leader");
    assert_eq!(cluster["leader"], 1);
    assert_eq!(cluster["nodes"][0]["id"], 1);
    assert_eq!(cluster["nodes"][0]["voter"], true);
    assert_eq!(cluster["nodes"][0]["http_addr"], api.addr.to_string());

    // Request, approve, read back.
    let (status, requested) = api.post("/api/topics", orders_request()).await;
    assert_eq!(status, 201, "{requested}");
    assert_eq!(requested["topic"]["status"], "requested");
    assert_eq!(requested["topic"]["perm"], 3, "perm defaults to read and write");
    let (status, approved) = api
        .post(
            "/api/topics/orders/approve",
            json!({"by": "admin", "reason": "owner known"}),
        )
        .await;
    assert_eq!(status, 200, "{approved}");
    let (status, detail) = api.get("/api/topics/orders").await;
    assert_eq!(status, 200);
    assert_eq!(detail["topic"]["status"], "approved");
    assert_eq!(detail["topic"]["decided_by"], "admin");
    assert_eq!(detail["topic"]["decision_reason"], "owner known");
    let history = detail["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{detail}");
    assert_eq!(history[0]["action"], "requested");
    assert_eq!(history[1]["action"], "approved");
    let (status, history) = api.get("/api/topics/orders/history").await;
    assert_eq!(status, 200);
    assert_eq!(&history, &detail["history"]);
    let (_, approved_only) = api.get("/api/topics?status=approved").await;
    assert_eq!(approved_only.as_array().unwrap().len(), 1);
    let (_, requested_only) = api.get("/api/topics?status=requested").await;
    assert_eq!(requested_only, json!([]));

    // Approved, placed on broker-a, but no broker registered: one broker entry without a master.
    let (status, route) = api.get("/api/topics/orders/route").await;
    assert_eq!(status, 200, "{route}");
    assert_eq!(
        route,
        json!({"topic": "orders", "brokers": [
            {"broker_name": "broker-a", "addr": "", "idc": "", "queues": 4, "perm": 3, "replicas": []}
        ]})
    );

    // Errors from the state, with its code and message.
    let again = api.post("/api/topics", orders_request()).await;
    let message = error(&again, 409, "already_exists");
    assert!(message.contains("already requested by alice"), "{message}");
    let (status, _) = api
        .post(
            "/api/topics",
            json!({"name": "payments", "owner": "team-a", "requested_by": "alice"}),
        )
        .await;
    assert_eq!(status, 201);
    let unreasoned = api.post("/api/topics/payments/reject", json!({"by": "admin"})).await;
    let message = error(&unreasoned, 400, "invalid_argument");
    assert!(message.contains("needs a reason"), "{message}");
    let blank = api
        .post("/api/topics/payments/reject", json!({"by": "admin", "reason": " "}))
        .await;
    error(&blank, 400, "invalid_argument");
    let unplaced = api.post("/api/topics/payments/approve", json!({"by": "admin"})).await;
    let message = error(&unplaced, 409, "failed_precondition");
    assert!(message.contains("no queues"), "{message}");
    let unknown = api.get("/api/topics/nope").await;
    let message = error(&unknown, 404, "topic_not_found");
    assert!(message.contains("meridian topic request"), "{message}");
    let unapproved = api.get("/api/topics/payments/route").await;
    error(&unapproved, 403, "not_approved");
    let invalid_name = api.get("/api/topics/a%20b").await;
    let message = error(&invalid_name, 400, "invalid_argument");
    assert!(message.contains("\"a b\" is invalid"), "{message}");

    // Bodies that do not parse: 400 in the same shape, naming the field.
    let (status, text) = api
        .raw("POST", "/api/topics", Some("application/json"), r#"{"name": "orders","#)
        .await;
    assert_eq!(status, 400, "{text}");
    let malformed: Value = serde_json::from_str(&text).unwrap();
    let message = error(&(status, malformed), 400, "invalid_argument");
    assert!(message.contains("the request body is not valid"), "{message}");
    let missing = api.post("/api/topics/orders/approve", json!({"reason": "x"})).await;
    let message = error(&missing, 400, "invalid_argument");
    assert!(message.contains("\"by\" is empty"), "{message}");
    let mistyped = api
        .post(
            "/api/topics",
            json!({"name": "x", "owner": "o", "requested_by": "r", "queues": {"broker-a": "eight"}}),
        )
        .await;
    let message = error(&mistyped, 400, "invalid_argument");
    assert!(message.contains("queues.broker-a: invalid type"), "{message}");
    let typo = api
        .post("/api/topics/orders/approve", json!({"by": "admin", "resaon": "x"}))
        .await;
    let message = error(&typo, 400, "invalid_argument");
    assert!(message.contains("unknown field `resaon`"), "{message}");
    let (status, text) = api
        .raw(
            "POST",
            "/api/topics/orders/approve",
            Some("text/plain"),
            r#"{"by": "admin"}"#,
        )
        .await;
    let message = error(&(status, serde_json::from_str(&text).unwrap()), 400, "invalid_argument");
    assert!(message.contains("Content-Type: application/json"), "{message}");
    let empty = api.call("POST", "/api/topics/orders/approve", None).await;
    let message = error(&empty, 400, "invalid_argument");
    assert!(message.contains("body is empty"), "{message}");
    let bad_status = api.get("/api/topics?status=maybe").await;
    let message = error(&bad_status, 400, "invalid_argument");
    assert!(message.contains("unknown variant `maybe`"), "{message}");
    let bad_id = api.call("DELETE", "/api/cluster/nodes/two", None).await;
    error(&bad_id, 400, "invalid_argument");
    let (status, text) = api.raw("GET", "/api/health", None, "").await;
    assert_eq!((status, text.as_str()), (200, "other"), "merged routes are served");
    let no_endpoint = api.get("/api/topicz").await;
    let message = error(&no_endpoint, 404, "unsupported_request");
    assert!(message.contains("GET /api/topicz"), "{message}");
    let wrong_method = api.call("PUT", "/api/topics/orders", None).await;
    error(&wrong_method, 405, "unsupported_request");

    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_updates_deletes_idc_rules_and_sdk_policy_over_http() {
    let api = Api::start().await;
    api.post("/api/topics", orders_request()).await;
    api.post("/api/topics/orders/approve", json!({"by": "admin"})).await;

    // A group on a topic that does not exist: the state's error.
    let missing_topic = api
        .post(
            "/api/groups",
            json!({"name": "billing", "owner": "team-b", "topics": ["invoices"], "requested_by": "carol"}),
        )
        .await;
    let message = error(&missing_topic, 404, "topic_not_found");
    assert!(message.contains("\"invoices\" does not exist"), "{message}");
    let no_topics = api
        .post(
            "/api/groups",
            json!({"name": "billing", "owner": "team-b", "requested_by": "carol"}),
        )
        .await;
    let message = error(&no_topics, 400, "invalid_argument");
    assert!(message.contains("subscribes to no topic"), "{message}");
    let bad_mode = api
        .post(
            "/api/groups",
            json!({"name": "billing", "owner": "team-b", "topics": ["orders"], "consume_mode": "everyone", "requested_by": "carol"}),
        )
        .await;
    let message = error(&bad_mode, 400, "invalid_argument");
    assert!(message.contains("consume_mode"), "{message}");

    let (status, group) = api
        .post(
            "/api/groups",
            json!({"name": "billing", "owner": "team-b", "topics": ["orders"], "max_retries": 3,
                   "consume_mode": "broadcasting", "requested_by": "carol"}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    assert_eq!(group["group"]["consume_mode"], "broadcasting");
    assert_eq!(group["group"]["max_retries"], 3);
    let (status, approved) = api.post("/api/groups/billing/approve", json!({"by": "admin"})).await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["group"]["status"], "approved");
    let (_, groups) = api.get("/api/groups?status=approved").await;
    assert_eq!(groups[0]["name"], "billing");
    let unknown = api.get("/api/groups/nope").await;
    let message = error(&unknown, 404, "group_not_found");
    assert!(message.contains("meridian group request"), "{message}");

    // Updates: the produce limit is set, removed, and contradictions refused.
    let (status, updated) = api
        .call(
            "PATCH",
            "/api/topics/orders",
            Some(json!({"by": "bob", "reason": "black friday", "queues": {"broker-a": 8}, "produce_limit": 500})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["topic"]["queues"]["broker-a"], 8);
    assert_eq!(updated["topic"]["produce_limit"], 500);
    let (_, removed) = api
        .call(
            "PATCH",
            "/api/topics/orders",
            Some(json!({"by": "bob", "remove_produce_limit": true})),
        )
        .await;
    assert_eq!(removed["topic"]["produce_limit"], Value::Null);
    let contradiction = api
        .call(
            "PATCH",
            "/api/topics/orders",
            Some(json!({"by": "bob", "produce_limit": 5, "remove_produce_limit": true})),
        )
        .await;
    error(&contradiction, 400, "invalid_argument");

    // Deletes: a topic in use is refused; by query string or by body.
    let in_use = api
        .call("DELETE", "/api/topics/orders?by=admin&reason=retired", None)
        .await;
    let message = error(&in_use, 409, "failed_precondition");
    assert!(message.contains("\"billing\""), "{message}");
    let no_reason = api.call("DELETE", "/api/groups/billing?by=admin", None).await;
    error(&no_reason, 400, "invalid_argument");
    let (status, done) = api
        .call(
            "DELETE",
            "/api/groups/billing",
            Some(json!({"by": "admin", "reason": "team-b moved to invoices"})),
        )
        .await;
    assert_eq!((status, done), (200, json!("done")));
    let (status, done) = api
        .call("DELETE", "/api/topics/orders?by=admin&reason=retired", None)
        .await;
    assert_eq!((status, done), (200, json!("done")));
    let (_, history) = api.get("/api/groups/billing/history").await;
    assert_eq!(history.as_array().unwrap().len(), 3, "{history}");
    let (status, detail) = api.get("/api/topics/orders").await;
    assert_eq!(status, 200, "a deleted topic keeps its history");
    assert_eq!(detail["topic"], Value::Null);
    assert_eq!(detail["history"].as_array().unwrap().len(), 5, "{detail}");

    // IDC rules.
    let (status, done) = api
        .call(
            "PUT",
            "/api/idc-rules",
            Some(json!({"cidr": "10.1.0.0/16", "idc": "dc1"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        done,
        json!({"idc_rule": {"rule": {"network": "10.1.0.0", "prefix_len": 16, "idc": "dc1"}, "overlaps": []}})
    );
    let (_, rules) = api.get("/api/idc-rules").await;
    assert_eq!(
        rules,
        json!([{"cidr": "10.1.0.0/16", "network": "10.1.0.0", "prefix_len": 16, "idc": "dc1"}])
    );
    let host_bits = api
        .call(
            "PUT",
            "/api/idc-rules",
            Some(json!({"cidr": "10.1.2.3/16", "idc": "dc1"})),
        )
        .await;
    let message = error(&host_bits, 400, "invalid_argument");
    assert!(message.contains("did you mean 10.1.0.0/16"), "{message}");
    let (status, _) = api.call("DELETE", "/api/idc-rules?cidr=10.1.0.0/16", None).await;
    assert_eq!(status, 200);
    let gone = api.call("DELETE", "/api/idc-rules?cidr=10.1.0.0/16", None).await;
    error(&gone, 400, "invalid_argument");

    // SDK policy.
    let (status, _) = api
        .call(
            "PUT",
            "/api/sdk-policy",
            Some(json!({"min_version": "1.2.0", "blocked_versions": ["1.3.1"]})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, policy) = api.get("/api/sdk-policy").await;
    assert_eq!(
        policy,
        json!({"min_version": "1.2.0", "blocked_versions": ["1.3.1"], "refuse": false, "language_min_versions": {}})
    );
    let no_list = api
        .call("PUT", "/api/sdk-policy", Some(json!({"min_version": "1.2.0"})))
        .await;
    let message = error(&no_list, 400, "invalid_argument");
    assert!(message.contains("missing field `blocked_versions`"), "{message}");

    let (status, brokers) = api.get("/api/brokers").await;
    assert_eq!((status, brokers), (200, json!([])));
    // A switchover names a registered member (the controller test switches a real group over).
    let unknown = api
        .post("/api/brokers/broker-a/switchover", json!({"to": "a-1", "by": "admin"}))
        .await;
    let message = error(&unknown, 400, "invalid_argument");
    assert_eq!(
        message,
        "broker group \"broker-a\" has no member \"a-1\": no broker of that group is registered (check `meridian cluster status`)"
    );
    let anonymous = api
        .post("/api/brokers/broker-a/switchover", json!({"to": "a-1", "by": " "}))
        .await;
    error(&anonymous, 400, "invalid_argument");
    let untargeted = api
        .post("/api/brokers/broker-a/switchover", json!({"by": "admin"}))
        .await;
    let message = error(&untargeted, 400, "invalid_argument");
    assert!(message.contains("missing field `to`"), "{message}");
    // Removing a node that is not a member changes nothing: idempotent, so a retry is safe.
    let (status, answer) = api.call("DELETE", "/api/cluster/nodes/7", None).await;
    assert_eq!((status, answer), (200, json!("done")));
    let (_, cluster) = api.get("/api/cluster").await;
    assert_eq!(cluster["nodes"].as_array().unwrap().len(), 1, "{cluster}");
    let no_addr = api.post("/api/cluster/nodes", json!({"id": 4, "addr": ""})).await;
    error(&no_addr, 400, "invalid_argument");

    assert_eq!(api.service.raft().current_leader(), Some(1));
    api.stop().await;
}
