//! containerd's list filters, the subset Berth supports.
//!
//! A request carries several filter strings: an object matches if ANY of them matches. Each
//! string is a comma-separated list of selectors that must ALL match. A selector is
//! `field`, `field==value`, `field!=value` or `field~=regexp`, where field is a plain name (`name`,
//! `kind`, `parent`, `digest`, ...) or `labels.KEY` / `labels."KEY"`; values may be quoted.

use super::StoreError;

#[derive(Debug, Clone)]
enum Op {
    Exists,
    Eq(String),
    Ne(String),
    Matches(regex::Regex),
}

#[derive(Debug, Clone)]
struct Selector {
    field: Vec<String>,
    op: Op,
}

/// A parsed set of filters (empty: matches everything).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    any_of: Vec<Vec<Selector>>,
}

/// What a filter can ask of an object: the value of a field path, if it has one.
pub trait Adaptor {
    fn field(&self, path: &[String]) -> Option<String>;
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        s[1..s.len() - 1].replace("\\\"", "\"")
    } else {
        s.to_string()
    }
}

/// Splits `s` at `sep` outside double quotes.
fn split_unquoted<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'"' {
            quoted = !quoted;
        } else if !quoted && s[i..].starts_with(sep) {
            out.push(&s[start..i]);
            start = i + sep.len();
            i = start;
            continue;
        }
        i += 1;
    }
    out.push(&s[start..]);
    out
}

fn parse_field(raw: &str) -> Vec<String> {
    let raw = raw.trim();
    match raw.split_once('.') {
        Some((head, rest)) => vec![head.to_string(), unquote(rest)],
        None => vec![raw.to_string()],
    }
}

fn parse_selector(raw: &str, whole: &str) -> Result<Selector, StoreError> {
    let re = split_unquoted(raw, "~=");
    let eq = split_unquoted(raw, "==");
    let ne = split_unquoted(raw, "!=");
    let (field, op) = match (re.as_slice(), eq.as_slice(), ne.as_slice()) {
        ([f, v], [_], [_]) => {
            let re = regex::Regex::new(&unquote(v))
                .map_err(|_| StoreError::invalid("filter", whole, "invalid regular expression"))?;
            (f, Op::Matches(re))
        }
        ([_], [f, v], [_]) => (f, Op::Eq(unquote(v))),
        ([_], [_], [f, v]) => (f, Op::Ne(unquote(v))),
        ([f], [_], [_]) => (f, Op::Exists),
        _ => return Err(StoreError::invalid("filter", whole, "malformed selector")),
    };
    if field.trim().is_empty() {
        return Err(StoreError::invalid("filter", whole, "empty field name"));
    }
    Ok(Selector {
        field: parse_field(field),
        op,
    })
}

impl Filter {
    /// Parses the filter strings of a List request.
    pub fn parse(filters: &[String]) -> Result<Filter, StoreError> {
        let mut any_of = Vec::new();
        for f in filters.iter().filter(|f| !f.trim().is_empty()) {
            let all = split_unquoted(f, ",")
                .into_iter()
                .map(|s| parse_selector(s, f))
                .collect::<Result<Vec<_>, _>>()?;
            any_of.push(all);
        }
        Ok(Filter { any_of })
    }

    /// Whether `obj` passes the filter.
    pub fn matches(&self, obj: &impl Adaptor) -> bool {
        self.any_of.is_empty()
            || self.any_of.iter().any(|all| {
                all.iter().all(|sel| {
                    let v = obj.field(&sel.field);
                    match &sel.op {
                        Op::Exists => v.is_some(),
                        Op::Eq(want) => v.as_deref() == Some(want.as_str()),
                        Op::Ne(want) => v.as_deref() != Some(want.as_str()),
                        Op::Matches(re) => v.is_some_and(|v| re.is_match(&v)),
                    }
                })
            })
    }
}

/// Field lookup for the common `labels.KEY` case.
pub fn label(
    labels: &std::collections::BTreeMap<String, String>,
    path: &[String],
) -> Option<String> {
    match path {
        [head, key] if head == "labels" => labels.get(key).cloned(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Obj(BTreeMap<String, String>, &'static str);
    impl Adaptor for Obj {
        fn field(&self, path: &[String]) -> Option<String> {
            match path.first().map(String::as_str) {
                Some("name") => Some(self.1.to_string()),
                _ => label(&self.0, path),
            }
        }
    }

    #[test]
    fn selectors_and_alternatives() -> Result<(), StoreError> {
        let o = Obj(
            [("containerd.io/gc.root".to_string(), "x".to_string())].into(),
            "busybox",
        );
        assert!(Filter::parse(&[])?.matches(&o));
        assert!(Filter::parse(&[r#"labels."containerd.io/gc.root""#.into()])?.matches(&o));
        assert!(
            Filter::parse(&["name==busybox,labels.\"containerd.io/gc.root\"==x".into()])?
                .matches(&o)
        );
        assert!(!Filter::parse(&["name!=busybox".into()])?.matches(&o));
        assert!(Filter::parse(&["name==other".into(), "name==busybox".into()])?.matches(&o));
        assert!(Filter::parse(&["name~=^bus".into()])?.matches(&o));
        assert!(!Filter::parse(&["name~=^box".into()])?.matches(&o));
        assert!(Filter::parse(&["name~=(".into()]).is_err());
        Ok(())
    }
}
