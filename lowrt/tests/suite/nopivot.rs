//! `--no-pivot` (containerd's NoPivotRoot runc option reaches the runtime as
//! `create --no-pivot`): the rootfs is moved onto / and chrooted into.

use super::harness::{both_runtimes, stderr, stdout, Env, Runtime};

both_runtimes!(no_pivot_runs_in_the_rootfs_without_host_proc);

fn no_pivot_runs_in_the_rootfs_without_host_proc(rt: &Runtime) {
    let env = Env::new(rt);
    // The image's passwd (host root's shell differs), and only the container's own proc
    // (and the read-only bind of its /proc/sys).
    let script = "head -1 /etc/passwd; grep ' - proc ' /proc/self/mountinfo | cut -d' ' -f5; \
                  ls /bin/busybox";
    env.write_config(&env.config("nopivot", &["sh", "-c", script]));
    let out = env.run(&["run", "--no-pivot", "nopivot"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    assert_eq!(
        stdout(&out),
        "root:x:0:0:root:/root:/bin/sh\n/proc\n/proc/sys\n/bin/busybox\n",
        "{}: {}",
        rt.name,
        stderr(&out)
    );
    env.assert_nothing_left("nopivot");

    env.write_config(&env.config("nopivot2", &["true"]));
    let out = env.run(&["create", "--no-pivot", "nopivot2"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    assert!(env.run(&["start", "nopivot2"]).status.success());
    env.wait_status("nopivot2", "stopped");
    assert!(env.run(&["delete", "nopivot2"]).status.success());
    env.assert_nothing_left("nopivot2");
}
