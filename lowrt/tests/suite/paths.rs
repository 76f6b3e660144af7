//! Paths the runtime resolves inside the rootfs besides mount destinations: device
//! nodes, /dev symlinks, read-only and masked paths. A symlink in the image pointing at
//! the host (absolute, `..`-laden, or through /proc's magic links) must never make the
//! runtime create, chmod, mount on or mask anything outside the rootfs.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use serde_json::json;

use super::harness::{berth, both_runtimes, skip_unless_root, stderr, stdout, Env, Runtime};

both_runtimes!(
    dot_dot_destination_is_cleaned_lexically,
    device_and_path_symlinks_stay_inside_the_rootfs
);

const LIST_MOUNTS: &str = "awk '{print $5}' /proc/self/mountinfo";

/// `..` after a missing component: runc cleans the destination (Go's filepath.Clean)
/// before resolving it, so `/missing/../cleaned` is `/cleaned` and `/missing` is never made.
fn dot_dot_destination_is_cleaned_lexically(rt: &Runtime) {
    let env = Env::new(rt);
    let mut config = env.config("clean", &["sh", "-c", LIST_MOUNTS]);
    config["mounts"].as_array_mut().unwrap().push(json!(
        {"destination": "/missing/../cleaned/./t", "type": "tmpfs", "source": "tmpfs"}
    ));
    env.write_config(&config);
    let out = env.run(&["run", "clean"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l == "/cleaned/t"),
        "{}: no /cleaned/t in {text}",
        rt.name
    );
    assert!(!env.bundle.join("rootfs/missing").exists(), "{}", rt.name);
    env.assert_nothing_left("clean");
}

/// The image's /dev (no tmpfs over it) holds symlinks where default devices go, a spec
/// device sits below a symlinked directory, and a masked and a read-only path are
/// symlinks climbing out with "..": all of them resolve inside the rootfs.
fn device_and_path_symlinks_stay_inside_the_rootfs(rt: &Runtime) {
    let env = Env::new(rt);
    let rootfs = env.bundle.join("rootfs");
    let host_file = env.tmp.path().join("host_file");
    std::fs::write(&host_file, "host").unwrap();
    std::fs::set_permissions(&host_file, PermissionsExt::from_mode(0o600)).unwrap();
    let host_dir = env.tmp.path().join("host_dir");
    std::fs::create_dir(&host_dir).unwrap();
    let absent = env.tmp.path().join("absent");
    let up = "../../../../../../../../../..";
    // The same paths inside the rootfs, so every runtime has something to act on there.
    let inside = |p: &Path| rootfs.join(p.strip_prefix("/").unwrap());
    std::fs::create_dir_all(inside(&host_file).parent().unwrap()).unwrap();
    std::fs::write(inside(&host_file), "inside").unwrap();
    std::fs::create_dir_all(inside(&host_dir)).unwrap();
    symlink(&host_file, rootfs.join("dev/full")).unwrap();
    symlink(format!("{up}{}", absent.display()), rootfs.join("dev/zero")).unwrap();
    symlink(&host_dir, rootfs.join("devlink")).unwrap();
    symlink(
        format!("{up}{}", host_file.display()),
        rootfs.join("mask_link"),
    )
    .unwrap();
    symlink(
        format!("{up}{}", host_dir.display()),
        rootfs.join("ro_link"),
    )
    .unwrap();

    let script = "cat /mask_link; echo; touch /ro_link/x 2>/dev/null && echo writable || echo ro; \
                  test -c /devlink/mynull && echo node";
    let mut config = env.config("devsym", &["sh", "-c", script]);
    config["root"]["readonly"] = json!(false);
    config["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["destination"] != "/dev");
    config["linux"]["devices"] = json!([
        {"path": "/devlink/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 438}
    ]);
    config["linux"]["maskedPaths"] = json!(["/mask_link"]);
    config["linux"]["readonlyPaths"] = json!(["/ro_link"]);
    env.write_config(&config);
    let out = env.run(&["run", "devsym"]);

    // The host first, whatever the outcome.
    assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "host");
    let meta = std::fs::symlink_metadata(&host_file).unwrap();
    assert!(meta.is_file() && meta.permissions().mode() & 0o7777 == 0o600);
    assert!(
        !absent.exists(),
        "{}: created {}",
        rt.name,
        absent.display()
    );
    assert_eq!(
        std::fs::read_dir(&host_dir).unwrap().count(),
        0,
        "{}",
        rt.name
    );
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_mounts.contains(env.tmp.path().to_str().unwrap()));

    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, ["", "ro", "node"], "{}: {}", rt.name, stderr(&out));
    env.assert_nothing_left("devsym");
}

/// berth-lowrt only: runc 1.1 resolves these by path. A masked path through a magic link
/// (/proc/self/root) is refused by name rather than followed, and masking refuses a
/// /dev/null that is not the null device (runc 1.2.8's CVE-2025-31133 check).
#[test]
fn masking_refuses_magic_links_and_a_fake_dev_null() {
    if skip_unless_root("masking_refuses_magic_links_and_a_fake_dev_null") {
        return;
    }
    let env = Env::new(&berth());
    let rootfs = env.bundle.join("rootfs");
    symlink("/proc/self/root/etc/secret", rootfs.join("magic")).unwrap();
    let mut config = env.config("magic", &["true"]);
    config["linux"]["maskedPaths"] = json!(["/magic"]);
    env.write_config(&config);
    let out = env.run(&["run", "magic"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/magic"), "{}", stderr(&out));
    env.assert_nothing_left("magic");

    std::fs::remove_file(rootfs.join("magic")).unwrap();
    std::fs::write(rootfs.join("dev/null"), "").unwrap();
    let mut config = env.config("fakenull", &["true"]);
    config["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["destination"] != "/dev");
    env.write_config(&config);
    let out = env.run(&["run", "fakenull"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("not the null device"), "{err}");
    env.assert_nothing_left("fakenull");
}
