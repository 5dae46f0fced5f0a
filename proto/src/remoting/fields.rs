//! Lenient typed reads of a command's ext fields, as the Java broker's header decoding accepts
//! them and more: surrounding spaces, booleans as `true`/`false`/`1`/`0` (any case), integers
//! written as floats (`"3.0"`) or booleans, and for the V2 send header both the one-letter names
//! and the long ones. A missing or unreadable required field is a [`FieldError`] naming the field,
//! the request and what was found.

use std::collections::BTreeMap;

use super::codes::request_name;

/// A required ext field that is missing or unreadable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{request} ({code}) needs header field `{field}`{found}")]
pub struct FieldError {
    /// The request code.
    pub code: i32,
    /// Its name.
    pub request: &'static str,
    /// The field.
    pub field: String,
    /// `""` when missing, else what was found and what was expected.
    pub found: String,
}

/// A command's ext fields.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    code: i32,
    fields: &'a BTreeMap<String, String>,
}

fn parse_int(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(value) = text.parse::<i64>() {
        return Some(value);
    }
    if let Some(flag) = parse_bool(text) {
        return Some(i64::from(flag));
    }
    text.parse::<f64>()
        .ok()
        .filter(|value| value.is_finite() && value.fract() == 0.0)
        .map(|value| value as i64)
}

fn parse_bool(text: &str) -> Option<bool> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("true") || text == "1" {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") || text == "0" || text.is_empty() {
        Some(false)
    } else {
        None
    }
}

impl<'a> Fields<'a> {
    /// The fields of request `code`.
    pub fn new(code: i32, fields: &'a BTreeMap<String, String>) -> Fields<'a> {
        Fields { code, fields }
    }

    fn error(&self, field: &str, found: String) -> FieldError {
        FieldError {
            code: self.code,
            request: request_name(self.code),
            field: field.to_owned(),
            found,
        }
    }

    /// The raw value of the first of `names` present.
    pub fn raw(&self, names: &[&str]) -> Option<&'a str> {
        names.iter().find_map(|name| self.fields.get(*name)).map(String::as_str)
    }

    /// A required string (the first of `names` present).
    pub fn str(&self, names: &[&str]) -> Result<&'a str, FieldError> {
        self.raw(names).ok_or_else(|| self.error(names[0], String::new()))
    }

    /// An optional string; empty reads as absent.
    pub fn opt_str(&self, names: &[&str]) -> Option<&'a str> {
        self.raw(names).filter(|value| !value.trim().is_empty())
    }

    /// A required integer.
    pub fn int(&self, names: &[&str]) -> Result<i64, FieldError> {
        let raw = self.str(names)?;
        parse_int(raw).ok_or_else(|| self.error(names[0], format!(" as an integer, found {raw:?}")))
    }

    /// An optional integer: absent or empty gives `default`; present but unreadable is an error.
    pub fn int_or(&self, names: &[&str], default: i64) -> Result<i64, FieldError> {
        match self.raw(names) {
            None => Ok(default),
            Some(raw) if raw.trim().is_empty() || raw.trim() == "null" => Ok(default),
            Some(raw) => parse_int(raw).ok_or_else(|| self.error(names[0], format!(" as an integer, found {raw:?}"))),
        }
    }

    /// An optional boolean (absent: `default`).
    pub fn bool_or(&self, names: &[&str], default: bool) -> Result<bool, FieldError> {
        match self.raw(names) {
            None => Ok(default),
            Some(raw) => parse_bool(raw).ok_or_else(|| self.error(names[0], format!(" as a boolean, found {raw:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_booleans_are_read_in_every_form_clients_send() {
        let map: BTreeMap<String, String> = [
            ("queueId", " 3 "),
            ("float", "7.0"),
            ("unitMode", "0"),
            ("batch", "TRUE"),
            ("bad", "x1"),
            ("e", "2"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
        let fields = Fields::new(310, &map);
        assert_eq!(fields.int(&["queueId"]), Ok(3));
        assert_eq!(fields.int(&["float"]), Ok(7));
        assert_eq!(fields.bool_or(&["unitMode"], true), Ok(false));
        assert_eq!(fields.bool_or(&["batch"], false), Ok(true));
        assert_eq!(fields.int(&["e", "queueId"]), Ok(2), "the first name present wins");
        assert_eq!(fields.int_or(&["absent"], 5), Ok(5));
        let missing = fields.int(&["b", "topic"]).unwrap_err();
        assert_eq!(missing.to_string(), "SEND_MESSAGE_V2 (310) needs header field `b`");
        let wrong = fields.int(&["bad"]).unwrap_err();
        assert!(wrong.to_string().contains("as an integer, found \"x1\""), "{wrong}");
    }
}
