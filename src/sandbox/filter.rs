//! Parsing of SCIM filters and attribute paths (RFC 7644 §3.4.2.2 and §3.5.2) for the
//! sandbox.
//!
//! The sandbox supports the subset a provisioning client needs: `attrPath eq compValue`
//! terms joined by `and`, where `attrPath` may be URN-qualified, carry a sub-attribute
//! (`name.givenName`) or a value filter (`emails[type eq "work"].value`). String values
//! are JSON string literals, so `\"` and `\\` escapes are decoded by a JSON parser.
//! Everything else (`or`, `not`, parentheses, other operators) is rejected with a message
//! that the caller turns into `invalidFilter` or `invalidPath`.

use serde_json::Value;

/// A parsed attribute path: `[urn:]attr[.sub]` or `[urn:]attr[filter][.sub]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AttrPath {
    /// The schema URN prefix, if the path was URN-qualified.
    pub(crate) urn: Option<String>,
    /// The attribute name, as written.
    pub(crate) attr: String,
    /// A value-selection filter on a multi-valued attribute (`[type eq "work"]`).
    pub(crate) value_filter: Option<ValueFilter>,
    /// The sub-attribute after `.`, as written.
    pub(crate) sub: Option<String>,
}

impl AttrPath {
    /// A plain, unqualified attribute name.
    pub(crate) fn simple(attr: impl Into<String>) -> Self {
        Self {
            urn: None,
            attr: attr.into(),
            value_filter: None,
            sub: None,
        }
    }
}

/// `subAttr eq value` inside brackets.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ValueFilter {
    /// The sub-attribute compared, as written.
    pub(crate) attr: String,
    /// The literal it must equal.
    pub(crate) value: Value,
}

/// One `attrPath eq value` term of a filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Comparison {
    /// The attribute compared.
    pub(crate) path: AttrPath,
    /// The literal it must equal.
    pub(crate) value: Value,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    LBracket,
    RBracket,
    LParen,
    RParen,
}

fn tokenize(input: &str) -> Result<Vec<Tok>, String> {
    let bytes = input.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'[' => {
                toks.push(Tok::LBracket);
                i += 1;
            }
            b']' => {
                toks.push(Tok::RBracket);
                i += 1;
            }
            b'(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                toks.push(Tok::RParen);
                i += 1;
            }
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err("unterminated string literal".to_owned()),
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                // `i` is at the closing quote; both ends are ASCII so the slice is valid.
                let literal = input.get(start..=i).ok_or("bad string literal")?;
                let text: String = serde_json::from_str(literal)
                    .map_err(|e| format!("bad string literal {literal}: {e}"))?;
                toks.push(Tok::Str(text));
                i += 1;
            }
            _ => {
                let start = i;
                while i < bytes.len()
                    && !matches!(
                        bytes[i],
                        b' ' | b'\t' | b'\r' | b'\n' | b'[' | b']' | b'(' | b')' | b'"'
                    )
                {
                    i += 1;
                }
                let word = input.get(start..i).ok_or("bad token")?;
                toks.push(Tok::Word(word.to_owned()));
            }
        }
    }
    Ok(toks)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    fn expect_word(&mut self, what: &str) -> Result<String, String> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            Some(t) => Err(format!("expected {what}, found {}", describe(&t))),
            None => Err(format!("expected {what}, found end of input")),
        }
    }

    fn expect_eq(&mut self) -> Result<(), String> {
        let op = self.expect_word("an operator")?;
        if op.eq_ignore_ascii_case("eq") {
            Ok(())
        } else if ["ne", "co", "sw", "ew", "gt", "lt", "ge", "le", "pr"]
            .iter()
            .any(|o| o.eq_ignore_ascii_case(&op))
        {
            Err(format!("operator '{op}' is not supported (only 'eq')"))
        } else {
            Err(format!("unknown operator '{op}'"))
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Value::String(s)),
            Some(Tok::Word(w)) => {
                let lower = w.to_ascii_lowercase();
                match lower.as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    "null" => Ok(Value::Null),
                    _ => match serde_json::from_str::<Value>(&w) {
                        Ok(n @ Value::Number(_)) => Ok(n),
                        _ => Err(format!(
                            "expected a value, found '{w}' (strings need quotes)"
                        )),
                    },
                }
            }
            Some(t) => Err(format!("expected a value, found {}", describe(&t))),
            None => Err("expected a value, found end of input".to_owned()),
        }
    }

    fn attr_path(&mut self) -> Result<AttrPath, String> {
        let word = self.expect_word("an attribute path")?;
        let (urn, rest) = split_urn(&word)?;
        if self.peek() == Some(&Tok::LBracket) {
            self.pos += 1;
            if rest.contains('.') {
                return Err(format!("unexpected '.' in '{rest}' before '['"));
            }
            let attr = self.expect_word("a sub-attribute")?;
            if attr.contains('.') || attr.contains(':') {
                return Err(format!("unsupported attribute '{attr}' in value filter"));
            }
            self.expect_eq()?;
            let value = self.value()?;
            match self.next() {
                Some(Tok::RBracket) => {}
                Some(Tok::Word(w))
                    if w.eq_ignore_ascii_case("and") || w.eq_ignore_ascii_case("or") =>
                {
                    return Err(format!("'{w}' inside a value filter is not supported"));
                }
                Some(t) => return Err(format!("expected ']', found {}", describe(&t))),
                None => return Err("expected ']', found end of input".to_owned()),
            }
            let sub = match self.peek() {
                Some(Tok::Word(w)) if w.starts_with('.') => {
                    let w = w.clone();
                    self.pos += 1;
                    match w.strip_prefix('.') {
                        Some(sub) if !sub.is_empty() && !sub.contains('.') => Some(sub.to_owned()),
                        _ => return Err(format!("bad sub-attribute '{w}'")),
                    }
                }
                _ => None,
            };
            return Ok(AttrPath {
                urn,
                attr: rest,
                value_filter: Some(ValueFilter { attr, value }),
                sub,
            });
        }
        let (attr, sub) = match rest.split_once('.') {
            Some((a, s)) => {
                if a.is_empty() || s.is_empty() || s.contains('.') {
                    return Err(format!("bad attribute path '{word}'"));
                }
                (a.to_owned(), Some(s.to_owned()))
            }
            None => (rest, None),
        };
        Ok(AttrPath {
            urn,
            attr,
            value_filter: None,
            sub,
        })
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("'{w}'"),
        Tok::Str(s) => format!("string {}", Value::String(s.clone())),
        Tok::LBracket => "'['".to_owned(),
        Tok::RBracket => "']'".to_owned(),
        Tok::LParen => "'(' (grouping is not supported)".to_owned(),
        Tok::RParen => "')'".to_owned(),
    }
}

/// Splits `urn:…:attr.sub` into the URN and `attr.sub` (at the last `:`); other words are
/// returned whole.
fn split_urn(word: &str) -> Result<(Option<String>, String), String> {
    if word
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
    {
        match word.rsplit_once(':') {
            Some((urn, attr)) if !attr.is_empty() => Ok((Some(urn.to_owned()), attr.to_owned())),
            _ => Err(format!("bad URN-qualified path '{word}'")),
        }
    } else if word.is_empty() || word.contains(':') {
        Err(format!("bad attribute path '{word}'"))
    } else {
        Ok((None, word.to_owned()))
    }
}

/// Parses a filter made of `attrPath eq value` terms joined by `and`.
pub(crate) fn parse_filter(input: &str) -> Result<Vec<Comparison>, String> {
    let mut p = Parser {
        toks: tokenize(input)?,
        pos: 0,
    };
    if p.at_end() {
        return Err("empty filter".to_owned());
    }
    let mut terms = Vec::new();
    loop {
        if let Some(Tok::Word(w)) = p.peek()
            && w.eq_ignore_ascii_case("not")
        {
            return Err("'not' is not supported".to_owned());
        }
        let path = p.attr_path()?;
        p.expect_eq()?;
        let value = p.value()?;
        terms.push(Comparison { path, value });
        match p.next() {
            None => return Ok(terms),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("and") => {}
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("or") => {
                return Err("'or' is not supported".to_owned());
            }
            Some(t) => return Err(format!("expected 'and' or end, found {}", describe(&t))),
        }
    }
}

/// Parses a PATCH `path` (RFC 7644 §3.5.2 `PATH`).
pub(crate) fn parse_path(input: &str) -> Result<AttrPath, String> {
    let mut p = Parser {
        toks: tokenize(input)?,
        pos: 0,
    };
    let path = p.attr_path()?;
    match p.next() {
        None => Ok(path),
        Some(t) => Err(format!("unexpected {} after the path", describe(&t))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_escaped_string_literal() {
        let f = parse_filter(r#"userName eq "o\"brien\\x""#).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].path, AttrPath::simple("userName"));
        assert_eq!(f[0].value, json!("o\"brien\\x"));
    }

    #[test]
    fn parses_and_with_case_insensitive_keywords() {
        let f = parse_filter(r#"USERNAME EQ "a" AnD externalId eq "b""#).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].path.attr, "externalId");
    }

    #[test]
    fn parses_value_filter_path() {
        let p = parse_path(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(p.attr, "emails");
        assert_eq!(p.sub.as_deref(), Some("value"));
        let vf = p.value_filter.unwrap();
        assert_eq!((vf.attr.as_str(), vf.value), ("type", json!("work")));
    }

    #[test]
    fn parses_urn_path_with_dotted_version() {
        let p = parse_path("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department")
            .unwrap();
        assert_eq!(
            p.urn.as_deref(),
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        );
        assert_eq!(p.attr, "department");
        assert_eq!(p.sub, None);
        let p = parse_path("name.givenName").unwrap();
        assert_eq!(
            (p.attr.as_str(), p.sub.as_deref()),
            ("name", Some("givenName"))
        );
    }

    #[test]
    fn rejects_unsupported_syntax() {
        for bad in [
            r#"userName ne "a""#,
            r#"userName eq "a" or userName eq "b""#,
            r#"(userName eq "a")"#,
            r#"not (userName eq "a")"#,
            r#"userName eq "a"#,
            "userName eq bare",
            "userName pr",
            "",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad} should be rejected");
        }
        assert!(parse_path(r#"members[value eq "x"] extra"#).is_err());
    }
}
