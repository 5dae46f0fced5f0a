//! The read-only rule of the query service: [`check_read_only`] refuses any plan that would change
//! something, with the statement's leading keywords in the message. A leaf: the service and the
//! forecasting functions both check their plans with it.

use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SQLOptions;

use crate::error::{QueryError, Result};

/// Refuses plans that would change anything: DDL, DML (INSERT, UPDATE, DELETE, COPY) and
/// statements (SET, transactions), wherever they appear in the plan.
pub fn check_read_only(plan: &LogicalPlan, sql: &str) -> Result<()> {
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    options.verify_plan(plan).map_err(|_| QueryError::ReadOnly {
        what: statement_words(sql),
    })
}

/// The leading keywords of a statement, for messages (`CREATE EXTERNAL TABLE`, `INSERT`, `COPY`).
fn statement_words(sql: &str) -> String {
    let words: Vec<String> = sql
        .split_whitespace()
        .take(3)
        .map(|word| {
            word.trim_matches(|c: char| !c.is_ascii_alphabetic())
                .to_ascii_uppercase()
        })
        .collect();
    let take = match words.first().map(String::as_str) {
        Some("CREATE") if words.get(1).is_some_and(|word| word == "EXTERNAL" || word == "OR") => 3,
        Some("CREATE" | "DROP" | "ALTER" | "EXPLAIN") => 2,
        _ => 1,
    };
    let what = words.into_iter().take(take).collect::<Vec<_>>().join(" ");
    if what.is_empty() { "the statement".into() } else { what }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_words_name_what_is_refused() {
        assert_eq!(
            statement_words("create external table x stored as parquet"),
            "CREATE EXTERNAL TABLE"
        );
        assert_eq!(statement_words("  insert into t values (1)"), "INSERT");
        assert_eq!(statement_words("COPY (select 1) TO '/tmp/x'"), "COPY");
        assert_eq!(statement_words("drop view hourly_volume"), "DROP VIEW");
    }
}
