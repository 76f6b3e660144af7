//! Terminals through the real docker CLI on a pty: `run -it` round trip and exit code,
//! `stty size` after a resize, `run -t` output in `docker logs`, detaching with ctrl-p
//! ctrl-q (and `--detach-keys`) leaving the container running, `attach`, `exec -it`.

use std::time::Duration;

use anyhow::{ensure, Result};
use berth_integration::pty::PtyChild;
use berth_integration::Stack;

use crate::common::{expect_contains, running, Spec, DOCKER};

const T: Duration = Duration::from_secs(30);

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "tty::run_it_round_trip_resize_exit_code_and_logs",
            needs: DOCKER,
            run: run_it,
        },
        Spec {
            name: "tty::detach_keys_attach_and_exec_it",
            needs: DOCKER,
            run: detach_attach_exec,
        },
    ]
}

fn run_it() -> Result<()> {
    let s = Stack::with_busybox()?;
    let mut cli = PtyChild::docker(
        &s,
        &["run", "-it", "--name", "it1", "busybox", "sh"],
        24,
        80,
    )?;
    cli.expect("# ", T)?;
    cli.send(b"stty size\r")?;
    cli.expect("24 80", T)?;
    cli.resize(33, 101)?;
    // The CLI forwards the SIGWINCH as a resize request: poll until the shell sees it.
    berth_integration::wait_until("the new size inside the container", T, || {
        cli.send(b"stty size\r")?;
        std::thread::sleep(Duration::from_millis(100));
        Ok(cli.output().contains("33 101").then_some(()))
    })?;
    // The quotes keep the echoed command line from matching.
    cli.send(b"echo round''trip; exit 3\r")?;
    cli.expect("roundtrip", T)?;
    let status = cli.wait(T)?;
    ensure!(
        status.code() == Some(3),
        "docker run -it exit status {status:?}, output {:?}",
        cli.output()
    );
    let logs = s.docker(&["logs", "it1"])?.ok()?;
    expect_contains(
        "docker logs of a tty container",
        &logs.stdout,
        "roundtrip\r\n",
    )?;

    // -t without -i: one raw stream (stderr included), CRLF from the terminal, also in logs.
    let out = s.docker(&[
        "run",
        "-t",
        "--name",
        "t1",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ])?;
    let out = out.ok()?;
    ensure!(
        out.stdout == "out\r\nerr\r\n",
        "docker run -t output {:?}",
        out.stdout
    );
    let logs = s.docker(&["logs", "t1"])?.ok()?;
    ensure!(
        logs.stdout == "out\r\nerr\r\n" && logs.stderr.is_empty(),
        "docker logs of run -t: stdout {:?} stderr {:?}",
        logs.stdout,
        logs.stderr
    );
    s.docker(&["rm", "it1", "t1"])?.ok()?;
    Ok(())
}

fn detach_attach_exec() -> Result<()> {
    let s = Stack::with_busybox()?;
    let mut cli = PtyChild::docker(&s, &["run", "-it", "--name", "d1", "busybox", "sh"], 24, 80)?;
    cli.expect("# ", T)?;
    cli.send(b"\x10\x11")?;
    let status = cli.wait(T)?;
    ensure!(status.success(), "detach: docker run exited {status:?}");
    ensure!(running(&s, "d1")?, "the container stopped after a detach");

    // Re-attach: the same shell answers; a custom detach key leaves it running again.
    let mut cli = PtyChild::docker(&s, &["attach", "--detach-keys", "ctrl-x", "d1"], 24, 80)?;
    berth_integration::wait_until("the re-attached shell to answer", T, || {
        cli.send(b"echo re''attached\r")?;
        std::thread::sleep(Duration::from_millis(100));
        Ok(cli.output().contains("reattached").then_some(()))
    })?;
    cli.send(b"\x18")?;
    // As with dockerd: `docker attach` reports the detach and exits 1.
    cli.expect("read escape sequence", T)?;
    let status = cli.wait(T)?;
    ensure!(
        status.code() == Some(1),
        "detach-keys: docker attach exited {status:?}, output {:?}",
        cli.output()
    );
    ensure!(
        running(&s, "d1")?,
        "the container stopped after --detach-keys"
    );

    // exec -it: its own terminal with the CLI's size, raw output, exit code.
    let mut ex = PtyChild::docker(
        &s,
        &[
            "exec",
            "-it",
            "d1",
            "sh",
            "-c",
            "stty size; echo ex''ecok; read x; exit 4",
        ],
        40,
        120,
    )?;
    ex.expect("40 120", T)?;
    ex.expect("execok", T)?;
    ex.send(b"\r")?;
    let status = ex.wait(T)?;
    ensure!(
        status.code() == Some(4),
        "docker exec -it exit status {status:?}, output {:?}",
        ex.output()
    );

    // Attach again and end the shell: attach returns its exit code.
    let mut cli = PtyChild::docker(&s, &["attach", "d1"], 24, 80)?;
    berth_integration::wait_until("the shell to take input", T, || {
        cli.send(b"echo ready''now\r")?;
        std::thread::sleep(Duration::from_millis(100));
        Ok(cli.output().contains("readynow").then_some(()))
    })?;
    cli.send(b"exit 5\r")?;
    let status = cli.wait(T)?;
    ensure!(
        status.code() == Some(5),
        "docker attach exit status {status:?}"
    );
    s.docker(&["rm", "d1"])?.ok()?;
    Ok(())
}
