//! docker-style presentation: aligned tables, "5 minutes ago", "4.26MB".

/// Renders rows as docker's tables do (tabwriter: min width 10, padding 3; the last column
/// is not padded).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(cols) {
            line.push_str(cell);
            if i + 1 < cols {
                let width = (widths[i] + 3).max(10);
                let pad = width.saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// go-units' HumanDuration, which docker uses for CREATED and STATUS.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let minutes = secs / 60;
    let hours = (secs as f64 / 3600.0).round() as i64;
    match () {
        _ if secs < 1 => "Less than a second".to_string(),
        _ if secs == 1 => "1 second".to_string(),
        _ if secs < 60 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

/// "<duration> ago" for a unix timestamp.
pub fn ago(unix_secs: i64, now: i64) -> String {
    format!("{} ago", human_duration(now - unix_secs))
}

/// go-units' HumanSizeWithPrecision(size, 3): decimal units, 3 significant digits.
pub fn human_size(bytes: i64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes.max(0) as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{}{}", significant(v, 3), UNITS[unit])
}

/// `v` with `digits` significant digits and no trailing zeros (Go's `%.3g` for v < 1000).
fn significant(v: f64, digits: i32) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `"cmd args…"` as docker ps shows it: quoted, cut to 20 characters with an ellipsis.
pub fn quoted_command(cmd: &str, no_trunc: bool) -> String {
    let shown = if no_trunc {
        cmd.to_string()
    } else {
        ellipsis(cmd, 20)
    };
    format!("\"{shown}\"")
}

/// Cuts `s` to `max` characters, the last being "…".
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Short form of an ID: without `sha256:`, 12 hex characters.
pub fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_like_tabwriter() {
        let t = table(
            &["CONTAINER ID", "NAMES"],
            &[
                vec!["abc".into(), "x".into()],
                vec!["0123456789ab".into(), "longname".into()],
            ],
        );
        assert_eq!(
            t,
            "CONTAINER ID   NAMES\nabc            x\n0123456789ab   longname\n"
        );
        // Narrow columns are still 10 wide.
        assert_eq!(table(&["A", "B"], &[]), "A         B\n");
    }

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(42), "42 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(20 * 86400), "2 weeks");
        assert_eq!(ago(100, 142), "42 seconds ago");
    }

    #[test]
    fn sizes_use_three_significant_digits() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(1_000_000), "1MB");
        assert_eq!(human_size(12_345), "12.3kB");
        assert_eq!(human_size(2_100_000_000), "2.1GB");
    }

    #[test]
    fn commands_and_ids_are_shortened() {
        assert_eq!(quoted_command("sleep 1000", false), "\"sleep 1000\"");
        assert_eq!(
            quoted_command("sh -c 'echo a very long command'", false),
            "\"sh -c 'echo a very …\""
        );
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
    }
}
