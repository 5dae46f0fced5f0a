//! Nameserver Raft clusters in one process: nodes on real data dirs, talking through an in-process
//! router that can cut a node off, or over loopback TCP (`framed`); the HTTP admin API over a
//! loopback socket (`http`); the failover controller with simulated brokers (`controller`). Real
//! time with short Raft timeouts, so each test takes seconds.
//! Separate processes are tested in the `tests` crate.

mod catch_up;
mod continuity;
mod controller;
mod failover;
mod framed;
mod governance;
mod harness;
mod http;
mod router;
mod single_node;
