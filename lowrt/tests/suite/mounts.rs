//! Mount destinations reached through symlinks in the rootfs (CVE-2021-30465): they land
//! inside the rootfs, and a dangling or escaping symlink never creates or mounts anything
//! on the host.

use std::os::unix::fs::symlink;

use serde_json::json;

use super::harness::{both_runtimes, stderr, stdout, Env, Runtime};

both_runtimes!(
    symlinked_destinations_land_inside_rootfs,
    escaping_symlink_never_touches_the_host
);

/// The mount points inside the container, from its own mountinfo.
const LIST_MOUNTS: &str = "awk '{print $5}' /proc/self/mountinfo";

fn add_mounts(env: &Env, id: &str, extra: serde_json::Value) {
    let mut config = env.config(id, &["sh", "-c", LIST_MOUNTS]);
    config["mounts"]
        .as_array_mut()
        .unwrap()
        .extend(extra.as_array().unwrap().iter().cloned());
    env.write_config(&config);
}

fn symlinked_destinations_land_inside_rootfs(rt: &Runtime) {
    let env = Env::new(rt);
    let rootfs = env.bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("real")).unwrap();
    symlink("/real", rootfs.join("abslink")).unwrap();
    // Far more ".." than the rootfs is deep: clamped at the container's "/".
    symlink("../../../../../../../../..", rootfs.join("real/up")).unwrap();
    std::fs::create_dir_all(env.bundle.join("src")).unwrap();
    std::fs::write(env.bundle.join("src/marker"), "m").unwrap();
    add_mounts(
        &env,
        "symdest",
        json!([
            {"destination": "/abslink/t1", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/real/up/b1", "type": "bind", "source": "src", "options": ["rbind", "ro"]},
            {"destination": "/abslink/../real/./b2", "type": "bind", "source": "src/marker", "options": ["rbind"]},
            {"destination": "/abslink/up/tmp/t2", "type": "tmpfs", "source": "tmpfs"}
        ]),
    );
    let out = env.run(&["run", "symdest"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    let text = stdout(&out);
    let mounts: Vec<&str> = text.lines().collect();
    for want in ["/real/t1", "/b1", "/real/b2", "/tmp/t2"] {
        assert!(
            mounts.contains(&want),
            "{}: no {want} in {mounts:?}",
            rt.name
        );
    }
    assert!(rootfs.join("real/t1").is_dir() && rootfs.join("b1").is_dir());
    assert!(rootfs.join("real/b2").is_file());
    env.assert_nothing_left("symdest");
}

fn escaping_symlink_never_touches_the_host(rt: &Runtime) {
    let env = Env::new(rt);
    let rootfs = env.bundle.join("rootfs");
    let outside = env.tmp.path().join("outside");
    let outside_rel = outside.strip_prefix("/").unwrap();
    // Dangling on purpose: the target exists neither in the rootfs nor on the host.
    symlink(&outside, rootfs.join("dangle_abs")).unwrap();
    symlink(
        format!("../../../../../../../..{}", outside.display()),
        rootfs.join("dangle_up"),
    )
    .unwrap();
    add_mounts(
        &env,
        "escape",
        json!([
            {"destination": "/dangle_abs/a", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dangle_up/b", "type": "tmpfs", "source": "tmpfs"}
        ]),
    );
    let out = env.run(&["run", "escape"]);
    // Whether a runtime follows the dangling link inside the rootfs (both do today) or
    // refuses, nothing may appear on the host.
    assert!(
        !outside.exists(),
        "{}: created {} on the host",
        rt.name,
        outside.display()
    );
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_mounts.contains(outside.to_str().unwrap()));
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    let inside = format!("/{}", outside_rel.display());
    let text = stdout(&out);
    let mounts: Vec<&str> = text.lines().collect();
    for want in [format!("{inside}/a"), format!("{inside}/b")] {
        assert!(
            mounts.contains(&want.as_str()),
            "{}: no {want} in {mounts:?}",
            rt.name
        );
    }
    env.assert_nothing_left("escape");
}
