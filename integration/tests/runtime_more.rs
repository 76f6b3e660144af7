//! Runtime gaps closed in session 5, through the real docker CLI: a container's stdin
//! outlives an engine restart (`run -dit` and `run -di`, then `attach`), while `run -i`
//! still ends the container's input at the client's EOF.

use std::time::Duration;

use anyhow::{ensure, Result};
use berth_integration::pty::PtyChild;
use berth_integration::stack::Daemon;
use berth_integration::{wait_until, Stack};

use crate::common::{inspect, Spec, DOCKER};

const T: Duration = Duration::from_secs(30);

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "runtime_more::stdin_survives_engine_restart",
            needs: DOCKER,
            run: stdin_after_restart,
        },
        Spec {
            name: "runtime_more::run_i_stdin_eof_reaches_the_container",
            needs: DOCKER,
            run: run_i_eof,
        },
    ]
}

fn running(s: &Stack, name: &str) -> Result<bool> {
    Ok(inspect(s, name)?["State"]["Running"] == true)
}

fn stdin_after_restart() -> Result<()> {
    let mut s = Stack::with_busybox()?;
    s.docker(&["run", "-dit", "--name", "tt", "busybox", "sh"])?
        .ok()?;
    // Non-tty: each line read comes back in the log; EOF would end the loop.
    s.docker(&[
        "run",
        "-di",
        "--name",
        "ii",
        "busybox",
        "sh",
        "-c",
        "while read l; do echo got:$l; done; echo eof",
    ])?
    .ok()?;

    s.kill_daemon(Daemon::Engine)?;
    s.start_daemon(Daemon::Engine)?;
    ensure!(running(&s, "tt")?, "the tty container stopped");
    ensure!(
        running(&s, "ii")?,
        "the -di container read EOF at the restart"
    );

    let mut cli = PtyChild::docker(&s, &["attach", "tt"], 24, 80)?;
    wait_until("the tty shell to answer after the restart", T, || {
        cli.send(b"echo af''ter\r")?;
        std::thread::sleep(Duration::from_millis(100));
        Ok(cli.output().contains("after").then_some(()))
    })?;
    cli.send(b"\x10\x11")?;
    // As with dockerd: `docker attach` reports the detach and exits 1.
    cli.expect("read escape sequence", T)?;
    let status = cli.wait(T)?;
    ensure!(
        status.code() == Some(1),
        "detach: docker attach exited {status:?}"
    );
    ensure!(
        running(&s, "tt")?,
        "the tty container stopped after a detach"
    );

    // A non-tty attach on a terminal: the CLI forwards each line as typed.
    let mut cli = PtyChild::docker(&s, &["attach", "ii"], 24, 80)?;
    wait_until(
        "the -di container to echo a line after the restart",
        T,
        || {
            cli.send(b"hello\n")?;
            std::thread::sleep(Duration::from_millis(100));
            Ok(cli.output().contains("got:hello").then_some(()))
        },
    )?;
    drop(cli);
    let logs = s.docker(&["logs", "ii"])?.ok()?;
    ensure!(
        logs.stdout.contains("got:hello") && !logs.stdout.contains("eof"),
        "docker logs of the -di container: {:?}",
        logs.stdout
    );
    ensure!(
        running(&s, "ii")?,
        "the -di container stopped after the attach"
    );
    s.docker(&["rm", "-f", "tt", "ii"])?.ok()?;
    Ok(())
}

fn run_i_eof() -> Result<()> {
    let s = Stack::with_busybox()?;
    let input = s.dir.join("input");
    std::fs::write(&input, "one\ntwo\n")?;
    let out = s
        .docker_with_stdin(
            &[
                "run",
                "-i",
                "--name",
                "ri",
                "busybox",
                "sh",
                "-c",
                "cat; echo done",
            ],
            Some(&input),
        )?
        .ok()?;
    ensure!(
        out.stdout == "one\ntwo\ndone\n",
        "docker run -i output {:?}",
        out.stdout
    );
    let v = inspect(&s, "ri")?;
    ensure!(
        v["State"]["ExitCode"] == 0 && v["Config"]["StdinOnce"] == true,
        "State {} StdinOnce {}",
        v["State"],
        v["Config"]["StdinOnce"]
    );
    s.docker(&["rm", "ri"])?.ok()?;
    Ok(())
}
