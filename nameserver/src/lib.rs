//! The nameserver: where clients find brokers and where cluster metadata lives.
//!
//! It will own the openraft state machine and network, routes, the broker registry and heartbeats,
//! topics and groups with owners and approvals, the failover controller and the IDC map
//! (see `../shared/DESIGN.md`). Not built yet: the broker currently serves its own routes.
