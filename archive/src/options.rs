//! [`ConvertOptions`]: who wrote the messages a conversion stores, shared by the message and trace
//! converters (a leaf, so neither converter imports the other for it).

/// Who wrote the messages, stored in every row.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Broker (group) name: the `broker` column and the file name prefix.
    pub broker: String,
    /// The broker's data center, if known: the `idc` column.
    pub idc: Option<String>,
    /// zstd level (1 is fast and already small for JSON-like bodies).
    pub zstd_level: i32,
    /// The group's epoch a group's archiver archives at: part of every file name (see
    /// [`crate::layout`]); None outside a group.
    pub epoch: Option<u64>,
}

impl ConvertOptions {
    /// Options for `broker` with defaults for the rest.
    pub fn new(broker: impl Into<String>) -> ConvertOptions {
        ConvertOptions {
            broker: broker.into(),
            idc: None,
            zstd_level: 1,
            epoch: None,
        }
    }
}
