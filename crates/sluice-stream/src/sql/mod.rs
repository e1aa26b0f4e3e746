//! Pipeline SQL: the catalog (topics, window table functions, functions), planning with
//! DataFusion, and errors that name a position.

pub mod catalog;
pub mod plan;

use datafusion_common::DataFusionError;

pub use catalog::Catalog;
pub use plan::{plan, PipelinePlan};

/// A SQL error: the reason, and the position (1-based line and column) where known.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SqlError {
    pub message: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for SqlError {}

/// `" at Line: 3, Column: 7"` in sqlparser's messages.
fn parser_position(msg: &str) -> Option<(u64, u64, String)> {
    let at = msg.rfind(" at Line: ")?;
    let rest = &msg[at + " at Line: ".len()..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((line.trim().parse().ok()?, column.parse().ok()?, msg[..at].to_string()))
}

/// The 1-based line and column of the first whole-word occurrence of `word` in `sql`.
fn find_word(sql: &str, word: &str) -> Option<(u64, u64)> {
    if word.is_empty() {
        return None;
    }
    let mut from = 0;
    while let Some(i) = sql[from..].find(word).map(|i| i + from) {
        let before = sql[..i].chars().next_back();
        let after = sql[i + word.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if boundary(before) && boundary(after) {
            let line = sql[..i].matches('\n').count() as u64 + 1;
            let column = sql[..i].rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
            return Some((line, column));
        }
        from = i + word.len();
    }
    None
}

fn clean(msg: &str) -> String {
    let mut m = msg.trim();
    for prefix in ["Error during planning: ", "SQL error: ", "Schema error: ", "This feature is not implemented: ", "Optimizer rule", "Invalid input plan passed to Analyzer\ncaused by\n"] {
        if let Some(rest) = m.strip_prefix(prefix) {
            m = rest.trim();
        }
    }
    m.replace("ParserError(\"", "").trim_end_matches("\")").to_string()
}

impl SqlError {
    /// An error about `word` (a function or column name), placed at its first whole-word
    /// occurrence in `sql` (ignoring case).
    pub fn at_word(message: String, sql: &str, word: &str) -> SqlError {
        let lower = sql.to_ascii_lowercase();
        let pos = find_word(&lower, &word.to_ascii_lowercase());
        SqlError { message, line: pos.map(|p| p.0), column: pos.map(|p| p.1) }
    }

    /// Converts a DataFusion error, finding the position from its diagnostic span, the
    /// parser's message, or the first name it quotes.
    pub fn from_datafusion(e: &DataFusionError, sql: &str) -> SqlError {
        let root = e.find_root();
        let text = clean(&root.to_string());
        if let Some(d) = e.diagnostic() {
            if let Some(span) = d.span.filter(|s| s.start.line > 0) {
                return SqlError { message: text, line: Some(span.start.line), column: Some(span.start.column) };
            }
        }
        if let Some((line, column, message)) = parser_position(&text) {
            return SqlError { message: clean(&message), line: Some(line), column: Some(column) };
        }
        if text.ends_with("found: EOF") {
            let line = sql.matches('\n').count() as u64 + 1;
            let column = sql.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
            return SqlError { message: format!("{text} (the query ends too early)"), line: Some(line), column: Some(column) };
        }
        // A refused clause: point at its keyword.
        for kw in ["ORDER BY", "LIMIT", "JOIN", "UNION", "OVER", "DISTINCT", "GROUPING SETS", "ROLLUP", "CUBE"] {
            if text.starts_with(kw) || text.contains(&format!("{kw} ")) {
                if let Some(i) = sql.to_ascii_uppercase().find(kw) {
                    let line = sql[..i].matches('\n').count() as u64 + 1;
                    let column = sql[..i].rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
                    return SqlError { message: text, line: Some(line), column: Some(column) };
                }
            }
        }
        // An unknown column: point at it.
        if let Some(rest) = text.strip_prefix("No field named ") {
            let word: String = rest.trim_start_matches('"').chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            let e = SqlError::at_word(text.clone(), sql, &word);
            if e.line.is_some() {
                return e;
            }
        }
        // Otherwise point at the first quoted name of the message that the SQL contains.
        let quoted = text.split(['"', '\'']).skip(1).step_by(2);
        let named = text.split_whitespace().map(|w| w.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.')));
        for word in quoted.chain(named.filter(|w| w.contains('.') || w.contains('_'))) {
            let word = word.rsplit('.').next().unwrap_or(word);
            if word.len() >= 2 {
                if let Some((line, column)) = find_word(sql, word) {
                    return SqlError { message: text, line: Some(line), column: Some(column) };
                }
            }
        }
        SqlError { message: text, line: None, column: None }
    }
}

/// Splits `CREATE PIPELINE name AS SELECT …` into the name and the query. Returns `None`
/// when the text does not start with `CREATE PIPELINE`.
pub fn parse_create_pipeline(text: &str) -> Option<Result<(String, String), String>> {
    // Leading `--` comment lines do not count.
    let mut t = text.trim_start();
    while t.starts_with("--") {
        t = t.split_once('\n').map_or("", |(_, rest)| rest).trim_start();
    }
    let words: Vec<&str> = t.splitn(3, char::is_whitespace).collect();
    if words.len() < 2 || !words[0].eq_ignore_ascii_case("CREATE") || !words[1].eq_ignore_ascii_case("PIPELINE") {
        return None;
    }
    let rest = words.get(2).copied().unwrap_or("").trim_start();
    let (name, rest) = if let Some(r) = rest.strip_prefix('"') {
        match r.split_once('"') {
            Some((n, rest)) => (n.to_string(), rest),
            None => return Some(Err("CREATE PIPELINE \"name: the closing quote is missing".into())),
        }
    } else {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        (rest[..end].to_string(), &rest[end..])
    };
    let rest = rest.trim_start();
    let Some(query) = rest.get(..2).filter(|a| a.eq_ignore_ascii_case("AS")).map(|_| &rest[2..]) else {
        return Some(Err(format!("expected CREATE PIPELINE {name} AS SELECT ...")));
    };
    if name.is_empty() {
        return Some(Err("CREATE PIPELINE needs a name".into()));
    }
    Some(Ok((name, query.trim().trim_end_matches(';').trim().to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_pipeline_prefix() {
        let (n, q) = parse_create_pipeline("CREATE PIPELINE hr_1m AS\nSELECT 1;").unwrap().unwrap();
        assert_eq!((n.as_str(), q.as_str()), ("hr_1m", "SELECT 1"));
        assert!(parse_create_pipeline("SELECT 1").is_none());
        assert!(parse_create_pipeline("create pipeline x SELECT").unwrap().is_err());
        let (n, _) = parse_create_pipeline("-- a comment\n  -- another\nCREATE PIPELINE p AS SELECT 2").unwrap().unwrap();
        assert_eq!(n, "p");
    }

    #[test]
    fn positions() {
        assert_eq!(find_word("SELECT a,\n  bad FROM t", "bad"), Some((2, 3)));
        assert_eq!(find_word("SELECT abad", "bad"), None);
        assert_eq!(parser_position("Expected: x, found: y at Line: 2, Column: 5"), Some((2, 5, "Expected: x, found: y".into())));
        let e = DataFusionError::SchemaError(Box::new(datafusion_common::SchemaError::FieldNotFound { field: Box::new(datafusion_common::Column::from_name("nope")), valid_fields: vec![] }), Box::new(None));
        let e = SqlError::from_datafusion(&e, "SELECT a,\n  NOPE FROM t");
        assert_eq!((e.line, e.column), (Some(2), Some(3)), "{e}");
    }
}
