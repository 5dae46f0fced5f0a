//! Tag filter expressions: `*` (every message) or tags joined by `||` (`TagA || TagB`), as
//! RocketMQ subscriptions write them.
//!
//! The broker filters by the tag hash in each consume queue entry, so it never reads a record the
//! group does not want; a hash can collide, so the client checks the tag itself again
//! ([`TagFilter::matches_tag`]).

use crate::properties::tag_hash;
use crate::validate::{self, ValidationError};

/// A parsed tag expression.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TagFilter {
    /// Every message, tagged or not.
    #[default]
    All,
    /// Messages whose tag is one of these (with their hashes, sorted by hash).
    Tags(Vec<(u64, String)>),
}

impl TagFilter {
    /// Parses an expression; empty and `*` mean every message.
    pub fn parse(expression: &str) -> Result<TagFilter, ValidationError> {
        let trimmed = expression.trim();
        if trimmed.is_empty() || trimmed == "*" {
            return Ok(TagFilter::All);
        }
        let invalid = |reason: String| ValidationError::TagExpression {
            expression: expression.to_owned(),
            reason,
        };
        let mut tags = Vec::new();
        for part in trimmed.split("||") {
            let tag = part.trim();
            if tag.is_empty() {
                return Err(invalid("a tag is missing on one side of '||'".to_owned()));
            }
            if tag == "*" {
                return Err(invalid("'*' cannot be combined with tags".to_owned()));
            }
            validate::validate_tag(tag).map_err(|error| invalid(error.to_string()))?;
            tags.push((tag_hash(tag), tag.to_owned()));
        }
        tags.sort();
        tags.dedup();
        Ok(TagFilter::Tags(tags))
    }

    /// Whether the filter lets every message through.
    pub fn is_all(&self) -> bool {
        matches!(self, TagFilter::All)
    }

    /// Whether a consume queue entry with tag hash `hash` (0: no tag) may match.
    pub fn matches_hash(&self, hash: u64) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Tags(tags) => hash != 0 && tags.binary_search_by_key(&hash, |(hash, _)| *hash).is_ok(),
        }
    }

    /// Whether a message with `tag` matches (the exact check after the broker's hash check).
    pub fn matches_tag(&self, tag: Option<&str>) -> bool {
        match (self, tag) {
            (TagFilter::All, _) => true,
            (TagFilter::Tags(_), None) => false,
            (TagFilter::Tags(tags), Some(tag)) => tags.iter().any(|(_, wanted)| wanted == tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_parse_and_match() {
        assert_eq!(TagFilter::parse("*"), Ok(TagFilter::All));
        assert_eq!(TagFilter::parse(""), Ok(TagFilter::All));
        let filter = TagFilter::parse("a || b||c").unwrap();
        assert!(filter.matches_tag(Some("b")) && !filter.matches_tag(Some("d")) && !filter.matches_tag(None));
        assert!(filter.matches_hash(tag_hash("c")) && !filter.matches_hash(tag_hash("d")));
        assert!(!filter.matches_hash(0), "untagged messages never match a tag list");
        assert!(TagFilter::All.matches_hash(0));
    }

    #[test]
    fn malformed_expressions_say_why() {
        for (expression, reason) in [
            ("a ||", "missing"),
            ("|| b", "missing"),
            ("a | b", "tag \"a | b\" is invalid"),
            ("a || *", "'*' cannot"),
        ] {
            let error = TagFilter::parse(expression).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("tag expression {expression:?} is invalid")),
                "{error}"
            );
            assert!(error.contains(reason), "{error}");
        }
    }
}
