//! The client SDK (being built).
