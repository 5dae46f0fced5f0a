//! `MessageId::parse` on arbitrary text (invalid UTF-8 is replaced, since ids arrive as `&str`).
//!
//! An id that parses must print as 32 uppercase hex digits that parse back to the same id.
//! Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_proto::MessageId;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(id) = MessageId::parse(&text) {
        let printed = id.to_string();
        assert_eq!(printed.len(), 32);
        assert!(
            printed
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'A'..=b'F').contains(&byte))
        );
        assert_eq!(MessageId::parse(&printed), Ok(id));
        let _ = id.timestamp_millis();
    }
});
