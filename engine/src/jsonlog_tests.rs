use super::*;
use std::io::Write;

fn line(stream: &str, text: &str) -> String {
    format!(
        "{}\n",
        serde_json::json!({"log": text, "stream": stream, "time": "2026-01-02T03:04:05.123456789Z"})
    )
}

fn append(path: &Path, s: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(s.as_bytes()).unwrap();
}

#[test]
fn reads_all_and_tails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c-json.log");
    for i in 0..5 {
        append(
            &path,
            &line(
                if i % 2 == 0 { "stdout" } else { "stderr" },
                &format!("{i}\n"),
            ),
        );
    }
    let (all, _) = read_all(&path, None).unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all[1].stream, StdStream::Stderr);
    let (tail, _) = read_all(&path, Some(2)).unwrap();
    let texts: Vec<_> = tail.iter().map(|e| e.log.as_str()).collect();
    assert_eq!(texts, ["3\n", "4\n"]);
    let (none, _) = read_all(&path, Some(0)).unwrap();
    assert!(none.is_empty());
}

#[test]
fn rotated_files_come_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c-json.log");
    append(&dir.path().join("c-json.log.2"), &line("stdout", "a\n"));
    append(&dir.path().join("c-json.log.1"), &line("stdout", "b\n"));
    append(&path, &line("stdout", "c\n"));
    let (all, _) = read_all(&path, None).unwrap();
    let texts: Vec<_> = all.iter().map(|e| e.log.as_str()).collect();
    assert_eq!(texts, ["a\n", "b\n", "c\n"]);
}

#[test]
fn follower_returns_only_new_complete_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c-json.log");
    append(&path, &line("stdout", "old\n"));
    let mut f = Follower::from_end(&path).unwrap();
    assert!(f.poll().unwrap().is_empty());
    let full = line("stderr", "new\n");
    let (head, rest) = full.split_at(10);
    append(&path, head);
    assert!(f.poll().unwrap().is_empty(), "a torn line is held back");
    append(&path, rest);
    let got = f.poll().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].log, "new\n");
    assert_eq!(got[0].stream, StdStream::Stderr);
}

#[test]
fn follower_waits_for_a_missing_file_and_survives_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c-json.log");
    let mut f = Follower::from_end(&path).unwrap();
    assert!(f.poll().unwrap().is_empty());
    append(&path, &line("stdout", "1\n"));
    assert_eq!(f.poll().unwrap().len(), 1);
    append(&path, &line("stdout", "2\n"));
    std::fs::rename(&path, dir.path().join("c-json.log.1")).unwrap();
    append(&path, &line("stdout", "3\n"));
    let texts: Vec<_> = f.poll().unwrap().into_iter().map(|e| e.log).collect();
    assert_eq!(texts, ["2\n", "3\n"]);
}

#[test]
fn garbage_lines_are_skipped() {
    assert!(parse_line(b"{not json").is_none());
    assert!(parse_line(br#"{"log":"x","stream":"bogus"}"#).is_none());
    assert!(parse_line(br#"{"log":"x\n","stream":"stdout","time":"t"}"#).is_some());
}
