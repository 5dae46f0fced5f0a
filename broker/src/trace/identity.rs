//! Who this broker is, stamped on each trace event it emits: a leaf the event encoders and the
//! emitter share.

/// Who this broker is, stamped on each event it emits.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// Broker group.
    pub broker_name: String,
    /// Member name.
    pub member: String,
    /// Advertised address.
    pub host: String,
    /// Data center.
    pub idc: String,
}
