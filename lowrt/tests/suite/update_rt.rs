//! `update --cpu-rt-period/--cpu-rt-runtime` (cgroup v1 RT group scheduling) and the Intel
//! RDT flags.

use super::harness::{both_runtimes, stderr, Env, Runtime};

both_runtimes!(update_sets_realtime_cpu_limits);

fn update_sets_realtime_cpu_limits(rt: &Runtime) {
    let cpu_root = std::path::Path::new("/sys/fs/cgroup/cpu");
    if !cpu_root.join("cpu.rt_runtime_us").exists() {
        eprintln!("SKIPPED update_sets_realtime_cpu_limits: no v1 RT group scheduling here");
        return;
    }
    let env = Env::new(rt);
    // A child's RT runtime must fit in its parent's, and a new cgroup gets 0: give this
    // test's own parent a small budget first (Env's drop removes it).
    let parent = cpu_root.join(env.cgroup_parent.trim_start_matches('/'));
    std::fs::create_dir_all(&parent).unwrap();
    std::fs::write(parent.join("cpu.rt_runtime_us"), "20000").unwrap();
    env.write_config(&env.config("rt", &["sleep", "600"]));
    let out = env.run(&["create", "rt"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    let out = env.run(&[
        "update",
        "--cpu-rt-period",
        "1000000",
        "--cpu-rt-runtime",
        "10000",
        "rt",
    ]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    let dir = parent.join("rt");
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(read("cpu.rt_period_us"), "1000000", "{}", rt.name);
    assert_eq!(read("cpu.rt_runtime_us"), "10000", "{}", rt.name);
    // More than the parent allows: the kernel's refusal is reported, nothing changes.
    let out = env.run(&["update", "--cpu-rt-runtime", "500000", "rt"]);
    assert!(
        !out.status.success(),
        "{}: over-budget rt runtime accepted",
        rt.name
    );
    assert_eq!(read("cpu.rt_runtime_us"), "10000", "{}", rt.name);
    assert!(env.run(&["delete", "--force", "rt"]).status.success());
    env.assert_nothing_left("rt");
}
