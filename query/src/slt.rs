//! A runner of sqllogictest-style files (`query/tests/slt/*.slt`): each record is a statement and
//! what it must give.
//!
//! ```text
//! # a comment
//! query [rowsort|contains]
//! SELECT topic, count(*) FROM messages GROUP BY topic
//! ----
//! topic-0 800
//!
//! statement ok
//! SELECT 1
//!
//! statement error <text the error must contain>
//! INSERT INTO messages SELECT * FROM messages
//! ```
//!
//! Values print as `meridian sql --format table` prints them, separated by one space; null is
//! `NULL`. `rowsort` compares rows sorted; `contains` checks that each expected line occurs in
//! some row (for EXPLAIN plans). Setting `MERIDIAN_SLT_PRINT=1` prints every answer, to help
//! writing a new record (check what it prints before pasting it).

use std::path::Path;

use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::service::{QueryAnswer, QueryService};

/// One record of a file.
#[derive(Debug)]
enum Record {
    Query {
        line: usize,
        mode: String,
        sql: String,
        expected: Vec<String>,
    },
    StatementOk {
        line: usize,
        sql: String,
    },
    StatementError {
        line: usize,
        sql: String,
        message: String,
    },
}

fn parse(text: &str) -> Result<Vec<Record>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index].trim_end();
        if line.is_empty() || line.starts_with('#') {
            index += 1;
            continue;
        }
        let header_line = index + 1;
        index += 1;
        let mut sql = Vec::new();
        while index < lines.len() && !lines[index].trim().is_empty() && lines[index].trim_end() != "----" {
            sql.push(lines[index]);
            index += 1;
        }
        let sql = sql.join("\n");
        if let Some(mode) = line.strip_prefix("query") {
            if index >= lines.len() || lines[index].trim_end() != "----" {
                return Err(format!("line {header_line}: a query needs ---- and its expected rows"));
            }
            index += 1;
            let mut expected = Vec::new();
            while index < lines.len() && !lines[index].trim().is_empty() {
                expected.push(lines[index].trim_end().to_owned());
                index += 1;
            }
            records.push(Record::Query {
                line: header_line,
                mode: mode.trim().to_owned(),
                sql,
                expected,
            });
        } else if line == "statement ok" {
            records.push(Record::StatementOk { line: header_line, sql });
        } else if let Some(message) = line.strip_prefix("statement error") {
            records.push(Record::StatementError {
                line: header_line,
                sql,
                message: message.trim().to_owned(),
            });
        } else {
            return Err(format!("line {header_line}: unknown record {line:?}"));
        }
    }
    Ok(records)
}

/// The rows of an answer as text lines.
pub fn rows(answer: &QueryAnswer) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in &answer.batches {
        let formatters: Vec<ArrayFormatter<'_>> = batch
            .columns()
            .iter()
            .map(|column| ArrayFormatter::try_new(column.as_ref(), &options).expect("every type formats"))
            .collect();
        for row in 0..batch.num_rows() {
            let values: Vec<String> = formatters
                .iter()
                .map(|formatter| formatter.value(row).to_string())
                .collect();
            rows.push(values.join(" ").trim_end().to_owned());
        }
    }
    rows
}

/// Runs every record of `path` against `service`; returns the failures, each naming its line.
pub async fn run_file(service: &QueryService, path: &Path) -> Vec<String> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("reading {name}: {error}"));
    let records = match parse(&text) {
        Ok(records) => records,
        Err(error) => return vec![format!("{name}: {error}")],
    };
    let print = std::env::var_os("MERIDIAN_SLT_PRINT").is_some();
    let mut failures = Vec::new();
    for record in records {
        match record {
            Record::Query {
                line,
                mode,
                sql,
                expected,
            } => match service.sql(&sql).await {
                Ok(answer) => {
                    let mut actual = rows(&answer);
                    if print {
                        println!("{name}:{line}\n{sql}\n----\n{}\n", actual.join("\n"));
                    }
                    let ok = match mode.as_str() {
                        "" => actual == expected,
                        "rowsort" => {
                            let mut expected = expected.clone();
                            actual.sort();
                            expected.sort();
                            actual == expected
                        }
                        "lacks" => expected
                            .iter()
                            .all(|unwanted| actual.iter().all(|row| !row.contains(unwanted.trim()))),
                        "contains" => expected
                            .iter()
                            .all(|wanted| actual.iter().any(|row| row.contains(wanted.trim()))),
                        other => {
                            failures.push(format!("{name}:{line}: unknown query mode {other:?}"));
                            continue;
                        }
                    };
                    if !ok {
                        failures.push(format!(
                            "{name}:{line}: {sql}\n  expected:\n    {}\n  actual:\n    {}",
                            expected.join("\n    "),
                            actual.join("\n    ")
                        ));
                    }
                }
                Err(error) => failures.push(format!("{name}:{line}: {sql}\n  failed: {error}")),
            },
            Record::StatementOk { line, sql } => {
                if let Err(error) = service.sql(&sql).await {
                    failures.push(format!("{name}:{line}: {sql}\n  failed: {error}"));
                }
            }
            Record::StatementError { line, sql, message } => match service.sql(&sql).await {
                Ok(_) => failures.push(format!(
                    "{name}:{line}: {sql}\n  succeeded, expected an error with {message:?}"
                )),
                Err(error) => {
                    if print {
                        println!("{name}:{line}\n{sql}\n-> {error}\n");
                    }
                    if !error.to_string().contains(&message) {
                        failures.push(format!(
                            "{name}:{line}: {sql}\n  error {:?} does not contain {message:?}",
                            error.to_string()
                        ));
                    }
                }
            },
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse() {
        let text = "# c\nquery rowsort\nSELECT 1\n----\n1\n\nstatement error read-only\nINSERT INTO t\nVALUES (1)\n\nstatement ok\nSELECT 2\n";
        let records = parse(text).unwrap();
        assert_eq!(records.len(), 3);
        match &records[1] {
            Record::StatementError { line, sql, message } => {
                assert_eq!(
                    (*line, sql.as_str(), message.as_str()),
                    (7, "INSERT INTO t\nVALUES (1)", "read-only")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(parse("query\nSELECT 1\n").is_err());
    }
}
