//! `--console-socket`: the pty master arrives over the socket with SCM_RIGHTS.

use std::io::{IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use super::harness::{both_runtimes, stderr, Env, Runtime};

both_runtimes!(terminal_over_console_socket);

fn terminal_over_console_socket(rt: &Runtime) {
    let env = Env::new(rt);
    let mut config = env.config("tty", &["sh", "-c", "tty; echo done"]);
    config["process"]["terminal"] = serde_json::json!(true);
    env.write_config(&config);
    let sock_path = env.tmp.path().join("console.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let accept = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .unwrap();
        let fd = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .expect("no fd in console message");
        // SAFETY: the fd was just received and is owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(fd) }
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
