//! RocketMQ's SQL-92 message filter (`expressionType = SQL92`), the subset RocketMQ supports:
//! comparisons `= <> > < >= <=`, `BETWEEN a AND b`, `IN ('a', ...)` (and `NOT BETWEEN`,
//! `NOT IN`), `IS NULL`, `IS NOT NULL`, `AND`, `OR`, `NOT`, parentheses, numeric constants
//! (integers and decimals), string constants in single quotes (`''` for a quote), `TRUE` and
//! `FALSE`, over a message's user properties (and `TAGS`, `KEYS`, as RocketMQ exposes them).
//!
//! [`parse`] makes a [`Filter`] (errors name the position and what was expected); [`Filter::matches`]
//! evaluates it against a property lookup. As in RocketMQ: a property that is absent is NULL,
//! and any comparison with NULL is false (so `NOT (a = 1)` is false too when `a` is absent); a
//! property compared with a number is read as a number (false when it is not one).

/// Longest expression accepted, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 4096;
/// Deepest nesting accepted (parentheses and NOTs), so a hostile expression cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// A constant.
#[derive(Debug, Clone, PartialEq)]
enum Constant {
    Number(f64),
    Text(String),
    Boolean(bool),
}

/// An operand: a property or a constant.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Property(String),
    Constant(Constant),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Equal,
    NotEqual,
    Greater,
    Less,
    GreaterOrEqual,
    LessOrEqual,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
enum Expression {
    And(Box<Expression>, Box<Expression>),
    Or(Box<Expression>, Box<Expression>),
    Not(Box<Expression>),
    Compare(Operand, Comparison, Operand),
    Between {
        operand: Operand,
        low: Operand,
        high: Operand,
        negated: bool,
    },
    In {
        operand: Operand,
        values: Vec<String>,
        negated: bool,
    },
    IsNull {
        operand: Operand,
        negated: bool,
    },
    Constant(bool),
}

/// A compiled SQL-92 filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    expression: Expression,
}

/// Why an expression is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SQL92 filter {expression:?} is invalid at byte {position}: {problem}")]
pub struct FilterError {
    /// The expression (cut to 200 characters).
    pub expression: String,
    /// Byte position of the problem.
    pub position: usize,
    /// What was expected.
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Identifier(String),
    Text(String),
    Number(f64),
    Symbol(&'static str),
    End,
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<(Token, usize)>,
    next: usize,
    depth: usize,
}

fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, (usize, String)> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let byte = bytes[position];
        let start = position;
        if byte.is_ascii_whitespace() {
            position += 1;
            continue;
        }
        if byte == b'\'' {
            let mut value = String::new();
            position += 1;
            loop {
                let Some(rest) = text.get(position..) else {
                    return Err((start, "unterminated string constant".into()));
                };
                let Some(quote) = rest.find('\'') else {
                    return Err((start, "unterminated string constant".into()));
                };
                value.push_str(&rest[..quote]);
                position += quote + 1;
                if bytes.get(position) == Some(&b'\'') {
                    value.push('\'');
                    position += 1;
                } else {
                    break;
                }
            }
            tokens.push((Token::Text(value), start));
            continue;
        }
        if byte.is_ascii_digit() || (byte == b'-' && bytes.get(position + 1).is_some_and(u8::is_ascii_digit)) {
            position += 1;
            while position < bytes.len() && (bytes[position].is_ascii_digit() || bytes[position] == b'.') {
                position += 1;
            }
            // RocketMQ's grammar allows a trailing L on longs.
            let literal = &text[start..position];
            if bytes.get(position).is_some_and(|byte| *byte == b'L' || *byte == b'l') {
                position += 1;
            }
            let number = literal
                .parse::<f64>()
                .map_err(|_| (start, format!("{literal:?} is not a number")))?;
            tokens.push((Token::Number(number), start));
            continue;
        }
        if byte.is_ascii_alphabetic() || byte == b'_' || byte == b'$' {
            while position < bytes.len()
                && (bytes[position].is_ascii_alphanumeric() || matches!(bytes[position], b'_' | b'.' | b'$' | b'-'))
            {
                position += 1;
            }
            tokens.push((Token::Identifier(text[start..position].to_owned()), start));
            continue;
        }
        let symbol = ["<>", ">=", "<=", "=", ">", "<", "(", ")", ","]
            .into_iter()
            .find(|symbol| text[position..].starts_with(symbol))
            .ok_or_else(|| {
                let found: String = text[position..].chars().take(1).collect();
                (position, format!("unexpected {found:?}"))
            })?;
        position += symbol.len();
        tokens.push((Token::Symbol(symbol), start));
    }
    tokens.push((Token::End, text.len()));
    Ok(tokens)
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.next].0
    }

    fn position(&self) -> usize {
        self.tokens[self.next].1
    }

    fn advance(&mut self) -> Token {
        let token = self.tokens[self.next].0.clone();
        if self.next + 1 < self.tokens.len() {
            self.next += 1;
        }
        token
    }

    fn error(&self, problem: impl Into<String>) -> FilterError {
        FilterError {
            expression: self.text.chars().take(200).collect(),
            position: self.position(),
            problem: problem.into(),
        }
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Token::Identifier(name) if name.eq_ignore_ascii_case(word)) {
            self.advance();
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, word: &str) -> Result<(), FilterError> {
        if self.keyword(word) {
            Ok(())
        } else {
            Err(self.error(format!("expected {word}")))
        }
    }

    fn symbol(&mut self, symbol: &str) -> bool {
        if matches!(self.peek(), Token::Symbol(found) if *found == symbol) {
            self.advance();
            true
        } else {
            false
        }
    }

    fn nested<T>(&mut self, parse: impl FnOnce(&mut Self) -> Result<T, FilterError>) -> Result<T, FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let result = parse(self);
        self.depth -= 1;
        result
    }

    fn or(&mut self) -> Result<Expression, FilterError> {
        let mut left = self.and()?;
        while self.keyword("OR") {
            left = Expression::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expression, FilterError> {
        let mut left = self.not()?;
        while self.keyword("AND") {
            left = Expression::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expression, FilterError> {
        if self.keyword("NOT") {
            return self.nested(|parser| Ok(Expression::Not(Box::new(parser.not()?))));
        }
        self.predicate()
    }

    fn operand(&mut self) -> Result<Operand, FilterError> {
        match self.advance() {
            Token::Identifier(name) if name.eq_ignore_ascii_case("TRUE") => {
                Ok(Operand::Constant(Constant::Boolean(true)))
            }
            Token::Identifier(name) if name.eq_ignore_ascii_case("FALSE") => {
                Ok(Operand::Constant(Constant::Boolean(false)))
            }
            Token::Identifier(name) if is_keyword(&name) => {
                Err(self.error(format!("expected a property, found {name}")))
            }
            Token::Identifier(name) => Ok(Operand::Property(name)),
            Token::Text(text) => Ok(Operand::Constant(Constant::Text(text))),
            Token::Number(number) => Ok(Operand::Constant(Constant::Number(number))),
            _ => Err(self.error("expected a property, a number, a 'string', TRUE or FALSE")),
        }
    }

    fn predicate(&mut self) -> Result<Expression, FilterError> {
        if self.symbol("(") {
            let inner = self.nested(Parser::or)?;
            if !self.symbol(")") {
                return Err(self.error("expected )"));
            }
            return Ok(inner);
        }
        let operand = self.operand()?;
        let comparison = match self.peek() {
            Token::Symbol("=") => Some(Comparison::Equal),
            Token::Symbol("<>") => Some(Comparison::NotEqual),
            Token::Symbol(">") => Some(Comparison::Greater),
            Token::Symbol("<") => Some(Comparison::Less),
            Token::Symbol(">=") => Some(Comparison::GreaterOrEqual),
            Token::Symbol("<=") => Some(Comparison::LessOrEqual),
            _ => None,
        };
        if let Some(comparison) = comparison {
            self.advance();
            let right = self.operand()?;
            return Ok(Expression::Compare(operand, comparison, right));
        }
        if self.keyword("IS") {
            let negated = self.keyword("NOT");
            self.expect_keyword("NULL")?;
            return Ok(Expression::IsNull { operand, negated });
        }
        let negated = self.keyword("NOT");
        if self.keyword("BETWEEN") {
            let low = self.operand()?;
            self.expect_keyword("AND")?;
            let high = self.operand()?;
            return Ok(Expression::Between {
                operand,
                low,
                high,
                negated,
            });
        }
        if self.keyword("IN") {
            if !self.symbol("(") {
                return Err(self.error("expected ( after IN"));
            }
            let mut values = Vec::new();
            loop {
                match self.advance() {
                    Token::Text(text) => values.push(text),
                    _ => return Err(self.error("IN takes 'string' constants")),
                }
                if self.symbol(")") {
                    break;
                }
                if !self.symbol(",") {
                    return Err(self.error("expected , or )"));
                }
            }
            return Ok(Expression::In {
                operand,
                values,
                negated,
            });
        }
        if negated {
            return Err(self.error("expected BETWEEN or IN after NOT"));
        }
        match operand {
            Operand::Constant(Constant::Boolean(value)) => Ok(Expression::Constant(value)),
            _ => Err(self.error("expected a comparison, BETWEEN, IN or IS [NOT] NULL")),
        }
    }
}

fn is_keyword(word: &str) -> bool {
    ["AND", "OR", "NOT", "BETWEEN", "IN", "IS", "NULL"]
        .iter()
        .any(|keyword| word.eq_ignore_ascii_case(keyword))
}

/// Parses a SQL-92 filter expression.
pub fn parse(text: &str) -> Result<Filter, FilterError> {
    let refuse = |position: usize, problem: String| FilterError {
        expression: text.chars().take(200).collect(),
        position,
        problem,
    };
    if text.len() > MAX_EXPRESSION_LEN {
        return Err(refuse(
            MAX_EXPRESSION_LEN,
            format!("longer than {MAX_EXPRESSION_LEN} bytes"),
        ));
    }
    let tokens = tokenize(text).map_err(|(position, problem)| refuse(position, problem))?;
    let mut parser = Parser {
        text,
        tokens,
        next: 0,
        depth: 0,
    };
    if parser.peek() == &Token::End {
        return Err(parser.error("the expression is empty"));
    }
    let expression = parser.or()?;
    if parser.peek() != &Token::End {
        return Err(parser.error("expected AND, OR or the end"));
    }
    Ok(Filter { expression })
}

/// A value during evaluation.
enum Value<'a> {
    Null,
    Text(&'a str),
    Number(f64),
    Boolean(bool),
}

fn value<'a>(operand: &'a Operand, lookup: &impl Fn(&str) -> Option<&'a str>) -> Value<'a> {
    match operand {
        Operand::Property(name) => lookup(name).map_or(Value::Null, Value::Text),
        Operand::Constant(Constant::Number(number)) => Value::Number(*number),
        Operand::Constant(Constant::Text(text)) => Value::Text(text),
        Operand::Constant(Constant::Boolean(value)) => Value::Boolean(*value),
    }
}

fn as_number(value: &Value<'_>) -> Option<f64> {
    match value {
        Value::Number(number) => Some(*number),
        Value::Text(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// Orders two values the way RocketMQ's comparison does: numbers when either side is a number,
/// text with text, booleans for equality only; `None` when they cannot be compared (NULL).
fn compare(left: &Value<'_>, right: &Value<'_>) -> Option<std::cmp::Ordering> {
    match (left, right) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Number(_), _) | (_, Value::Number(_)) => as_number(left)?.partial_cmp(&as_number(right)?),
        (Value::Text(left), Value::Text(right)) => Some(left.cmp(right)),
        (Value::Boolean(left), Value::Boolean(right)) => Some(left.cmp(right)),
        (Value::Boolean(flag), Value::Text(text)) => text.trim().parse::<bool>().ok().map(|other| flag.cmp(&other)),
        (Value::Text(text), Value::Boolean(flag)) => text.trim().parse::<bool>().ok().map(|other| other.cmp(flag)),
    }
}

fn evaluate<'a>(expression: &'a Expression, lookup: &impl Fn(&str) -> Option<&'a str>) -> bool {
    use std::cmp::Ordering;
    match expression {
        Expression::And(left, right) => evaluate(left, lookup) && evaluate(right, lookup),
        Expression::Or(left, right) => evaluate(left, lookup) || evaluate(right, lookup),
        Expression::Not(inner) => !evaluate(inner, lookup) && !has_null(inner, lookup),
        Expression::Constant(value) => *value,
        Expression::Compare(left, comparison, right) => {
            let Some(order) = compare(&value(left, lookup), &value(right, lookup)) else {
                return false;
            };
            match comparison {
                Comparison::Equal => order == Ordering::Equal,
                Comparison::NotEqual => order != Ordering::Equal,
                Comparison::Greater => order == Ordering::Greater,
                Comparison::Less => order == Ordering::Less,
                Comparison::GreaterOrEqual => order != Ordering::Less,
                Comparison::LessOrEqual => order != Ordering::Greater,
            }
        }
        Expression::Between {
            operand,
            low,
            high,
            negated,
        } => {
            let operand = value(operand, lookup);
            let (Some(above), Some(below)) = (
                compare(&operand, &value(low, lookup)),
                compare(&operand, &value(high, lookup)),
            ) else {
                return false;
            };
            let inside = above != Ordering::Less && below != Ordering::Greater;
            inside != *negated
        }
        Expression::In {
            operand,
            values,
            negated,
        } => match value(operand, lookup) {
            Value::Text(text) => values.iter().any(|candidate| candidate == text) != *negated,
            _ => false,
        },
        Expression::IsNull { operand, negated } => matches!(value(operand, lookup), Value::Null) != *negated,
    }
}

/// Whether a comparison directly under a NOT meets a NULL (SQL's unknown stays unknown under NOT).
fn has_null<'a>(expression: &'a Expression, lookup: &impl Fn(&str) -> Option<&'a str>) -> bool {
    let null = |operand: &'a Operand| matches!(value(operand, lookup), Value::Null);
    match expression {
        Expression::Compare(left, _, right) => null(left) || null(right),
        Expression::Between { operand, low, high, .. } => null(operand) || null(low) || null(high),
        Expression::In { operand, .. } => null(operand),
        _ => false,
    }
}

impl Filter {
    /// Whether a message whose properties `lookup` reads passes the filter.
    pub fn matches<'a>(&'a self, lookup: impl Fn(&str) -> Option<&'a str>) -> bool {
        evaluate(&self.expression, &lookup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matches(expression: &str, properties: &[(&str, &str)]) -> bool {
        let filter = parse(expression).unwrap_or_else(|error| panic!("{error}"));
        let properties: Vec<(String, String)> = properties
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        filter.matches(|name| {
            properties
                .iter()
                .find(|(found, _)| found == name)
                .map(|(_, value)| value.as_str())
        })
    }

    #[test]
    fn the_rocketmq_subset_evaluates_as_rocketmq_does() {
        let order = [("a", "5"), ("region", "eu"), ("TAGS", "TagA"), ("vip", "true")];
        for (expression, expected) in [
            ("a = 5", true),
            ("a > 3 AND a < 10", true),
            ("a >= 5 and a <= 5", true),
            ("a <> 5", false),
            ("a BETWEEN 1 AND 5", true),
            ("a NOT BETWEEN 1 AND 4", true),
            ("a BETWEEN 6 AND 9", false),
            ("region IN ('eu', 'us')", true),
            ("region NOT IN ('eu')", false),
            ("region = 'eu' OR a = 100", true),
            ("NOT (region = 'us')", true),
            ("TAGS = 'TagA' AND (a > 4.5)", true),
            ("missing IS NULL", true),
            ("region IS NOT NULL", true),
            ("missing = 1", false),
            ("missing <> 1", false),
            ("NOT (missing = 1)", false),
            ("missing IN ('x')", false),
            ("region > 3", false),
            ("vip = TRUE", true),
            ("TRUE", true),
            ("FALSE OR a = 5", true),
            ("region = 'it''s'", false),
            ("a = 5L", true),
            ("a > -1", true),
        ] {
            assert_eq!(matches(expression, &order), expected, "{expression}");
        }
    }

    #[test]
    fn bad_expressions_name_the_position_and_what_was_expected() {
        for (expression, problem) in [
            ("", "empty"),
            ("a =", "expected a property"),
            ("a = 'open", "unterminated"),
            ("a IN (1)", "IN takes 'string' constants"),
            ("(a = 1", "expected )"),
            ("a = 1 b", "expected AND, OR or the end"),
            ("a # 1", "unexpected"),
            ("a", "expected a comparison"),
            ("a NOT LIKE 'x'", "expected BETWEEN or IN"),
        ] {
            let error = parse(expression).unwrap_err();
            assert!(error.to_string().contains(problem), "{expression}: {error}");
        }
        let deep = format!("{}a = 1{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep).unwrap_err().problem.contains("nested deeper"));
        assert!(parse(&"a = 1 OR ".repeat(1000)).is_err());
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in ".{0,120}") {
            if let Ok(filter) = parse(&text) {
                let _ = filter.matches(|_| Some("1"));
                let _ = filter.matches(|_| None);
            }
        }

        #[test]
        fn numeric_comparisons_agree_with_rust(left in -1000i64..1000, right in -1000i64..1000) {
            let text = left.to_string();
            prop_assert_eq!(matches(&format!("x > {right}"), &[("x", &text)]), left > right);
            prop_assert_eq!(matches(&format!("x BETWEEN {right} AND {}", right + 10), &[("x", &text)]), left >= right && left <= right + 10);
        }
    }
}
