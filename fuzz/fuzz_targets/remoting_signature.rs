//! The RocketMQ AccessKey signature fields ([`meridian_proto::remoting::acl::parse_signed`]) and
//! the check after them, on ext fields decoded from arbitrary bytes (`name \0 value \0 ...`), and
//! sealed-secret parsing, SQL-92 filters (`remoting::sql92`, evaluated over the same fields),
//! RMQ_SYS_TRACE_TOPIC records (`remoting::trace::parse_records`) and
//! compressed bodies of every type on the same input. A request signed with the key must verify;
//! nothing may panic.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use meridian_proto::remoting::acl::{AccessKeySealer, parse_signed, sign, signing_key, verify};
use meridian_proto::remoting::message::decompress_body;
use meridian_proto::remoting::trace::parse_records;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let mut fields = BTreeMap::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        fields.insert(name.to_owned(), value.to_owned());
    }
    let body = data.get(..data.len().min(64)).unwrap_or_default();
    let key = signing_key(b"fuzz secret");
    if let Ok(signed) = parse_signed(&fields) {
        let _ = verify(&key, &signed, &fields, body, 401, 0);
    }
    let mut signed_fields = fields.clone();
    signed_fields.remove("Timestamp");
    sign(&mut signed_fields, body, "fuzz-user", b"fuzz secret");
    let signed = parse_signed(&signed_fields).expect("a request this module signed parses");
    assert!(verify(&key, &signed, &signed_fields, body, 401, 0).is_ok());
    let sealer = AccessKeySealer::new("fuzz node secret of at least 32 characters");
    let _ = sealer.open("fuzz-user", &text);
    let _ = parse_records(&text);
    if let Ok(filter) = meridian_proto::remoting::sql92::parse(&text) {
        let _ = filter.matches(|name| fields.get(name).map(String::as_str));
    }
    for kind in 0..8 {
        let _ = decompress_body(data, 1 | kind << 8, 4096);
    }
});
