//! [`NameserverAdmin`]: the one client of the nameservers' admin requests (`NameserverRead`,
//! `NameserverWrite`: topics, groups, brokers, the Raft cluster, IDC rules, drills, the SDK
//! policy), with the SDK's nameserver failover ([`NameserverRoute`]). Every command-line tool and
//! service that administers a cluster goes through it; bodies are the JSON of the admin contract.
//!
//! Start at [`NameserverAdmin::read`] and [`NameserverAdmin::write`]; [`NameserverAdmin::wait_until_served`]
//! is what `topic create` and `approve` wait on.

use std::time::Duration;

use bytes::Bytes;
use meridian_proto::RequestCode;
use meridian_proto::messages::{TopicRoute, TopicRouteRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use meridian_proto::transport::{ConnectionPool, TransportConfig as ClientConfig};

use crate::error::ClientError;
use crate::route::{NameserverRoute, Unanswered};

/// Rounds over every address while no node can answer (an election, a restart).
const ELECTION_ROUNDS: usize = 6;

/// Pause between two rounds.
const ROUND_PAUSE: Duration = Duration::from_millis(500);

/// Longest a read or an ordinary write may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of a cluster's nameservers for admin reads and writes. A node that is not the Raft
/// leader forwards writes to it; while no node can take one (an election), the request is sent
/// again for a few seconds, but only while every failure left it surely undone.
pub struct NameserverAdmin {
    nameservers: NameserverRoute,
}

impl NameserverAdmin {
    /// A client of the nameservers at `addrs` (`host:port` each, any one will do).
    pub fn new(addrs: Vec<String>, config: ClientConfig) -> Result<NameserverAdmin, ClientError> {
        if addrs.is_empty() {
            return Err(ClientError::InvalidArgument(
                "no nameserver address: pass --nameserver HOST:PORT".to_owned(),
            ));
        }
        Ok(NameserverAdmin {
            nameservers: NameserverRoute::new(addrs, ConnectionPool::new(config)),
        })
    }

    /// The nameserver addresses, in the order given.
    pub fn addrs(&self) -> &[String] {
        self.nameservers.addrs()
    }

    /// The connection pool, for requests to the brokers the nameservers name.
    pub fn pool(&self) -> &ConnectionPool {
        self.nameservers.pool()
    }

    /// Sends a request with `body` to the first nameserver that answers; the answer's body.
    pub async fn request(&self, code: RequestCode, body: Bytes, timeout: Duration) -> Result<Bytes, ClientError> {
        let pool = self.nameservers.pool();
        let mut round = 0;
        loop {
            round += 1;
            let answer = self
                .nameservers
                .ask_each(|addr| pool.request(addr, code, body.clone(), timeout))
                .await;
            match answer {
                Ok(frame) => return Ok(frame.body),
                Err(Unanswered::Refused { addr, code, message }) => {
                    return Err(ClientError::Nameserver { addr, code, message });
                }
                Err(Unanswered::Failed(error)) => return Err(error.into()),
                Err(Unanswered::NoneAnswered { failures, undone }) => {
                    if !undone || round == ELECTION_ROUNDS {
                        return Err(ClientError::NameserversDown { failures });
                    }
                }
            }
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }

    /// Reads `query` (an admin query of the contract) and decodes the answer as `T`.
    pub async fn read<Query: Serialize, T: DeserializeOwned>(&self, query: &Query) -> Result<T, ClientError> {
        let body = encode(query)?;
        let answer = self.request(RequestCode::NameserverRead, body, REQUEST_TIMEOUT).await?;
        decode(&answer)
    }

    /// Applies `write` (an admin write of the contract) through the Raft leader, waiting up to
    /// `timeout` (adding a nameserver waits until it caught up), and decodes the answer as `T`.
    pub async fn write<Write: Serialize, T: DeserializeOwned>(
        &self,
        write: &Write,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let body = encode(write)?;
        let answer = self.request(RequestCode::NameserverWrite, body, timeout).await?;
        decode(&answer)
    }

    /// The route of `topic` as the nameservers give it.
    pub async fn route(&self, topic: &str) -> Result<TopicRoute, ClientError> {
        let body = Bytes::from(prost::Message::encode_to_vec(&TopicRouteRequest {
            topic: topic.to_owned(),
        }));
        let answer = self.request(RequestCode::TopicRoute, body, REQUEST_TIMEOUT).await?;
        prost::Message::decode(answer).map_err(|error| ClientError::Decode(format!("the nameserver's route: {error}")))
    }

    /// Waits up to `within` until every broker group of `topic`'s route has a live master that
    /// serves it (brokers apply approvals on their next heartbeat). The error names each broker
    /// still behind and why.
    pub async fn wait_until_served(&self, topic: &str, within: Duration) -> Result<(), ClientError> {
        let deadline = Instant::now() + within;
        let mut last_problem = String::new();
        while Instant::now() < deadline {
            match self.route(topic).await {
                Ok(route) => {
                    let mut pending = Vec::new();
                    for broker in &route.brokers {
                        if broker.addr.is_empty() {
                            pending.push(format!("broker group {} has no live master", broker.broker_name));
                            continue;
                        }
                        let request = TopicRouteRequest {
                            topic: topic.to_owned(),
                        };
                        let served: Result<TopicRoute, _> = self
                            .pool()
                            .call(&broker.addr, RequestCode::TopicRoute, &request, Duration::from_secs(3))
                            .await;
                        if let Err(error) = served {
                            pending.push(format!("broker {} ({}): {error}", broker.broker_name, broker.addr));
                        }
                    }
                    if pending.is_empty() {
                        return Ok(());
                    }
                    last_problem = pending.join("; ");
                }
                Err(error) => last_problem = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ClientError::NotServedYet {
            topic: topic.to_owned(),
            within,
            problem: last_problem,
        })
    }

    /// Closes the connections.
    pub async fn shutdown(self) {
        self.nameservers.pool().shutdown().await;
    }
}

fn encode(value: &impl Serialize) -> Result<Bytes, ClientError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|error| ClientError::InvalidArgument(format!("the admin request does not encode as JSON: {error}")))
}

fn decode<T: DeserializeOwned>(answer: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(answer).map_err(|error| {
        ClientError::Decode(format!(
            "the nameserver's answer ({error}); is the nameserver the same version as this client?"
        ))
    })
}

#[cfg(test)]
mod tests {
    use meridian_proto::ErrorCode;

    use super::*;
    use crate::test_support::{FakeNameserver, refused_addr};

    fn config() -> ClientConfig {
        ClientConfig {
            request_timeout: Duration::from_secs(2),
            ..ClientConfig::default()
        }
    }

    #[tokio::test]
    async fn reads_pass_over_a_dead_nameserver_to_one_that_answers() {
        let dead = refused_addr();
        let live = FakeNameserver::start().await;
        live.set_admin_answer(r#"{"answer":7}"#);
        let admin = NameserverAdmin::new(vec![dead, live.addr.clone()], config()).unwrap();
        let answer: serde_json::Value = admin.read(&serde_json::json!({"query": "cluster"})).await.unwrap();
        assert_eq!(answer["answer"], 7);
        // The next request starts at the nameserver that answered.
        let _: serde_json::Value = admin.read(&serde_json::json!({"query": "cluster"})).await.unwrap();
        assert_eq!(live.admin_requests(), 2);
        admin.shutdown().await;
    }

    #[tokio::test]
    async fn a_refusal_comes_back_at_once_naming_the_nameserver() {
        let refusing = FakeNameserver::start().await;
        refusing.refuse_admin(ErrorCode::InvalidArgument, "not today");
        let other = FakeNameserver::start().await;
        other.set_admin_answer("{}");
        let admin = NameserverAdmin::new(vec![refusing.addr.clone(), other.addr.clone()], config()).unwrap();
        let error = admin
            .write::<_, serde_json::Value>(&serde_json::json!({"op": "x"}), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ClientError::Nameserver { addr, .. } if *addr == refusing.addr),
            "{error}"
        );
        assert!(error.to_string().contains("not today"), "{error}");
        assert_eq!(refusing.admin_requests(), 1);
        assert_eq!(other.admin_requests(), 0);
        admin.shutdown().await;
    }

    #[tokio::test]
    async fn an_answer_of_another_shape_is_a_decode_error_naming_the_version() {
        let live = FakeNameserver::start().await;
        live.set_admin_answer(r#"{"unexpected": true}"#);
        let admin = NameserverAdmin::new(vec![live.addr.clone()], config()).unwrap();
        let error = admin
            .read::<_, Vec<String>>(&serde_json::json!({"query": "topics"}))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ClientError::Decode(_)) && error.to_string().contains("same version"),
            "{error}"
        );
        admin.shutdown().await;
    }

    #[tokio::test]
    async fn when_every_nameserver_is_down_the_error_names_each_after_the_election_rounds() {
        let (first, second) = (refused_addr(), refused_addr());
        let admin = NameserverAdmin::new(vec![first.clone(), second.clone()], config()).unwrap();
        let started = Instant::now();
        let error = admin
            .read::<_, serde_json::Value>(&serde_json::json!({"query": "cluster"}))
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::NameserversDown { .. }), "{error}");
        let text = error.to_string();
        assert!(text.contains(&first) && text.contains(&second), "{text}");
        assert!(text.contains("meridian cluster status"), "{text}");
        // Refused connections left the read undone, so every election round was tried.
        assert!(
            started.elapsed() >= ROUND_PAUSE * (ELECTION_ROUNDS as u32 - 1),
            "{:?}",
            started.elapsed()
        );
        admin.shutdown().await;
    }

    #[test]
    fn no_address_is_refused_with_the_flag_to_pass() {
        let error = NameserverAdmin::new(Vec::new(), config()).err().unwrap();
        assert!(error.to_string().contains("--nameserver"), "{error}");
    }
}
