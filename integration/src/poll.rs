//! Polling with deadlines: tests never sleep a fixed time and hope.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// How often conditions are re-checked.
const INTERVAL: Duration = Duration::from_millis(50);

/// Calls `check` until it returns `Ok(Some(v))`, or fails with the last error (or `what`)
/// once `timeout` has passed.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => None,
            Err(e) => Some(e),
        };
        if Instant::now() >= deadline {
            match last {
                Some(e) => bail!("timed out after {timeout:?} waiting for {what}: {e:#}"),
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        std::thread::sleep(INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_value_once_ready() {
        let mut n = 0;
        let v = wait_until("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            Ok((n >= 3).then_some(n))
        })
        .unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn times_out_with_last_error() {
        let err = wait_until::<()>("never", Duration::from_millis(120), || {
            bail!("still broken")
        })
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("never") && msg.contains("still broken"),
            "{msg}"
        );
    }
}
