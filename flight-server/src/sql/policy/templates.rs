//! Approved query templates: the statement must be one of the provider's, with only its
//! literals free. Matching is on tokens, so whitespace, comments, keyword case and the
//! spelling of parameters (`?`, `$1`, or a literal) do not matter, and nothing else can
//! change: not a column, not an operator, not a clause.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{FlightError, Result};

#[derive(Debug, PartialEq, Eq)]
enum Shape {
    /// A literal or a parameter: any value fits.
    Value,
    Word(String),
    Other(String),
}

fn shape(sql: &str) -> Result<Vec<Shape>> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| FlightError::InvalidRequest(format!("SQL syntax: {e}")))?;
    let mut out: Vec<Shape> = tokens
        .into_iter()
        .filter_map(|t| match t {
            Token::Whitespace(_) => None,
            Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Placeholder(_) => Some(Shape::Value),
            Token::Word(w) if w.quote_style.is_none() => {
                Some(Shape::Word(w.value.to_ascii_lowercase()))
            }
            Token::Word(w) => Some(Shape::Word(w.value)),
            other => Some(Shape::Other(other.to_string())),
        })
        .collect();
    while out.last() == Some(&Shape::Other(";".into())) {
        out.pop();
    }
    Ok(out)
}

/// Whether `sql` is one of `templates`.
pub(crate) fn matches(sql: &str, templates: &[String]) -> Result<bool> {
    let query = shape(sql)?;
    for t in templates {
        if shape(t)? == query {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_literals_are_free() {
        let templates =
            vec!["SELECT region, count(*) FROM people WHERE age > ? GROUP BY region".to_string()];
        for ok in [
            "select region, COUNT(*) from people where age > 30 group by region",
            "SELECT region, count(*)\n FROM people -- hi\n WHERE age > $1 GROUP BY region;",
        ] {
            assert!(matches(ok, &templates).expect("tokens"), "{ok}");
        }
        for bad in [
            "SELECT region, count(*) FROM people WHERE age > 30 OR 1=1 GROUP BY region",
            "SELECT name, count(*) FROM people WHERE age > 30 GROUP BY name",
            "SELECT region, count(*) FROM people WHERE age < 30 GROUP BY region",
            "SELECT region, count(*) FROM people WHERE age > age GROUP BY region",
        ] {
            assert!(!matches(bad, &templates).expect("tokens"), "{bad}");
        }
    }
}
