//! Nameserver Raft clusters in one process: nodes on real data dirs, talking through an in-process
//! router that can cut a node off. Real time with short Raft timeouts, so each test takes seconds.

mod catch_up;
mod failover;
mod governance;
mod harness;
mod router;
mod single_node;
