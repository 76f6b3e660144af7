//! The builder's shell-like word processing (moby's `shell.Lex`): quotes, backslash
//! escapes and `$VAR` / `${VAR}` / `${VAR:-default}` / `${VAR:+alt}` substitution, used
//! for FROM, COPY, ADD, ENV, LABEL, WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL and ARG.

use std::collections::HashMap;

use super::BuildError;

/// Variables visible to a step: ENV entries and ARG values, ENV winning.
#[derive(Debug, Clone, Default)]
pub struct Vars(pub HashMap<String, String>);

impl Vars {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
}

/// Expands the whole string into one word (quotes removed, nothing split).
pub fn expand(s: &str, vars: &Vars) -> Result<String, BuildError> {
    Ok(lex(s, vars, false)?.join(""))
}

/// Splits on unquoted whitespace, expanding each word.
pub fn words(s: &str, vars: &Vars) -> Result<Vec<String>, BuildError> {
    lex(s, vars, true)
}

fn lex(s: &str, vars: &Vars, split: bool) -> Result<Vec<String>, BuildError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if split && c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
                i += 1;
                continue;
            }
            '\'' => {
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    cur.push(chars[i]);
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(unterminated(s, '\''));
                }
                i += 1;
            }
            '"' => {
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(unterminated(s, '"')),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') if matches!(chars.get(i + 1), Some('"' | '$' | '\\')) => {
                            cur.push(chars[i + 1]);
                            i += 2;
                        }
                        Some('$') => i = dollar(&chars, i, vars, &mut cur)?,
                        Some(&ch) => {
                            cur.push(ch);
                            i += 1;
                        }
                    }
                }
            }
            '\\' => {
                match chars.get(i + 1) {
                    Some(&n) => cur.push(n),
                    None => cur.push('\\'),
                }
                i += 2;
            }
            '$' => i = dollar(&chars, i, vars, &mut cur)?,
            c => {
                cur.push(c);
                i += 1;
            }
        }
        in_word = true;
    }
    if in_word || !split {
        out.push(cur);
    }
    Ok(out)
}

fn unterminated(s: &str, q: char) -> BuildError {
    BuildError::Invalid {
        message: format!("unexpected end of statement while looking for matching {q} in {s:?}"),
    }
}

/// Expands the `$...` at `chars[i]`; returns the index after it.
fn dollar(chars: &[char], i: usize, vars: &Vars, out: &mut String) -> Result<usize, BuildError> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    match chars.get(i + 1) {
        Some('{') => {
            let close = chars[i + 2..]
                .iter()
                .position(|&c| c == '}')
                .map(|p| p + i + 2)
                .ok_or_else(|| BuildError::Invalid {
                    message: "missing '}' in variable substitution".into(),
                })?;
            let inner: String = chars[i + 2..close].iter().collect();
            let name_len = inner.chars().take_while(|&c| name_char(c)).count();
            let (name, op) = inner.split_at(name_len);
            let val = vars.get(name);
            let word = |w: &str| w.to_string();
            let v = match op {
                "" => val.unwrap_or("").to_string(),
                o if o.starts_with(":-") => match val {
                    Some(v) if !v.is_empty() => v.to_string(),
                    _ => word(&o[2..]),
                },
                o if o.starts_with('-') => val.map_or_else(|| word(&o[1..]), str::to_string),
                o if o.starts_with(":+") => match val {
                    Some(v) if !v.is_empty() => word(&o[2..]),
                    _ => String::new(),
                },
                o if o.starts_with('+') => val.map_or_else(String::new, |_| word(&o[1..])),
                o if o.starts_with(":?") || o.starts_with('?') => match val {
                    Some(v) if !v.is_empty() || o.starts_with('?') => v.to_string(),
                    _ => {
                        return Err(BuildError::Invalid {
                            message: format!("{name}: {}", o.trim_start_matches([':', '?'])),
                        })
                    }
                },
                o => {
                    return Err(BuildError::Invalid {
                        message: format!("unsupported modifier ({o}) in substitution"),
                    })
                }
            };
            out.push_str(&v);
            Ok(close + 1)
        }
        Some(&c) if name_char(c) => {
            let len = chars[i + 1..].iter().take_while(|&&c| name_char(c)).count();
            let name: String = chars[i + 1..i + 1 + len].iter().collect();
            out.push_str(vars.get(&name).unwrap_or(""));
            Ok(i + 1 + len)
        }
        _ => {
            out.push('$');
            Ok(i + 1)
        }
    }
}

/// `KEY=VALUE KEY2="V 2"` pairs, or the legacy `KEY VALUE` form (one pair, the value
/// being the rest of the line), as ENV, LABEL and ARG take them.
pub fn pairs(s: &str, vars: &Vars, keyword: &str) -> Result<Vec<(String, String)>, BuildError> {
    let first = s.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        let Some((k, v)) = s.trim().split_once(char::is_whitespace) else {
            return Err(BuildError::Invalid {
                message: format!("{} requires at least one argument", keyword.to_uppercase()),
            });
        };
        return Ok(vec![(k.to_string(), expand(v.trim(), vars)?)]);
    }
    let mut out = Vec::new();
    for w in words(s, vars)? {
        match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
            _ => {
                return Err(BuildError::Invalid {
                    message: format!("{}: invalid format: {w}", keyword.to_uppercase()),
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars(HashMap::from([
            ("A".to_string(), "one".to_string()),
            ("E".to_string(), String::new()),
        ]))
    }

    #[test]
    fn substitution_and_quotes() {
        let v = vars();
        assert_eq!(expand("$A/${A}x", &v).unwrap(), "one/onex");
        assert_eq!(expand("${B:-def} ${E:-d2} ${E-d3}", &v).unwrap(), "def d2 ");
        assert_eq!(expand("${A:+alt}${B:+no}", &v).unwrap(), "alt");
        assert_eq!(expand("'$A' \"$A\" \\$A", &v).unwrap(), "$A one $A");
        assert_eq!(
            words("a \"b c\" d\\ e", &v).unwrap(),
            vec!["a", "b c", "d e"]
        );
        assert!(expand("\"open", &v).is_err());
    }

    #[test]
    fn env_pairs_both_forms() {
        let v = vars();
        assert_eq!(
            pairs("K=\"v w\" L=$A", &v, "env").unwrap(),
            vec![("K".into(), "v w".into()), ("L".into(), "one".into())]
        );
        assert_eq!(
            pairs("K the rest $A", &v, "env").unwrap(),
            vec![("K".into(), "the rest one".into())]
        );
    }
}
