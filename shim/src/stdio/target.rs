//! The stdio strings of CreateTask/Exec requests (docs/ARCHITECTURE.md, "stdio strings").

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("stdio path {value:?} is not absolute")]
    NotAbsolute { value: String },
    #[error("unsupported stdio scheme in {value:?}: want a path, file:// or jsonfile://")]
    Scheme { value: String },
    #[error("invalid {key} {raw:?} in {value:?}")]
    Option {
        key: &'static str,
        raw: String,
        value: String,
    },
    #[error("unknown option {key:?} in {value:?}: want max-size or max-file")]
    UnknownOption { key: String, value: String },
}

/// Where one stdio stream of a process goes (or, for stdin, comes from).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StdioTarget {
    /// `""`: /dev/null.
    Null,
    /// An absolute path: a FIFO (what `ctr` sends) or a plain file.
    Path(PathBuf),
    /// `file:///abs/path`: raw bytes appended to a regular file.
    File(PathBuf),
    /// `jsonfile:///abs/path?max-size=N&max-file=M`: docker's json-file log.
    JsonFile {
        path: PathBuf,
        /// Rotate once the file would grow past this many bytes; `None`: never rotate.
        max_size: Option<u64>,
        /// Files kept in total, the live one included (docker's `max-file`, at least 1).
        max_file: u32,
    },
}

impl StdioTarget {
    pub fn parse(value: &str) -> Result<Self, TargetError> {
        if value.is_empty() {
            return Ok(StdioTarget::Null);
        }
        if let Some(rest) = value.strip_prefix("file://") {
            return Ok(StdioTarget::File(absolute(rest, value)?));
        }
        if let Some(rest) = value.strip_prefix("jsonfile://") {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            let mut target = StdioTarget::JsonFile {
                path: absolute(path, value)?,
                max_size: None,
                max_file: 1,
            };
            if let StdioTarget::JsonFile {
                max_size, max_file, ..
            } = &mut target
            {
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
                    let bad = |key| TargetError::Option {
                        key,
                        raw: raw.to_owned(),
                        value: value.to_owned(),
                    };
                    match key {
                        "max-size" => {
                            *max_size = Some(parse_size(raw).ok_or_else(|| bad("max-size"))?)
                        }
                        "max-file" => {
                            *max_file = raw
                                .parse()
                                .ok()
                                .filter(|n| *n >= 1)
                                .ok_or_else(|| bad("max-file"))?
                        }
                        other => {
                            return Err(TargetError::UnknownOption {
                                key: other.to_owned(),
                                value: value.to_owned(),
                            })
                        }
                    }
                }
            }
            return Ok(target);
        }
        if value.contains("://") {
            return Err(TargetError::Scheme {
                value: value.to_owned(),
            });
        }
        Ok(StdioTarget::Path(absolute(value, value)?))
    }
}

fn absolute(path: &str, value: &str) -> Result<PathBuf, TargetError> {
    if Path::new(path).is_absolute() {
        Ok(PathBuf::from(path))
    } else {
        Err(TargetError::NotAbsolute {
            value: value.to_owned(),
        })
    }
}

/// Bytes, optionally with docker's k/m/g suffix (`10m`).
fn parse_size(raw: &str) -> Option<u64> {
    let lower = raw.to_ascii_lowercase();
    let (digits, unit) = match lower.trim_end_matches('b').chars().last()? {
        'k' => (&lower[..lower.find('k')?], 1024),
        'm' => (&lower[..lower.find('m')?], 1024 * 1024),
        'g' => (&lower[..lower.find('g')?], 1024 * 1024 * 1024),
        _ => (lower.as_str(), 1),
    };
    digits
        .parse::<u64>()
        .ok()?
        .checked_mul(unit)
        .filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(StdioTarget::parse("").unwrap(), StdioTarget::Null);
        assert_eq!(
            StdioTarget::parse("/run/x/stdout").unwrap(),
            StdioTarget::Path("/run/x/stdout".into())
        );
        assert_eq!(
            StdioTarget::parse("file:///var/log/a").unwrap(),
            StdioTarget::File("/var/log/a".into())
        );
        assert_eq!(
            StdioTarget::parse("jsonfile:///l/c.log?max-size=1000&max-file=3").unwrap(),
            StdioTarget::JsonFile {
                path: "/l/c.log".into(),
                max_size: Some(1000),
                max_file: 3
            }
        );
        assert_eq!(
            StdioTarget::parse("jsonfile:///l/c.log?max-size=2k").unwrap(),
            StdioTarget::JsonFile {
                path: "/l/c.log".into(),
                max_size: Some(2048),
                max_file: 1
            }
        );
    }

    #[test]
    fn rejects_bad_input_naming_it() {
        let err = StdioTarget::parse("relative/path").unwrap_err();
        assert!(err.to_string().contains("relative/path"), "{err}");
        assert!(matches!(
            StdioTarget::parse("binary:///x").unwrap_err(),
            TargetError::Scheme { .. }
        ));
        assert!(matches!(
            StdioTarget::parse("jsonfile:///x?max-file=0").unwrap_err(),
            TargetError::Option {
                key: "max-file",
                ..
            }
        ));
        assert!(matches!(
            StdioTarget::parse("jsonfile:///x?max-size=lots").unwrap_err(),
            TargetError::Option {
                key: "max-size",
                ..
            }
        ));
        assert!(matches!(
            StdioTarget::parse("jsonfile:///x?color=red").unwrap_err(),
            TargetError::UnknownOption { .. }
        ));
    }
}
