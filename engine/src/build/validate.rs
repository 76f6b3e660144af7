//! The checks dockerd 20.10 makes when it reads the Dockerfile (its `instructions.Parse`),
//! before any step runs: a bad instruction is a 400 `dockerfile parse error line N: ...`
//! instead of a failure in the middle of the build output.

use super::dockerfile::{Args, Instruction};
use super::{meta, BuildError};

/// How many arguments the instruction has, as dockerd splits them (whitespace for the
/// shell form; ENV/LABEL and the single-string instructions only need "any").
fn count(i: &Instruction) -> usize {
    match &i.args {
        Args::Json(v) => v.len(),
        Args::Shell(s) => s.split_whitespace().count(),
    }
}

/// The flags each instruction takes (RUN's are BuildKit's, refused when the step runs).
fn known_flags(keyword: &str) -> &'static [&'static str] {
    match keyword {
        "add" => &["chown", "chmod"],
        "copy" => &["from", "chown", "chmod"],
        "from" => &["platform"],
        "healthcheck" => &["interval", "timeout", "start-period", "retries"],
        "run" => &["mount", "network", "security"],
        _ => &[],
    }
}

/// Shell-form words as dockerd's parser splits them: whitespace outside quotes, with
/// backslash escapes.
fn raw_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                cur.push(c);
            }
            (Some(q), _) if c == q => {
                quote = None;
                cur.push(c);
            }
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// ENV and LABEL as dockerd's parser reads them: `k=v ...`, or the legacy `k v` form.
fn check_name_values(i: &Instruction, dockerfile: &str) -> Result<(), BuildError> {
    let Args::Shell(text) = &i.args else {
        return Ok(());
    };
    let words = raw_words(text);
    let fail = |why: String| {
        Err(BuildError::Parse {
            line: 0,
            message: format!("failed to parse {dockerfile}: {why}"),
        })
    };
    match words.first() {
        Some(first) if !first.contains('=') => {
            if words.len() < 2 {
                return fail(format!(
                    "{} must have two arguments",
                    i.keyword.to_uppercase()
                ));
            }
        }
        _ => {
            if let Some(bad) = words.iter().find(|w| !w.contains('=')) {
                return fail(format!(
                    "Syntax error - can't find = in {bad:?}. Must be of the form: name=value"
                ));
            }
        }
    }
    Ok(())
}

/// Checks one instruction of the Dockerfile named `dockerfile`.
pub fn check(i: &Instruction, dockerfile: &str) -> Result<(), BuildError> {
    let kw = i.keyword.to_uppercase();
    let n = count(i);
    let fail = |message: String| {
        Err(BuildError::Parse {
            line: i.line,
            message,
        })
    };
    let known = known_flags(&i.keyword);
    if let Some((k, _)) = i.flags.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        return fail(format!("Unknown flag: {k}"));
    }
    match i.keyword.as_str() {
        "copy" | "add" if n < 2 => fail(format!(
            "{kw} requires at least two arguments, but only one was provided. Destination could not be determined"
        )),
        "workdir" | "user" | "maintainer" | "stopsignal" | "arg" if n == 0 => {
            fail(format!("{kw} requires exactly one argument"))
        }
        "env" | "label" | "expose" | "volume" | "onbuild" if n == 0 => {
            fail(format!("{kw} requires at least one argument"))
        }
        "env" | "label" => check_name_values(i, dockerfile),
        "shell" if !matches!(i.args, Args::Json(_)) => {
            fail("SHELL requires the arguments to be in JSON form".into())
        }
        "from" if n != 1 && n != 3 => fail("FROM requires either one or three arguments".into()),
        "from" if n == 3 => {
            let name = match &i.args {
                Args::Shell(s) => s.split_whitespace().nth(2).unwrap_or_default().to_string(),
                Args::Json(v) => v[2].clone(),
            };
            let lower = name.to_ascii_lowercase();
            let ok = lower.starts_with(|c: char| c.is_ascii_lowercase())
                && lower
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
            if ok {
                Ok(())
            } else {
                fail(format!("invalid name for build stage: {name:?}, name can't start with a number or contain symbols"))
            }
        }
        "healthcheck" => match meta::healthcheck(i) {
            Ok(_) => Ok(()),
            Err(e) => fail(e.to_string()),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::dockerfile::instruction;

    fn msg(text: &str) -> String {
        check(&instruction(2, text).unwrap(), "Dockerfile")
            .map(|_| String::from("ok"))
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn dockerd_parse_errors() {
        assert_eq!(
            msg("COPY a"),
            "dockerfile parse error line 2: COPY requires at least two arguments, but only one was provided. Destination could not be determined"
        );
        assert_eq!(
            msg("WORKDIR"),
            "dockerfile parse error line 2: WORKDIR requires exactly one argument"
        );
        assert_eq!(
            msg("ENV"),
            "dockerfile parse error line 2: ENV requires at least one argument"
        );
        assert_eq!(
            msg("FROM a b"),
            "dockerfile parse error line 2: FROM requires either one or three arguments"
        );
        assert_eq!(
            msg("HEALTHCHECK --interval=x CMD true"),
            "dockerfile parse error line 2: time: invalid duration \"x\""
        );
        assert_eq!(
            msg("COPY --bogus=1 a b"),
            "dockerfile parse error line 2: Unknown flag: bogus"
        );
        assert_eq!(
            msg("ENV A"),
            "failed to parse Dockerfile: ENV must have two arguments"
        );
        assert_eq!(
            msg("LABEL a=1 b"),
            "failed to parse Dockerfile: Syntax error - can't find = in \"b\". Must be of the form: name=value"
        );
        assert_eq!(msg("LABEL a=\"x y\" c='d e'"), "ok");
        assert_eq!(msg("ENV A b c"), "ok");
        assert_eq!(
            msg("FROM busybox AS 1a"),
            "dockerfile parse error line 2: invalid name for build stage: \"1a\", name can't start with a number or contain symbols"
        );
        assert_eq!(msg("FROM busybox AS Build-1"), "ok");
        assert_eq!(msg("COPY a b"), "ok");
        assert_eq!(msg("RUN"), "ok");
    }
}
