//! What a user types into a search box, turned into a full-text query for each backend.
//!
//! User text is never spliced into FTS5 or tsquery syntax as typed: it is split into
//! words, each word into alphanumeric tokens, and only those tokens are written into
//! the query. So `name:x OR "` cannot change the query's structure, and a column name
//! such as `l_orderkey` matches as the phrase `l orderkey`, the same way both backends
//! tokenise it when indexing.

use crate::error::{CatalogError, Result};

/// More words than anyone types; bounds the query the database has to plan.
const MAX_WORDS: usize = 16;
/// Longer tokens are not words (hashes, base64) and would only slow the index down.
const MAX_TOKEN: usize = 64;

/// The words of a search, each as its lower-case tokens. An empty result means the
/// text held nothing searchable.
pub(crate) fn words(text: &str) -> Result<Vec<Vec<String>>> {
    let words: Vec<Vec<String>> = text
        .split_whitespace()
        .map(|word| {
            tokens(word)
                .into_iter()
                .filter(|t| t.chars().count() <= MAX_TOKEN)
                .collect::<Vec<_>>()
        })
        .filter(|w| !w.is_empty())
        .collect();
    if words.len() > MAX_WORDS {
        return Err(CatalogError::Invalid(format!(
            "search text has {} words; at most {MAX_WORDS} are allowed",
            words.len()
        )));
    }
    Ok(words)
}

/// Lower-case alphanumeric runs of `s`.
pub(crate) fn tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Text as it is indexed: tokens separated by spaces, so that both backends' tokenisers
/// see the same words the query side produces.
pub(crate) fn normalised(s: &str) -> String {
    tokens(s).join(" ")
}

/// Shortest last token matched as a prefix. A single letter would stand for every
/// word starting with it: the whole catalog to rank, and no help to the user.
pub(crate) const MIN_PREFIX: usize = 2;

/// Whether the last token of a word is matched as a prefix.
fn is_prefix(word: &[String]) -> bool {
    word.last().is_some_and(|t| t.chars().count() >= MIN_PREFIX)
}

/// An FTS5 MATCH expression: every word must match, each as a phrase whose last token
/// is a prefix (so `ship` finds `shipping` while the user is still typing) unless it is
/// a single character.
pub(crate) fn fts5_match(words: &[Vec<String>]) -> String {
    words
        .iter()
        .map(|w| {
            let star = if is_prefix(w) { "*" } else { "" };
            format!("\"{}\"{star}", w.join(" "))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The same query as a Postgres tsquery: `&` between words, `<->` (followed by)
/// between a word's tokens, `:*` prefix on its last token unless it is one character.
pub(crate) fn tsquery(words: &[Vec<String>]) -> String {
    words
        .iter()
        .map(|w| {
            let n = w.len();
            w.iter()
                .enumerate()
                .map(|(i, t)| {
                    if i + 1 == n && is_prefix(w) {
                        format!("'{t}':*")
                    } else {
                        format!("'{t}'")
                    }
                })
                .collect::<Vec<_>>()
                .join(" <-> ")
        })
        .collect::<Vec<_>>()
        .join(" & ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_syntax_typed_by_a_user_is_only_ever_words() {
        let w = words(r#"name:x OR "drop* ) NEAR(a b)"#).expect("words");
        assert_eq!(
            w,
            vec![
                vec!["name".to_string(), "x".into()],
                vec!["or".into()],
                vec!["drop".into()],
                vec!["near".into(), "a".into()],
                vec!["b".into()],
            ]
        );
        assert_eq!(fts5_match(&w), r#""name x" "or"* "drop"* "near a" "b""#);
        assert_eq!(
            tsquery(&w[..1]),
            "'name' <-> 'x'",
            "a word's tokens follow each other"
        );
    }

    #[test]
    fn a_single_letter_is_a_word_not_a_prefix() {
        let w = words("customer_i c ab").expect("words");
        assert_eq!(fts5_match(&w), r#""customer i" "c" "ab"*"#);
        assert_eq!(tsquery(&w), "'customer' <-> 'i' & 'c' & 'ab':*");
    }

    #[test]
    fn column_names_match_as_phrases() {
        let w = words("l_orderkey Ship").expect("words");
        assert_eq!(fts5_match(&w), r#""l orderkey"* "ship"*"#);
        assert_eq!(tsquery(&w), "'l' <-> 'orderkey':* & 'ship':*");
        assert_eq!(
            normalised("l_orderkey, L_SHIPDATE"),
            "l orderkey l shipdate"
        );
    }

    #[test]
    fn text_without_words_and_overlong_queries_are_told_apart() {
        assert!(words("  !!! ;; ").expect("ok").is_empty());
        let long = "w ".repeat(MAX_WORDS + 1);
        assert!(matches!(words(&long), Err(CatalogError::Invalid(_))));
        let token = "a".repeat(MAX_TOKEN + 1);
        assert!(words(&token).expect("ok").is_empty());
    }
}
