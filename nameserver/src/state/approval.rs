//! The approval workflow shared by topics and consumer groups: [`Approval`], the one record of
//! where a topic or group stands (requested, approved, rejected) and who moved it there, and
//! [`Decision`], one entry of their histories. They are records of the admin contract, defined
//! in [`meridian_proto::admin`] so that clients read them without naming this crate; the state
//! keeps them as they are.
//!
//! A leaf of the state: it names nothing else of the crate, so [`super::error`] can describe
//! refusals in its terms. The rules that move an approval live in [`super::governance`].

pub use meridian_proto::admin::{Approval, ApprovalStatus, Decision, DecisionAction, Subject, format_time_ms};
