//! The broker (being built).
