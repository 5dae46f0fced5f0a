//! Scalar functions the session replaces: DataFusion's own, made fast on the archive's data.
//!
//! Every timestamp of the archive is `Timestamp(ms, "UTC")`. DataFusion 55's `date_trunc` truncates
//! a timestamp without a time zone to an hour or a day by arithmetic, but one with a zone, even
//! UTC, goes through chrono's time-zone conversion for every value: about 85 ns a row, so
//! `date_trunc('hour', store_timestamp)` over 20M messages cost 1.7 s of the 2.1 s of an hourly
//! count. [`UtcDateTrunc`] hands a UTC array to the same function labelled without a zone (a
//! metadata change, no copy), where wall-clock time is UTC time, so every granularity gives the
//! same instants, and labels the answer UTC again.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Field, FieldRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use datafusion::error::Result;
use datafusion::functions::datetime::date_trunc::DateTruncFunc;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// Registers the replacements on `ctx` (under the names and aliases of the functions they replace).
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(UtcDateTrunc::default()));
}

/// Whether a timestamp's zone is UTC by name.
fn is_utc(zone: &str) -> bool {
    zone == "+00:00" || zone.eq_ignore_ascii_case("UTC") || zone.eq_ignore_ascii_case("Etc/UTC")
}

/// `array` with its time zone replaced by `zone` (same values).
fn with_zone(array: &dyn Array, unit: TimeUnit, zone: Option<Arc<str>>) -> ArrayRef {
    match unit {
        TimeUnit::Second => Arc::new(
            array
                .as_primitive::<TimestampSecondType>()
                .clone()
                .with_timezone_opt(zone),
        ),
        TimeUnit::Millisecond => Arc::new(
            array
                .as_primitive::<TimestampMillisecondType>()
                .clone()
                .with_timezone_opt(zone),
        ),
        TimeUnit::Microsecond => Arc::new(
            array
                .as_primitive::<TimestampMicrosecondType>()
                .clone()
                .with_timezone_opt(zone),
        ),
        TimeUnit::Nanosecond => Arc::new(
            array
                .as_primitive::<TimestampNanosecondType>()
                .clone()
                .with_timezone_opt(zone),
        ),
    }
}

/// `date_trunc` (and `datetrunc`): DataFusion's, with arrays of UTC timestamps truncated as
/// timestamps without a zone.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct UtcDateTrunc {
    inner: DateTruncFunc,
}

impl ScalarUDFImpl for UtcDateTrunc {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let utc_array = match args.args.get(1) {
            Some(ColumnarValue::Array(array)) => match array.data_type() {
                DataType::Timestamp(unit, Some(zone)) if is_utc(zone) => Some((*unit, zone.clone())),
                _ => None,
            },
            _ => None,
        };
        let Some((unit, zone)) = utc_array else {
            return self.inner.invoke_with_args(args);
        };
        let ColumnarValue::Array(array) = &args.args[1] else {
            unreachable!("matched an array above")
        };
        args.args[1] = ColumnarValue::Array(with_zone(array.as_ref(), unit, None));
        let naive = DataType::Timestamp(unit, None);
        args.arg_fields[1] = Arc::new(args.arg_fields[1].as_ref().clone().with_data_type(naive.clone()));
        args.return_field = Arc::new(Field::new(
            args.return_field.name(),
            naive,
            args.return_field.is_nullable(),
        ));
        match self.inner.invoke_with_args(args)? {
            ColumnarValue::Array(truncated) => {
                Ok(ColumnarValue::Array(with_zone(truncated.as_ref(), unit, Some(zone))))
            }
            ColumnarValue::Scalar(_) => unreachable!("date_trunc of an array is an array"),
        }
    }

    fn output_ordering(&self, input: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(input)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::TimestampMillisecondArray;
    use datafusion::config::ConfigOptions;
    use datafusion::scalar::ScalarValue;

    use super::*;

    fn truncate(function: &dyn ScalarUDFImpl, granularity: &str, array: ArrayRef) -> ArrayRef {
        let field = Arc::new(Field::new("t", array.data_type().clone(), true));
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(granularity.into()))),
                ColumnarValue::Array(array.clone()),
            ],
            arg_fields: vec![Arc::new(Field::new("g", DataType::Utf8, false)), field.clone()],
            number_rows: array.len(),
            return_field: Arc::new(field.as_ref().clone().with_name("date_trunc")),
            config_options: Arc::new(ConfigOptions::default()),
        };
        match function.invoke_with_args(args).unwrap() {
            ColumnarValue::Array(array) => array,
            ColumnarValue::Scalar(_) => panic!("an array in, an array out"),
        }
    }

    /// Every granularity gives what DataFusion's own function gives for UTC timestamps (its
    /// time-zone path), nulls and times before 1970 included, with the zone kept.
    #[test]
    fn utc_date_trunc_equals_datafusions_for_every_granularity() {
        // Spread over 1906..2096 by a multiplicative hash of the index.
        let mut values: Vec<Option<i64>> = (0..2000i64)
            .map(|index| Some(index.wrapping_mul(2_654_435_761_123).rem_euclid(6_000_000_000_000) - 2_000_000_000_000))
            .collect();
        values.extend([
            None,
            Some(0),
            Some(-1),
            Some(1_795_391_999_999),
            Some(1_795_392_000_000),
        ]);
        let ours = UtcDateTrunc::default();
        let theirs = DateTruncFunc::new();
        for zone in ["UTC", "+00:00"] {
            let array: ArrayRef = Arc::new(TimestampMillisecondArray::from(values.clone()).with_timezone(zone));
            for granularity in [
                "millisecond",
                "second",
                "minute",
                "hour",
                "day",
                "week",
                "month",
                "quarter",
                "year",
            ] {
                let expected = truncate(&theirs, granularity, array.clone());
                let got = truncate(&ours, granularity, array.clone());
                assert_eq!(got.data_type(), expected.data_type(), "{granularity} in {zone}");
                assert_eq!(got.as_ref(), expected.as_ref(), "{granularity} in {zone}");
            }
        }
    }

    /// Other zones and zone-less timestamps are DataFusion's function unchanged.
    #[test]
    fn other_zones_are_left_to_datafusion() {
        let values = vec![Some(1_795_391_999_999i64), Some(1_795_395_600_123)];
        let ours = UtcDateTrunc::default();
        let theirs = DateTruncFunc::new();
        for zone in [Some("Asia/Kathmandu"), Some("+05:45"), None] {
            let array = TimestampMillisecondArray::from(values.clone());
            let array: ArrayRef = Arc::new(match zone {
                Some(zone) => array.with_timezone(zone),
                None => array,
            });
            assert_eq!(
                truncate(&ours, "hour", array.clone()).as_ref(),
                truncate(&theirs, "hour", array).as_ref()
            );
        }
        assert!(is_utc("utc") && is_utc("Etc/UTC") && !is_utc("Europe/London"));
    }
}
