//! Terminals: detach keys on a terminal attach's input and window resizes
//! (`POST /containers/{id}/resize`, `POST /exec/{id}/resize`).

use super::{Daemon, DaemonError, DaemonResult, InvalidParameter};
use crate::backend::Backend;

/// dockerd's default detach sequence, ctrl-p ctrl-q.
pub const DEFAULT_DETACH_KEYS: &[u8] = &[0x10, 0x11];

/// Parses docker's detach key syntax (`ctrl-p,ctrl-q`, `a,b`, `ctrl-@`...), as moby's
/// `term.ToBytes`. Empty means the default sequence.
pub fn parse_detach_keys(spec: &str) -> DaemonResult<Vec<u8>> {
    if spec.is_empty() {
        return Ok(DEFAULT_DETACH_KEYS.to_vec());
    }
    let bad = || -> DaemonError { InvalidParameter::DetachKeys(spec.to_string()).into() };
    let mut codes = Vec::new();
    for key in spec.split(',') {
        if key.len() == 1 {
            codes.push(key.as_bytes()[0]);
            continue;
        }
        let lower = key.to_ascii_lowercase();
        let Some(c) = lower.strip_prefix("ctrl-").filter(|c| c.len() == 1) else {
            return Err(bad());
        };
        let c = c.as_bytes()[0];
        let code = match c {
            b'a'..=b'z' => c - b'a' + 1,
            b'@' => 0,
            b'[' => 27,
            b'\\' => 28,
            b']' => 29,
            b'^' => 30,
            b'_' => 31,
            _ => return Err(bad()),
        };
        codes.push(code);
    }
    Ok(codes)
}

/// Watches a terminal's input for the detach sequence. Bytes that might start the
/// sequence are held back until it is clear they do not (then passed on), as moby's
/// escape proxy does, so the process never sees a completed sequence.
#[derive(Debug, Clone)]
pub struct DetachWatch {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachWatch {
    pub fn new(keys: Vec<u8>) -> Self {
        Self { keys, matched: 0 }
    }

    /// Returns the bytes to forward, and whether the sequence was completed (the rest of
    /// `input` is then dropped).
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return (out, false);
        }
        for &b in input {
            if b != self.keys[self.matched] {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if b != self.keys[0] {
                    out.push(b);
                    continue;
                }
            }
            self.matched += 1;
            if self.matched == self.keys.len() {
                self.matched = 0;
                return (out, true);
            }
        }
        (out, false)
    }
}

/// The CLI's `ConsoleSize` (`[height, width]`, API ≥ 1.42) as the OCI process's
/// `consoleSize`: the runtime sizes the pty before the process runs, so a program that
/// asks at once (`stty size`) does not race the CLI's first resize. Zero sizes are unset.
pub fn console_size(value: Option<&serde_json::Value>) -> Option<serde_json::Value> {
    let a = value?.as_array()?;
    let (h, w) = (a.first()?.as_u64()?, a.get(1)?.as_u64()?);
    (h > 0 && w > 0).then(|| serde_json::json!({"height": h, "width": w}))
}

/// dockerd parses `h` and `w` with Go's Atoi and reports its error.
pub fn parse_dimension(value: Option<&str>) -> Result<u32, String> {
    let v = value.unwrap_or("");
    v.parse::<u32>()
        .map_err(|_| format!("strconv.Atoi: parsing {v:?}: invalid syntax"))
}

impl<B: Backend> Daemon<B> {
    /// `POST /containers/{id}/resize`: a container without a terminal has nothing to
    /// resize, which is not an error (containerd ignores it too).
    pub async fn resize_container(
        &self,
        reference: &str,
        height: u32,
        width: u32,
    ) -> DaemonResult<()> {
        let rec = self.container(reference)?;
        if !rec.state.status.is_running() {
            return Err(DaemonError::NotRunning { id: rec.id });
        }
        if !rec.config.tty {
            return Ok(());
        }
        self.backend
            .task_resize_pty(&rec.id, "", width, height)
            .await
            .map_err(Into::into)
    }

    /// `POST /exec/{id}/resize`; an exec that has not started or already ended is left
    /// alone.
    pub async fn resize_exec(&self, id: &str, height: u32, width: u32) -> DaemonResult<()> {
        let exec = self.exec(id)?;
        if !exec.config.tty || !exec.running {
            return Ok(());
        }
        match self
            .backend
            .task_resize_pty(&exec.container_id, id, width, height)
            .await
        {
            // The exec ended between the check and the call.
            Err(e) if e.is_not_found() => Ok(()),
            r => r.map_err(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_like_moby() {
        assert_eq!(parse_detach_keys("").unwrap(), vec![16, 17]);
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(
            parse_detach_keys("ctrl-A,x,ctrl-@").unwrap(),
            vec![1, b'x', 0]
        );
        assert_eq!(parse_detach_keys("ctrl-\\").unwrap(), vec![28]);
        for bad in ["ctrl-", "ctrl-pp", "abc", "ctrl-1", "a,,b"] {
            let e = parse_detach_keys(bad).unwrap_err().to_string();
            assert_eq!(e, format!("Invalid detach keys ({bad}) provided"));
        }
    }

    #[test]
    fn detach_watch_holds_back_a_prefix_and_detects_the_sequence() {
        let mut w = DetachWatch::new(vec![16, 17]);
        assert_eq!(w.feed(b"ab"), (b"ab".to_vec(), false));
        // A lone ctrl-p is held until the next byte shows it is not a detach.
        assert_eq!(w.feed(&[16]), (vec![], false));
        assert_eq!(w.feed(b"c"), (vec![16, b'c'], false));
        assert_eq!(w.feed(&[16, 16]), (vec![16], false));
        assert_eq!(w.feed(&[17, b'z']), (vec![], true));
        // Split across reads.
        let mut w = DetachWatch::new(vec![16, 17]);
        assert_eq!(w.feed(b"x\x10"), (b"x".to_vec(), false));
        assert_eq!(w.feed(b"\x11"), (vec![], true));
    }

    #[test]
    fn console_size_becomes_the_process_console_size() {
        use serde_json::json;
        assert_eq!(
            console_size(Some(&json!([40, 120]))),
            Some(json!({"height": 40, "width": 120}))
        );
        assert_eq!(console_size(Some(&json!([0, 0]))), None);
        assert_eq!(console_size(Some(&json!(null))), None);
        assert_eq!(console_size(None), None);
    }

    #[test]
    fn dimensions_parse_like_atoi() {
        assert_eq!(parse_dimension(Some("40")), Ok(40));
        assert_eq!(
            parse_dimension(Some("x")),
            Err("strconv.Atoi: parsing \"x\": invalid syntax".to_string())
        );
        assert!(parse_dimension(None).is_err());
    }
}
