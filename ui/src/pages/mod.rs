//! One module per page; each renders HTML from the services' JSON answers as a pure function
//! (no I/O), so each is unit-tested, escaping included.

pub mod alerts;
pub mod drills;
pub mod groups;
pub mod members;
pub mod others;
pub mod overview;
pub mod sql;
pub mod topics;
pub mod trace;
