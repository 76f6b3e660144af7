//! containerd's event filter syntax, the subset clients use on envelopes.
//!
//! A filter is `selector[,selector...]` (all must match); a Subscribe request carries a
//! list of filters of which any may match. A selector is `field`, `field==value`,
//! `field!=value` or `field~=regexp`; values may be bare or double-quoted with `\"`
//! escapes. Which fields exist is up to the caller (events: `topic`, `namespace`;
//! containers: `id`, `image`, `labels.KEY`, ...). Matching `~=` is an unanchored search,
//! as Go's `regexp.MatchString` does, so `topic~="/tasks/*"` matches every task topic.

use regex::Regex;

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("invalid filter {filter:?}: {reason}")]
    Syntax { filter: String, reason: String },
    #[error("invalid filter {filter:?}: unknown field {field:?}")]
    UnknownField { filter: String, field: String },
}

#[derive(Debug)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

#[derive(Debug)]
struct Selector {
    field: String,
    op: Op,
}

/// A parsed list of filters; an empty list matches everything.
#[derive(Debug, Default)]
pub struct Filters {
    any_of: Vec<Vec<Selector>>,
}

impl Filters {
    /// Parses filters over the fields for which `known` is true.
    pub fn parse(filters: &[String], known: impl Fn(&str) -> bool) -> Result<Filters, FilterError> {
        let any_of = filters
            .iter()
            .filter(|f| !f.trim().is_empty())
            .map(|f| parse_filter(f, &known))
            .collect::<Result<_, _>>()?;
        Ok(Filters { any_of })
    }

    /// Filters over an event envelope's `topic` and `namespace`.
    pub fn parse_events(filters: &[String]) -> Result<Filters, FilterError> {
        Filters::parse(filters, |f| f == "topic" || f == "namespace")
    }

    /// True if any filter matches; `get` returns a field's value (None: absent).
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        if self.any_of.is_empty() {
            return true;
        }
        self.any_of.iter().any(|all| {
            all.iter().all(|s| {
                let value = get(&s.field);
                match (&s.op, value) {
                    (Op::Present, v) => v.is_some(),
                    (Op::Equal(want), v) => v == Some(want.as_str()),
                    (Op::NotEqual(want), v) => v != Some(want.as_str()),
                    (Op::Matches(re), Some(v)) => re.is_match(v),
                    (Op::Matches(_), None) => false,
                }
            })
        })
    }

    /// Envelope matching, for the event exchange.
    pub fn matches_event(&self, namespace: &str, topic: &str) -> bool {
        self.matches(|field| match field {
            "topic" => Some(topic),
            "namespace" => Some(namespace),
            _ => None,
        })
    }
}

fn parse_filter(filter: &str, known: &dyn Fn(&str) -> bool) -> Result<Vec<Selector>, FilterError> {
    let syntax = |reason: &str| FilterError::Syntax {
        filter: filter.to_string(),
        reason: reason.to_string(),
    };
    let mut selectors = Vec::new();
    let mut rest = filter.trim();
    loop {
        let (field_name, after) = parse_field(rest).map_err(|r| syntax(&r))?;
        if !known(&field_name) {
            return Err(FilterError::UnknownField {
                filter: filter.to_string(),
                field: field_name,
            });
        }
        let field_end = rest.len() - after.len();
        let field = field_name;
        rest = rest[field_end..].trim_start();
        let op_kind = ["==", "!=", "~="]
            .into_iter()
            .find(|op| rest.starts_with(op));
        let op = match op_kind {
            None => Op::Present,
            Some(kind) => {
                let (value, after) = parse_value(rest[2..].trim_start()).map_err(|r| syntax(&r))?;
                rest = after;
                match kind {
                    "==" => Op::Equal(value),
                    "!=" => Op::NotEqual(value),
                    _ => Op::Matches(Regex::new(&value).map_err(|e| syntax(&e.to_string()))?),
                }
            }
        };
        selectors.push(Selector { field, op });
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(selectors);
        }
        rest = rest
            .strip_prefix(',')
            .ok_or_else(|| syntax("expected ',' between selectors"))?
            .trim_start();
    }
}

/// A field path: bare components (`labels.app`) or quoted ones (`labels."a.b/c"`, whose
/// quotes are dropped). Returns the path and the unparsed remainder.
fn parse_field(s: &str) -> Result<(String, &str), String> {
    let mut field = String::new();
    let mut rest = s;
    loop {
        if rest.starts_with('"') {
            let (quoted, after) = parse_value(rest)?;
            field.push_str(&quoted);
            rest = after;
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || "_.-/".contains(c)))
                .unwrap_or(rest.len());
            if end == 0 {
                break;
            }
            field.push_str(&rest[..end]);
            rest = &rest[end..];
        }
    }
    if field.is_empty() {
        return Err("expected a field name".to_string());
    }
    Ok((field, rest))
}

/// Returns the value and the unparsed remainder.
fn parse_value(s: &str) -> Result<(String, &str), String> {
    if let Some(quoted) = s.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Ok((value, &quoted[i + 1..])),
                '\\' => match chars.next() {
                    Some((_, e)) => value.push(e),
                    None => break,
                },
                c => value.push(c),
            }
        }
        Err("unterminated quoted value".to_string())
    } else {
        let end = s.find(',').unwrap_or(s.len());
        let value = s[..end].trim();
        if value.is_empty() {
            return Err("missing value after operator".to_string());
        }
        Ok((value.to_string(), &s[end..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(list: &[&str]) -> Filters {
        Filters::parse_events(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn empty_matches_all() {
        assert!(f(&[]).matches_event("ns", "/tasks/exit"));
        assert!(f(&[""]).matches_event("ns", "/tasks/exit"));
    }

    #[test]
    fn equality_regex_and_conjunction() {
        let exit = f(&[r#"topic=="/tasks/exit""#]);
        assert!(exit.matches_event("a", "/tasks/exit"));
        assert!(!exit.matches_event("a", "/tasks/start"));
        let tasks = f(&[r#"topic~="/tasks/*""#]);
        assert!(tasks.matches_event("a", "/tasks/oom"));
        assert!(!tasks.matches_event("a", "/containers/create"));
        let both = f(&[r#"topic~="^/tasks/", namespace==berth"#]);
        assert!(both.matches_event("berth", "/tasks/exit"));
        assert!(!both.matches_event("other", "/tasks/exit"));
        let either = f(&["namespace==a", "namespace!=b"]);
        assert!(
            either.matches_event("a", "/x")
                && either.matches_event("c", "/x")
                && !either.matches_event("b", "/x")
        );
        assert!(f(&["topic"]).matches_event("a", "/x"));
        assert!(f(&[r#"topic=="/a\"b""#]).matches_event("n", "/a\"b"));
        let labels = Filters::parse(&[r#"labels."com.example/x"==y"#.to_string()], |f| {
            f.starts_with("labels.")
        })
        .unwrap();
        assert!(labels.matches(|f| (f == "labels.com.example/x").then_some("y")));
    }

    #[test]
    fn errors_name_the_problem() {
        let err = Filters::parse_events(&["image==x".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("image"), "{err}");
        let err = Filters::parse_events(&["topic==\"x".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unterminated"), "{err}");
        let err = Filters::parse_events(&["topic~=\"(\"".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("topic~="), "{err}");
        let err = Filters::parse_events(&["topic==".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing value"), "{err}");
    }
}
