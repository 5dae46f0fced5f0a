//! The query service: DataFusion over the archive and the traces, with forecasting table functions.
//! Not built yet.
