//! The web console (axum): cluster, topics, groups, traces, SQL, forecasts and alerts, built only on
//! the other services' HTTP APIs. Not built yet.
