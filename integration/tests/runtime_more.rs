//! Runtime gaps closed in session 5, through the real docker CLI: a container's stdin
//! outlives an engine restart (`run -dit` and `run -di`, then `attach`), while `run -i`
//! still ends the container's input at the client's EOF. `--cpu-rt-period/--cpu-rt-runtime`
//! on create and update (cgroup v1), `--kernel-memory` dropped as dockerd 28 drops it.
//! `docker diff` on highd's copying snapshotter (`[snapshotter] mode = "copy"`).

use std::time::Duration;

use anyhow::{ensure, Result};
use berth_integration::pty::PtyChild;
use berth_integration::stack::Daemon;
use berth_integration::{wait_until, Stack};

use crate::common::{container_id, expect_contains, inspect, running, Spec, DOCKER};

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
        Spec {
            name: "runtime_more::cpu_rt_and_kernel_memory_on_run_and_update",
            needs: DOCKER,
            run: cpu_rt_and_kmem,
        },
        Spec {
            name: "runtime_more::diff_on_the_copying_snapshotter",
            needs: DOCKER,
            run: diff_copying,
        },
    ]
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
    // exec -i: the end of the CLI's input is the process's EOF too (CloseIO).
    s.docker(&["run", "-d", "--name", "rx", "busybox", "sleep", "1000"])?
        .ok()?;
    let out = s
        .docker_with_stdin(
            &["exec", "-i", "rx", "sh", "-c", "cat; echo end"],
            Some(&input),
        )?
        .ok()?;
    ensure!(
        out.stdout == "one\ntwo\nend\n",
        "docker exec -i output {:?}",
        out.stdout
    );
    s.docker(&["rm", "-f", "ri", "rx"])?.ok()?;
    Ok(())
}

fn cpu_rt_and_kmem() -> Result<()> {
    // A new cgroup has no real-time budget: the engine gives its parent 5% of the CPU
    // (dockerd's daemon flag of the same name) when a container asks for real-time CPU.
    let s = Stack::with_busybox_args(vec!["--cpu-rt-runtime=50000".into()])?;
    let parent = std::path::PathBuf::from("/sys/fs/cgroup/cpu").join(&s.cgroup_name);
    if !std::path::Path::new("/sys/fs/cgroup/cpu/cpu.rt_runtime_us").exists() {
        let out = s.docker(&["run", "--rm", "--cpu-rt-runtime", "1000", "busybox", "true"])?;
        return expect_contains(
            "run --cpu-rt-runtime without RT group scheduling",
            &out.expect_code(125)?.stderr,
            "kernel does not support CPU real-time scheduler",
        );
    }
    let id = container_id(
        &s.docker(&[
            "run",
            "-d",
            "--name",
            "rt",
            "--cpu-rt-period",
            "100000",
            "--cpu-rt-runtime",
            "1000",
            "busybox",
            "sleep",
            "1000",
        ])?
        .ok()?
        .stdout,
    )?;
    ensure!(
        std::fs::read_to_string(parent.join("cpu.rt_runtime_us"))?.trim() == "50000",
        "the engine did not give its cgroup parent the --cpu-rt-runtime budget"
    );
    let rt_file = |f: &str| -> Result<String> {
        Ok(std::fs::read_to_string(parent.join(&id).join(f))?
            .trim()
            .to_string())
    };
    ensure!(
        rt_file("cpu.rt_period_us")? == "100000" && rt_file("cpu.rt_runtime_us")? == "1000",
        "cgroup rt period/runtime {} {}",
        rt_file("cpu.rt_period_us")?,
        rt_file("cpu.rt_runtime_us")?
    );
    s.docker(&["update", "--cpu-rt-runtime", "2000", "rt"])?
        .ok()?;
    ensure!(
        rt_file("cpu.rt_runtime_us")? == "2000",
        "update not applied"
    );
    let hc = &inspect(&s, "rt")?["HostConfig"];
    ensure!(
        hc["CpuRealtimePeriod"] == 100_000 && hc["CpuRealtimeRuntime"] == 2000,
        "inspect HostConfig rt fields {} {}",
        hc["CpuRealtimePeriod"],
        hc["CpuRealtimeRuntime"]
    );
    // Over the parent's budget: the kernel refuses, the container keeps its value.
    let out = s.docker(&["update", "--cpu-rt-runtime", "90000", "rt"])?;
    let err = out.expect_code(1)?.stderr;
    expect_contains(
        "update over the RT budget",
        &err,
        &format!("Cannot update container {id}"),
    )?;
    expect_contains("update over the RT budget", &err, "cpu.rt_runtime_us")?;
    ensure!(
        rt_file("cpu.rt_runtime_us")? == "2000",
        "failed update changed the cgroup"
    );
    ensure!(
        inspect(&s, "rt")?["HostConfig"]["CpuRealtimeRuntime"] == 2000,
        "failed update changed the record"
    );
    let out = s.docker(&[
        "update",
        "--cpu-rt-period",
        "1000",
        "--cpu-rt-runtime",
        "2000",
        "rt",
    ])?;
    expect_contains(
        "update with runtime above period",
        &out.expect_code(1)?.stderr,
        "Error response from daemon: cpu real-time runtime cannot be higher than cpu real-time period",
    )?;
    let out = s.docker(&[
        "run",
        "--rm",
        "--cpu-rt-period",
        "1000",
        "--cpu-rt-runtime",
        "2000",
        "busybox",
        "true",
    ])?;
    expect_contains(
        "run with runtime above period",
        &out.expect_code(125)?.stderr,
        "cpu real-time runtime cannot be higher than cpu real-time period",
    )?;

    // --kernel-memory: dropped without a word for today's clients, with dockerd's warning
    // for API < 1.42.
    let out = s
        .docker(&[
            "run",
            "-d",
            "--name",
            "km",
            "--kernel-memory",
            "16m",
            "busybox",
            "sleep",
            "1000",
        ])?
        .ok()?;
    ensure!(
        !out.stderr.contains("kernel memory"),
        "run --kernel-memory said {:?}",
        out.stderr
    );
    ensure!(
        inspect(&s, "km")?["HostConfig"]["KernelMemory"].is_null(),
        "KernelMemory kept (dockerd 28 omits it): {}",
        inspect(&s, "km")?["HostConfig"]["KernelMemory"]
    );
    let old = berth_integration::http::request(
        &s.engine_sock(),
        "POST",
        "/v1.41/containers/km/update",
        br#"{"KernelMemory": 16777216}"#,
    )?;
    ensure!(
        old.status == 200
            && old.body.contains("Your kernel does not support kernel memory limit capabilities or the cgroup is not mounted. Limitation discarded."),
        "API 1.41 update with KernelMemory: {} {}",
        old.status,
        old.body
    );
    ensure!(
        inspect(&s, "km")?["HostConfig"]["KernelMemory"].is_null(),
        "KernelMemory stored: {}",
        inspect(&s, "km")?["HostConfig"]["KernelMemory"]
    );
    s.docker(&["rm", "-f", "rt", "km"])?.ok()?;
    Ok(())
}

fn diff_copying() -> Result<()> {
    let s = Stack::with_busybox_highd_config("[snapshotter]\nmode = \"copy\"\n")?;
    let log = std::fs::read_to_string(s.dir.join("highd.log"))?;
    ensure!(
        log.lines()
            .any(|l| l.contains("snapshotter ready") && l.contains("Copy")),
        "highd did not start the copying snapshotter:\n{log}"
    );
    s.docker(&[
        "run",
        "--name",
        "cp1",
        "-v",
        "vol:/data",
        "busybox",
        "sh",
        "-c",
        "echo hi > /created; echo v > /data/inside; rm /bin/ls; mkdir -p /var/x; \
         echo 2 >> /etc/passwd; chmod 750 /usr; chown 1:1 /tmp; rm -r /root; touch /root",
    ])?
    .ok()?;
    let out = s.docker(&["diff", "cp1"])?.ok()?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    // dockerd's naive (vfs) differ on the same change: a directory is modified by its
    // metadata or by a change below it, never by its mtime alone.
    let want = [
        "C /bin",
        "D /bin/ls",
        "A /created",
        "A /data",
        "C /etc",
        "C /etc/passwd",
        "C /root",
        "C /tmp",
        "C /usr",
        "C /var",
        "A /var/x",
    ];
    ensure!(lines == want, "docker diff printed {:?}", out.stdout);
    // commit: a layer of the changes only, deletions as whiteouts.
    s.docker(&["commit", "cp1", "cp1img"])?.ok()?;
    let out = s
        .docker(&[
            "run",
            "--rm",
            "cp1img",
            "sh",
            "-c",
            "test ! -e /bin/ls && cat /created && stat -c %a /usr",
        ])?
        .ok()?;
    ensure!(
        out.stdout == "hi\n750\n",
        "committed image: {:?}",
        out.stdout
    );
    let hist = s
        .docker(&["history", "--format", "{{.Size}}", "cp1img"])?
        .ok()?;
    let top = hist.stdout.lines().next().unwrap_or_default().to_string();
    ensure!(
        !top.ends_with("MB"),
        "the committed layer holds the whole tree: {top}"
    );
    s.docker(&["create", "--name", "fresh", "busybox", "true"])?
        .ok()?;
    let out = s.docker(&["diff", "fresh"])?.ok()?;
    ensure!(
        out.stdout.is_empty(),
        "diff of a created container: {:?}",
        out.stdout
    );
    // The image copy made for the comparison is gone again.
    let out = s.docker(&["run", "--name", "quiet", "busybox", "true"])?;
    out.ok()?;
    ensure!(
        s.docker(&["diff", "quiet"])?.ok()?.stdout.is_empty(),
        "diff of an idle container"
    );
    let snaps = std::fs::read_dir(s.dir.join("h/snapshots/overlayfs"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u64>().is_ok())
        .count();
    // The two images' layers and the three containers' snapshots.
    ensure!(snaps == 5, "{snaps} snapshot dirs left");
    s.docker(&["rm", "-v", "cp1", "fresh", "quiet"])?.ok()?;
    Ok(())
}
