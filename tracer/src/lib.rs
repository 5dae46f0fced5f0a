//! The tracer: consumes the system trace topic and indexes trace events in tantivy, so a message's
//! whole timeline can be looked up by msgId or key. Not built yet.
