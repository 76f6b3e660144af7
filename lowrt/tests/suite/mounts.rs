//! Mount destinations reached through symlinks in the rootfs (CVE-2021-30465): they land
//! inside the rootfs, and a dangling or escaping symlink never creates or mounts anything
//! on the host.

use std::os::unix::fs::{symlink, PermissionsExt};

use serde_json::json;

use super::harness::{both_runtimes, stderr, stdout, Env, Runtime};

both_runtimes!(
    symlinked_destinations_land_inside_rootfs,
    escaping_symlink_never_touches_the_host,
    tmpcopyup_fills_the_tmpfs_from_the_image
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

/// `tmpcopyup`: the tmpfs shows what the image had at its destination (content, modes,
/// owners, symlinks, subdirectories), writes stay in the tmpfs; without the option the
/// tmpfs is empty. A read-only one still gets the copy and the covered directory's mode.
fn tmpcopyup_fills_the_tmpfs_from_the_image(rt: &Runtime) {
    let env = Env::new(rt);
    let rootfs = env.bundle.join("rootfs");
    let data = rootfs.join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("a"), "image-a").unwrap();
    std::fs::set_permissions(data.join("a"), PermissionsExt::from_mode(0o604)).unwrap();
    std::os::unix::fs::chown(data.join("a"), Some(1000), Some(1001)).unwrap();
    std::fs::write(data.join("sub/b"), "image-b").unwrap();
    std::fs::set_permissions(data.join("sub"), PermissionsExt::from_mode(0o711)).unwrap();
    symlink("a", data.join("link")).unwrap();
    std::fs::set_permissions(&data, PermissionsExt::from_mode(0o750)).unwrap();
    std::fs::create_dir_all(rootfs.join("plain")).unwrap();
    std::fs::write(rootfs.join("plain/hidden"), "h").unwrap();
    std::fs::create_dir_all(rootfs.join("rodata")).unwrap();
    std::fs::write(rootfs.join("rodata/c"), "image-c").unwrap();
    let script = "cat /data/a /data/sub/b; echo; readlink /data/link; \
        stat -c '%a %u %g' /data/a /data/sub /data /rodata; \
        echo changed > /data/new && cat /data/new; ls -A /plain | wc -l; cat /rodata/c; echo; \
        touch /rodata/new 2>/dev/null && echo rw || echo ro";
    let mut config = env.config("copyup", &["sh", "-c", script]);
    config["mounts"].as_array_mut().unwrap().extend([
        json!({"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "tmpcopyup"]}),
        json!({"destination": "/plain", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}),
        json!({"destination": "/rodata", "type": "tmpfs", "source": "tmpfs", "options": ["ro", "tmpcopyup"]}),
    ]);
    env.write_config(&config);
    let out = env.run(&["run", "copyup"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "image-aimage-b",
            "a",
            "604 1000 1001",
            "711 0 0",
            "750 0 0",
            "755 0 0",
            "changed",
            "0",
            "image-c",
            "ro"
        ],
        "{}",
        rt.name
    );
    // The image itself is untouched.
    assert!(!data.join("new").exists());
    assert!(!rootfs.join("rodata/new").exists());
    env.assert_nothing_left("copyup");
}
