//! `--console-socket`: the pty master arrives over the socket with SCM_RIGHTS.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use super::harness::{both_runtimes, stderr, Env, Runtime};

both_runtimes!(terminal_over_console_socket, exec_tty_over_console_socket);

fn terminal_over_console_socket(rt: &Runtime) {
    let env = Env::new(rt);
    let mut config = env.config("tty", &["sh", "-c", "tty; echo done"]);
    config["process"]["terminal"] = serde_json::json!(true);
    env.write_config(&config);
    let sock_path = env.tmp.path().join("console.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let accept = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        berth_lowrt::sys::recv_fd(stream.as_fd())
            .unwrap()
            .expect("no fd in console message")
    });
    let out = env.run(&[
        "create",
        "--console-socket",
        sock_path.to_str().unwrap(),
        "tty",
    ]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    let master = accept.join().unwrap();
    assert!(env.run(&["start", "tty"]).status.success());
    let mut file = std::fs::File::from(master);
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1024];
    while !text.contains("done") && Instant::now() < deadline {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(
        text.contains("/dev/pts/0"),
        "{}: pty output {text:?}",
        rt.name
    );
    assert!(text.contains("done"), "{}: pty output {text:?}", rt.name);
}

/// `exec --tty --console-socket S --detach`: the shim's form for `docker exec -t`.
fn exec_tty_over_console_socket(rt: &Runtime) {
    let env = Env::new(rt);
    env.write_config(&env.config("etty", &["sleep", "60"]));
    assert!(env.run(&["run", "--detach", "etty"]).status.success());
    env.wait_status("etty", "running");
    let sock_path = env.tmp.path().join("exec-console.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let accept = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        berth_lowrt::sys::recv_fd(stream.as_fd())
            .unwrap()
            .expect("no fd in console message")
    });
    let out = env.run(&[
        "exec",
        "--tty",
        "--detach",
        "--console-socket",
        sock_path.to_str().unwrap(),
        "etty",
        "sh",
        "-c",
        "tty; echo done",
    ]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    let mut file = std::fs::File::from(accept.join().unwrap());
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1024];
    while !text.contains("done") && Instant::now() < deadline {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(
        text.contains("/dev/pts/"),
        "{}: pty output {text:?}",
        rt.name
    );
    assert!(text.contains("done"), "{}: pty output {text:?}", rt.name);
}

/// Foreground `run` of a terminal container without a console socket proxies the pty.
/// berth-lowrt only: runc 1.1 also insists on opening its caller's /dev/tty, which a test
/// harness does not have.
#[test]
fn foreground_run_with_terminal() {
    if super::harness::skip_unless_root("foreground_run_with_terminal") {
        return;
    }
    let rt = &super::harness::berth();
    let env = Env::new(rt);
    let mut config = env.config("fgtty", &["sh", "-c", "tty; echo done; exit 4"]);
    config["process"]["terminal"] = serde_json::json!(true);
    env.write_config(&config);
    let out = env.run(&["run", "fgtty"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("/dev/pts/0") && text.contains("done"),
        "{}: {text:?} {}",
        rt.name,
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(4), "{}: {}", rt.name, stderr(&out));
    env.assert_nothing_left("fgtty");
}
