//! Answers as text and bytes: an aligned table (the CLI), JSON rows, CSV, Arrow IPC stream.

use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::{QueryError, Result};
use crate::service::QueryAnswer;

/// An answer format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A table for people.
    Table,
    /// `{"columns": [...], "rows": [[...], ...], ...}`.
    Json,
    /// CSV with a header.
    Csv,
    /// Arrow IPC stream (`application/vnd.apache.arrow.stream`).
    Arrow,
}

impl std::str::FromStr for Format {
    type Err = QueryError;
    fn from_str(text: &str) -> Result<Format> {
        match text {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "arrow" => Ok(Format::Arrow),
            other => Err(QueryError::BadRequest(format!(
                "format {other:?} is unknown: json, csv, arrow or table"
            ))),
        }
    }
}

impl Format {
    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Table => "text/plain; charset=utf-8",
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

fn encode_error(error: arrow::error::ArrowError) -> QueryError {
    QueryError::Execution(format!("encoding the answer: {error}"))
}

/// Encodes `answer` in `format`.
pub fn encode(answer: &QueryAnswer, format: Format) -> Result<Vec<u8>> {
    match format {
        Format::Table => Ok(table(answer)?.into_bytes()),
        Format::Json => Ok(serde_json::to_vec(&json(answer)?).expect("JSON values serialize")),
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
                if answer.batches.is_empty() {
                    writer
                        .write(&RecordBatch::new_empty(answer.schema.clone()))
                        .map_err(encode_error)?;
                }
                for batch in &answer.batches {
                    writer.write(batch).map_err(encode_error)?;
                }
            }
            Ok(out)
        }
        Format::Arrow => {
            let mut out = Vec::new();
            {
                let mut writer =
                    arrow::ipc::writer::StreamWriter::try_new(&mut out, &answer.schema).map_err(encode_error)?;
                for batch in &answer.batches {
                    writer.write(batch).map_err(encode_error)?;
                }
                writer.finish().map_err(encode_error)?;
            }
            Ok(out)
        }
    }
}

/// The answer as an aligned text table.
pub fn table(answer: &QueryAnswer) -> Result<String> {
    if answer.batches.is_empty() {
        let names: Vec<&str> = answer
            .schema
            .fields()
            .iter()
            .map(|field| field.name().as_str())
            .collect();
        return Ok(format!("{}\n(0 rows)\n", names.join(" | ")));
    }
    let text = arrow::util::pretty::pretty_format_batches(&answer.batches).map_err(encode_error)?;
    Ok(format!("{text}\n({} rows)\n", answer.rows))
}

/// One value as a JSON value: numbers and booleans stay themselves, nulls are null, everything
/// else (timestamps, lists, maps, binary) is its display text.
fn json_value(formatter: &ArrayFormatter<'_>, array: &dyn arrow::array::Array, row: usize) -> serde_json::Value {
    use arrow::datatypes::DataType;
    if array.is_null(row) {
        return serde_json::Value::Null;
    }
    let text = formatter.value(row).to_string();
    match array.data_type() {
        DataType::Boolean => serde_json::Value::Bool(text == "true"),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..) => serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        _ => serde_json::Value::String(text),
    }
}

/// The answer as JSON: column names and types, rows as arrays, the row count and time taken.
pub fn json(answer: &QueryAnswer) -> Result<serde_json::Value> {
    let options = FormatOptions::default().with_null("");
    let mut rows = Vec::with_capacity(answer.rows);
    for batch in &answer.batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(encode_error)?;
        for row in 0..batch.num_rows() {
            let values: Vec<serde_json::Value> = formatters
                .iter()
                .zip(batch.columns())
                .map(|(formatter, column)| json_value(formatter, column.as_ref(), row))
                .collect();
            rows.push(serde_json::Value::Array(values));
        }
    }
    let columns: Vec<serde_json::Value> = answer
        .schema
        .fields()
        .iter()
        .map(|field| serde_json::json!({"name": field.name(), "type": field.data_type().to_string()}))
        .collect();
    Ok(serde_json::json!({
        "columns": columns,
        "rows": rows,
        "row_count": answer.rows,
        "elapsed_ms": answer.elapsed.as_secs_f64() * 1000.0,
    }))
}
