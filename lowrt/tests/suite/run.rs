//! Foreground `run`: output, exit codes, namespaces, mounts, the missed-exit race.

use std::process::Stdio;
use std::time::Duration;

use super::harness::{both_runtimes, output_with_deadline, stderr, stdout, Env, Runtime};

both_runtimes!(
    echo_hi,
    exit_code_propagates,
    killed_is_128_plus_signal,
    hostname_and_pid_namespace,
    proc_and_masked_paths,
    no_fd_leaks,
    readonly_root,
    memory_limit_visible,
    seccomp_denies_mkdir,
    preserve_fds_passes_fd_3,
    docker_like_config,
    process_attributes,
    join_network_namespace_by_path,
    spec_writes_default_config,
    rootfs_propagation_values
);

fn run_args(env: &Env, id: &str, args: &[&str]) -> std::process::Output {
    env.write_config(&env.config(id, args));
    env.run(&["run", id])
}

fn echo_hi(rt: &Runtime) {
    let env = Env::new(rt);
    let out = run_args(&env, "echo", &["echo", "hi"]);
    assert_eq!(stdout(&out), "hi\n", "{}: stderr {}", rt.name, stderr(&out));
    assert!(out.status.success());
    env.assert_nothing_left("echo");
}

fn exit_code_propagates(rt: &Runtime) {
    let env = Env::new(rt);
    let out = run_args(&env, "exit3", &["sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}: {}", rt.name, stderr(&out));
    env.assert_nothing_left("exit3");
}

fn killed_is_128_plus_signal(rt: &Runtime) {
    let env = Env::new(rt);
    env.write_config(&env.config("killed", &["sleep", "60"]));
    let mut child = env
        .cmd(&["run", "killed"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    env.wait_status("killed", "running");
    let out = env.run(&["kill", "killed", "KILL"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut status = None;
    super::harness::poll_until(
        Duration::from_secs(20),
        || {
            status = child.try_wait().unwrap();
            status.is_some()
        },
        "run to return after kill",
    );
    assert_eq!(status.unwrap().code(), Some(137), "{}", rt.name);
    env.assert_nothing_left("killed");
}

fn hostname_and_pid_namespace(rt: &Runtime) {
    let env = Env::new(rt);
    let out = run_args(
        &env,
        "ns",
        &["sh", "-c", "hostname; echo $$; readlink /proc/self/ns/pid"],
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..2],
        ["berth-test", "1"],
        "{}: {text} {}",
        rt.name,
        stderr(&out)
    );
    let host_pidns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    assert_ne!(
        lines[2],
        host_pidns.to_str().unwrap(),
        "{}: same pid namespace as the host",
        rt.name
    );
}

fn proc_and_masked_paths(rt: &Runtime) {
    let env = Env::new(rt);
    let script = "grep -c ' /proc proc ' /proc/self/mounts; cat /etc/secret | wc -c; ls /sys/firmware | wc -l; echo x > /proc/sys/kernel/domainname 2>/dev/null && echo writable || echo ro";
    let out = run_args(&env, "masked", &["sh", "-c", script]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["1", "0", "0", "ro"],
        "{}: {text} {}",
        rt.name,
        stderr(&out)
    );
}

fn no_fd_leaks(rt: &Runtime) {
    let env = Env::new(rt);
    // ls itself opens one fd for the directory it lists.
    let out = run_args(&env, "fds", &["ls", "/proc/self/fd"]);
    let text = stdout(&out);
    let fds: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "{}: {}", rt.name, stderr(&out));
}

fn readonly_root(rt: &Runtime) {
    let env = Env::new(rt);
    let out = run_args(
        &env,
        "ro",
        &[
            "sh",
            "-c",
            "touch /x 2>/dev/null && echo rw || echo ro; touch /tmp/y && echo tmp-rw",
        ],
    );
    assert_eq!(
        stdout(&out),
        "ro\ntmp-rw\n",
        "{}: {}",
        rt.name,
        stderr(&out)
    );
}

fn memory_limit_visible(rt: &Runtime) {
    let env = Env::new(rt);
    let mut config = env.config(
        "mem",
        &[
            "cat",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/pids/pids.max",
        ],
    );
    config["linux"]["resources"] =
        serde_json::json!({"memory": {"limit": 67108864}, "pids": {"limit": 64}});
    env.write_config(&config);
    let out = env.run(&["run", "mem"]);
    assert_eq!(
        stdout(&out),
        "67108864\n64\n",
        "{}: {}",
        rt.name,
        stderr(&out)
    );
}

/// youki's foreground run hangs in a few percent of runs when the container exits before
/// the runtime starts waiting. 300 runs of `true`, each with a deadline.
#[test]
fn run_true_300_times_never_hangs() {
    if super::harness::skip_unless_root("run_true_300_times_never_hangs") {
        return;
    }
    let env = Env::new(&super::harness::berth());
    env.write_config(&env.config("t", &["true"]));
    let start = std::time::Instant::now();
    for i in 0..300 {
        let out = output_with_deadline(env.cmd(&["run", "t"]), Duration::from_secs(10));
        assert!(out.status.success(), "run {i}: {}", stderr(&out));
    }
    eprintln!("300 runs of `true` took {:?}", start.elapsed());
    env.assert_nothing_left("t");
}

/// The runtime binary must not be the exe of any process the container can see: init
/// runs from a private read-only overlayfs (root on a kernel with fsopen, as here), so
/// reopening its exe for writing fails with EROFS even once every user of it has exited
/// (the CVE-2019-5736 attack waits for ETXTBSY to clear).
#[test]
fn init_runs_from_a_read_only_overlay() {
    if super::harness::skip_unless_root("init_runs_from_a_read_only_overlay") {
        return;
    }
    let env = Env::new(&super::harness::berth());
    env.write_config(&env.config("roexe", &["sleep", "60"]));
    let out = env.run(&["create", "roexe"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = env.state("roexe").unwrap()["pid"].as_i64().unwrap();
    let exe_path = format!("/proc/{pid}/exe");
    let exe = std::fs::File::open(&exe_path).unwrap();
    let fs = nix::sys::statfs::fstatfs(&exe).unwrap();
    assert_eq!(
        fs.filesystem_type().0 as i64,
        0x794c_7630,
        "not on overlayfs"
    );
    let host = std::fs::metadata(env.rt.bin.as_path()).unwrap();
    let meta = exe.metadata().unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!((meta.dev(), meta.ino()), (host.dev(), host.ino()));
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(&exe_path)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert!(env.run(&["delete", "--force", "roexe"]).status.success());
    env.assert_nothing_left("roexe");
}

/// A profile that allows everything but mkdir/mkdirat (EPERM).
fn seccomp_denies_mkdir(rt: &Runtime) {
    let env = Env::new(rt);
    let mut config = env.config(
        "sec",
        &[
            "sh",
            "-c",
            "mkdir /tmp/a 2>&1; echo rc=$?; touch /tmp/b && echo touched",
        ],
    );
    config["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    // Both load points: before exec (no_new_privs) and before dropping capabilities.
    for nnp in [true, false] {
        config["process"]["noNewPrivileges"] = serde_json::json!(nnp);
        env.write_config(&config);
        let out = env.run(&["run", "sec"]);
        let text = stdout(&out);
        assert!(
            text.contains("Operation not permitted")
                && text.contains("rc=1")
                && text.contains("touched"),
            "{} nnp={nnp}: {text} {}",
            rt.name,
            stderr(&out)
        );
    }
}

/// `--preserve-fds 1` hands the caller's fd 3 to the container and nothing else.
fn preserve_fds_passes_fd_3(rt: &Runtime) {
    let env = Env::new(rt);
    env.write_config(&env.config(
        "pf",
        &[
            "sh",
            "-c",
            "echo preserved >&3; ls /proc/self/fd | tr '\\n' ' '",
        ],
    ));
    let file = env.tmp.path().join("fd3.txt");
    let script = format!(
        "exec 3>{}; exec {} --root {} run --preserve-fds 1 pf",
        file.display(),
        rt.bin.display(),
        env.root.display()
    );
    let mut cmd = std::process::Command::new("/bin/busybox");
    cmd.args(["sh", "-c", &script]).current_dir(&env.bundle);
    let out = output_with_deadline(cmd, Duration::from_secs(30));
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "preserved\n",
        "{}",
        rt.name
    );
    assert_eq!(stdout(&out), "0 1 2 3 4 ", "{}", rt.name);
}

/// The shape of config dockerd generates: device cgroup rules, sysctls, a cgroup
/// namespace, docker's masked/readonly paths, binds of files from the host. /dev/port
/// (1:4) is not in the allow list: mknod is allowed (runc's implicit `c *:* m`), reading is not.
fn docker_like_config(rt: &Runtime) {
    let env = Env::new(rt);
    let hosts = env.tmp.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    let script = "cat /etc/hosts; cat /proc/sys/net/ipv4/ip_unprivileged_port_start; \
                  echo x > /dev/null && echo null-ok; head -c 4 /dev/zero | wc -c; \
                  mknod /tmp/m c 1 4 && (head -c 1 /tmp/m >/dev/null 2>&1 && echo read-allowed || echo read-denied); \
                  grep -c ':memory:/$' /proc/self/cgroup";
    let mut config = env.config("dock", &["sh", "-c", script]);
    config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "cgroup"}));
    config["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_unprivileged_port_start": "0"});
    let allow = |t: &str, major: i64, minor: i64| serde_json::json!({"allow": true, "type": t, "major": major, "minor": minor, "access": "rwm"});
    config["linux"]["resources"] = serde_json::json!({
        "devices": [{"allow": false, "access": "rwm"}, allow("c", 1, 3), allow("c", 1, 5), allow("c", 1, 7), allow("c", 1, 8), allow("c", 1, 9), allow("c", 5, 0), allow("c", 5, 2), allow("c", 136, -1)]
    });
    config["linux"]["maskedPaths"] = serde_json::json!([
        "/proc/asound",
        "/proc/acpi",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap"
    ]);
    config["linux"]["readonlyPaths"] = serde_json::json!([
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger"
    ]);
    config["mounts"].as_array_mut().unwrap().push(serde_json::json!({"destination": "/etc/hosts", "type": "bind", "source": hosts, "options": ["rbind", "rprivate"]}));
    config["process"]["capabilities"]["bounding"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!("CAP_MKNOD"));
    config["process"]["capabilities"]["effective"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!("CAP_MKNOD"));
    config["process"]["capabilities"]["permitted"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!("CAP_MKNOD"));
    env.write_config(&config);
    let out = env.run(&["run", "dock"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    // With a cgroup namespace the container sees itself at the root of its hierarchy.
    assert_eq!(
        lines,
        [
            "127.0.0.1 localhost",
            "0",
            "null-ok",
            "4",
            "read-denied",
            "1"
        ],
        "{}: {}",
        rt.name,
        stderr(&out)
    );
    env.assert_nothing_left("dock");
}

/// rlimits, capability sets, no_new_privs, uid/gid/additionalGids, umask, oom_score_adj.
fn process_attributes(rt: &Runtime) {
    let env = Env::new(rt);
    let script = "ulimit -n; grep -E '^(CapBnd|CapEff|CapPrm|NoNewPrivs)' /proc/self/status | tr -s '\\t' ' '; \
                  id -u; id -g; id -G; umask; cat /proc/self/oom_score_adj";
    let mut config = env.config("attrs", &["sh", "-c", script]);
    config["process"]["rlimits"] =
        serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]);
    config["process"]["user"] =
        serde_json::json!({"uid": 1000, "gid": 1001, "additionalGids": [1002, 1003], "umask": 63});
    config["process"]["oomScoreAdj"] = serde_json::json!(100);
    config["process"]["capabilities"] = serde_json::json!({
        "bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]
    });
    env.write_config(&config);
    let out = env.run(&["run", "attrs"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    // CAP_CHOWN is bit 0, CAP_KILL bit 5. A non-root uid keeps no permitted capabilities
    // across execve without ambient ones (capabilities(7)); runc behaves the same.
    assert_eq!(
        lines,
        [
            "256",
            "CapPrm: 0000000000000000",
            "CapEff: 0000000000000000",
            "CapBnd: 0000000000000021",
            "NoNewPrivs: 1",
            "1000",
            "1001",
            "1001 1002 1003",
            "0077",
            "100"
        ],
        "{}: {}",
        rt.name,
        stderr(&out)
    );
}

/// A namespace given by path is joined, not created.
fn join_network_namespace_by_path(rt: &Runtime) {
    let env = Env::new(rt);
    env.write_config(&env.config("owner", &["sleep", "60"]));
    assert!(env.run(&["run", "--detach", "owner"]).status.success());
    env.wait_status("owner", "running");
    let owner_pid = env.state("owner").unwrap()["pid"].as_i64().unwrap();
    let ns_path = format!("/proc/{owner_pid}/ns/net");
    let mut config = env.config("joiner", &["readlink", "/proc/self/ns/net"]);
    for ns in config["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "network" {
            ns["path"] = serde_json::json!(ns_path);
        }
    }
    env.write_config(&config);
    let out = env.run(&["run", "joiner"]);
    let want = std::fs::read_link(&ns_path).unwrap();
    assert_eq!(
        stdout(&out).trim(),
        want.to_str().unwrap(),
        "{}: {}",
        rt.name,
        stderr(&out)
    );
}

/// `spec` writes a config.json this runtime accepts, and refuses to overwrite it.
fn spec_writes_default_config(rt: &Runtime) {
    let env = Env::new(rt);
    let dir = env.tmp.path().join("specdir");
    std::fs::create_dir(&dir).unwrap();
    let out = env.run(&["spec", "--bundle", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(v["process"]["terminal"], true);
    assert_eq!(v["root"]["path"], "rootfs");
    let out = env.run(&["spec", "--bundle", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("exists"),
        "{}: {}",
        rt.name,
        stderr(&out)
    );
}

/// rootfsPropagation other than the default still pivots (the rootfs' parent mount
/// must not be shared for pivot_root(2)).
fn rootfs_propagation_values(rt: &Runtime) {
    let env = Env::new(rt);
    for prop in ["rprivate", "rslave", "rshared", "private"] {
        let mut config = env.config("prop", &["echo", prop]);
        config["linux"]["rootfsPropagation"] = serde_json::json!(prop);
        env.write_config(&config);
        let out = env.run(&["run", "prop"]);
        assert_eq!(
            stdout(&out),
            format!("{prop}\n"),
            "{} {prop}: {}",
            rt.name,
            stderr(&out)
        );
        env.assert_nothing_left("prop");
    }
}
