//! Dockerfile parsing (moby's `buildkit/frontend/dockerfile/parser`): parser directives,
//! comments, line continuations with the escape character, instruction flags, and the
//! JSON (exec) and shell forms of arguments.

use super::BuildError;

/// An instruction's arguments as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// `["a", "b"]`.
    Json(Vec<String>),
    /// Everything after the keyword and flags, continuations joined.
    Shell(String),
}

impl Args {
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Json(v) => v.is_empty(),
            Self::Shell(s) => s.trim().is_empty(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where the instruction starts.
    pub line: usize,
    /// Lowercase keyword: `run`, `copy`, ...
    pub keyword: String,
    /// `--name=value` flags before the arguments (`--from=build`, `--chown=1:1`).
    pub flags: Vec<(String, String)>,
    pub args: Args,
    /// The instruction as printed in "Step N/M : ..." (continuations joined).
    pub original: String,
}

impl Instruction {
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

const KEYWORDS: &[&str] = &[
    "from",
    "run",
    "cmd",
    "label",
    "maintainer",
    "expose",
    "env",
    "add",
    "copy",
    "entrypoint",
    "volume",
    "user",
    "workdir",
    "arg",
    "onbuild",
    "stopsignal",
    "healthcheck",
    "shell",
];

/// Keywords whose leading `--flag` words are flags rather than arguments.
const FLAGGED: &[&str] = &["from", "run", "add", "copy", "healthcheck"];

/// The escape character from a `# escape=` parser directive (default `\`).
fn directives(text: &str) -> Result<char, BuildError> {
    let mut escape = '\\';
    for line in text.lines() {
        let t = line.trim();
        let Some(rest) = t.strip_prefix('#') else {
            break;
        };
        let Some((k, v)) = rest.split_once('=') else {
            break;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k.contains(char::is_whitespace) {
            break;
        }
        if k == "escape" {
            escape = match v {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(BuildError::Parse {
                        line: 1,
                        message: format!("invalid escape token '{other}' does not match ` or \\"),
                    })
                }
            };
        }
    }
    Ok(escape)
}

/// Parses a whole Dockerfile. An empty file is dockerd's "file with no instructions".
pub fn parse(text: &str) -> Result<Vec<Instruction>, BuildError> {
    let escape = directives(text)?;
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        // Comments are dropped even inside a continued instruction.
        if trimmed.starts_with('#') {
            continue;
        }
        if pending.is_none() && trimmed.is_empty() {
            continue;
        }
        let body = raw.trim_end();
        let (content, continues) = match body.strip_suffix(escape) {
            Some(c) => (c, true),
            None => (body, false),
        };
        // Continuation lines are appended as written (moby keeps their indentation).
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        if acc.is_empty() {
            acc.push_str(content.trim_start());
        } else if !content.trim().is_empty() {
            acc.push_str(content);
        }
        if continues {
            pending = Some((start, acc));
        } else if !acc.trim().is_empty() {
            out.push(instruction(start, acc.trim())?);
        }
    }
    if let Some((start, acc)) = pending {
        if !acc.trim().is_empty() {
            out.push(instruction(start, acc.trim())?);
        }
    }
    if out.is_empty() {
        return Err(BuildError::Parse {
            line: 0,
            message: "the Dockerfile (Dockerfile) cannot be empty".into(),
        });
    }
    Ok(out)
}

/// One logical line → an instruction.
pub fn instruction(line: usize, text: &str) -> Result<Instruction, BuildError> {
    let (word, rest) = match text.split_once(char::is_whitespace) {
        Some((w, r)) => (w, r.trim_start()),
        None => (text, ""),
    };
    let keyword = word.to_ascii_lowercase();
    if !KEYWORDS.contains(&keyword.as_str()) {
        return Err(BuildError::Parse {
            line,
            message: format!("unknown instruction: {}", word.to_ascii_uppercase()),
        });
    }
    let mut rest = rest;
    let mut flags = Vec::new();
    if FLAGGED.contains(&keyword.as_str()) {
        while let Some(f) = rest.strip_prefix("--") {
            let (flag, after) = match f.split_once(char::is_whitespace) {
                Some((a, b)) => (a, b.trim_start()),
                None => (f, ""),
            };
            let (k, v) = flag.split_once('=').unwrap_or((flag, ""));
            flags.push((k.to_ascii_lowercase(), v.to_string()));
            rest = after;
        }
    }
    let args = match json_array(rest) {
        Some(v) => Args::Json(v),
        None => Args::Shell(rest.to_string()),
    };
    Ok(Instruction {
        line,
        keyword,
        flags,
        args,
        original: text.to_string(),
    })
}

/// The exec form: a JSON array of strings, else `None` (then it is the shell form).
fn json_array(s: &str) -> Option<Vec<String>> {
    let t = s.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_comments_and_forms() {
        let df = "# a comment\nFROM busybox AS base\nRUN echo a \\\n  # inner comment\n  && echo b\n\nCMD [\"sh\", \"-c\", \"x\"]\ncopy --chown=1:2 a b\n";
        let i = parse(df).unwrap();
        assert_eq!(i.len(), 4);
        assert_eq!(i[0].keyword, "from");
        assert_eq!(i[1].args, Args::Shell("echo a   && echo b".into()));
        assert_eq!(i[1].line, 3);
        assert_eq!(i[1].original, "RUN echo a   && echo b");
        assert_eq!(
            i[2].args,
            Args::Json(vec!["sh".into(), "-c".into(), "x".into()])
        );
        assert_eq!(i[3].flag("chown"), Some("1:2"));
        assert_eq!(i[3].args, Args::Shell("a b".into()));
    }

    #[test]
    fn escape_directive_and_errors() {
        let i = parse("# escape=`\nFROM x\nRUN a `\n b\n").unwrap();
        assert_eq!(i[1].args, Args::Shell("a  b".into()));
        let e = parse("FROM x\nFOO bar\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "dockerfile parse error line 2: unknown instruction: FOO"
        );
        assert!(parse("\n# only a comment\n").is_err());
        // A JSON-looking argument that is not a string array is the shell form.
        let i = parse("CMD [1, 2]").unwrap();
        assert_eq!(i[0].args, Args::Shell("[1, 2]".into()));
    }
}
