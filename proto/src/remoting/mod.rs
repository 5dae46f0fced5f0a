//! RocketMQ 4.x remoting protocol, the parts both Meridian listeners share (the broker's in
//! `broker/src/remoting`, the nameserver's in `nameserver/src/remoting.rs`). Facts are from
//! `../shared/ROCKETMQ.md` §2, checked against apache/rocketmq.
//!
//! - [`command`]: the frame, JSON and binary headers, [`command::RemotingCodec`]. Start here.
//! - [`fields`]: lenient typed reads of ext fields (numbers as strings, `0`/`1` booleans).
//! - [`codes`]: request, response and language codes; Meridian error → RocketMQ code.
//! - [`message`]: stored-message and batch encodings, offset msgId, compressed bodies.
//! - [`acl`]: AccessKey signatures and the sealed secrets that check them.
//! - [`trace`]: the trace records SDKs send to `RMQ_SYS_TRACE_TOPIC`.
//! - [`sql92`]: the SQL-92 message filter subset RocketMQ supports.

pub mod acl;
pub mod codes;
pub mod command;
pub mod fields;
pub mod message;
pub mod sql92;
pub mod trace;

pub use command::{Decoded, RemotingCodec, RemotingCommand, SerializeType};
