//! Encoded message properties on arbitrary bytes: `PropertiesIter`, `is_well_formed` and `get`.
//!
//! They must agree: the bytes are well formed exactly when the iterator consumes all of them, and
//! `get` finds the first value of a name the iterator yields. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_proto::properties::{self, PropertiesIter};

fuzz_target!(|data: &[u8]| {
    // Each entry is `name \x01 value \x02`: two separator bytes besides name and value.
    let consumed: usize = PropertiesIter::new(data)
        .map(|(name, value)| name.len() + value.len() + 2)
        .sum();
    assert_eq!(properties::is_well_formed(data), consumed == data.len());

    let mut seen = Vec::new();
    for (name, value) in PropertiesIter::new(data) {
        if !seen.contains(&name) {
            assert_eq!(properties::get(data, name), Some(value));
            seen.push(name);
        }
    }
    for name in [
        properties::MSG_ID,
        properties::KEYS,
        properties::TAGS,
        properties::DELAY,
    ] {
        let _ = properties::get(data, name);
    }
});
