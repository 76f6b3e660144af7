//! A user namespace joined by path together with other namespaces joined by path: the
//! ones the joined user namespace owns, and (berth) one the host's owns, which must be
//! entered before the user namespace (runc 1.2's order); and a path of the wrong type.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::harness::{both_runtimes, poll_until, stderr, stdout, Env, Runtime};

both_runtimes!(
    joined_user_namespace_with_its_net_and_uts,
    joined_user_namespace_with_a_host_owned_net,
    namespace_path_of_the_wrong_type_is_named
);

/// A process holding new namespaces (`unshare --<flag>…`), killed on drop. With a user
/// namespace, its maps (0 → 100000, 65536) are written first; `setup` then runs in all
/// its namespaces through nsenter, as root of its user namespace (the holder itself lost
/// its capabilities when it exec'd there still unmapped).
struct Holder {
    child: Child,
}

impl Holder {
    fn start(flags: &[&str], setup: &str) -> Holder {
        let child = Command::new("unshare")
            .args(flags)
            .args(["/bin/busybox", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let holder = Holder { child };
        let kind = match flags[0] {
            "--user" => "user",
            "--net" => "net",
            _ => "uts",
        };
        let own = std::fs::read_link(format!("/proc/self/ns/{kind}")).unwrap();
        poll_until(
            Duration::from_secs(10),
            || std::fs::read_link(holder.ns(kind)).is_ok_and(|l| l != own),
            "the holder to enter its namespaces",
        );
        let pid = holder.child.id();
        if flags.contains(&"--user") {
            for file in ["uid_map", "gid_map"] {
                std::fs::write(format!("/proc/{pid}/{file}"), "0 100000 65536").unwrap();
            }
        }
        let out = Command::new("nsenter")
            .args(["--target", &pid.to_string(), "--all"])
            .args(["/bin/busybox", "sh", "-c", setup])
            .output()
            .unwrap();
        assert!(out.status.success(), "holder setup: {}", stderr(&out));
        holder
    }

    fn ns(&self, kind: &str) -> String {
        format!("/proc/{}/ns/{kind}", self.child.id())
    }

    fn link(&self, kind: &str) -> String {
        std::fs::read_link(self.ns(kind))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
}

/// A namespace file bind-mounted onto a file of the test's temp dir, as `ip netns` and
/// container engines keep them (its fd's link then reads this path); unmounted on drop.
struct BoundNs(std::path::PathBuf);

impl BoundNs {
    fn new(ns: &str, at: std::path::PathBuf) -> BoundNs {
        std::fs::write(&at, "").unwrap();
        nix::mount::mount(
            Some(ns),
            &at,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        BoundNs(at)
    }

    fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for BoundNs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SCRIPT: &str = "readlink /proc/self/ns/user; readlink /proc/self/ns/net; \
                      readlink /proc/self/ns/uts; hostname; \
                      ip -o link show lo | grep -o 'mtu [0-9]*'; id -u";

/// `config` joining `joins` (type, path) by path instead of making those namespaces; no
/// hostname (it would rename the joined UTS namespace), runc 1.1's mappings spelled out.
fn joining_config(env: &Env, id: &str, joins: &[(&str, String)]) -> serde_json::Value {
    let mut config = env.config(id, &["sh", "-c", SCRIPT]);
    config.as_object_mut().unwrap().remove("hostname");
    let list = config["linux"]["namespaces"].as_array_mut().unwrap();
    list.retain(|n| !joins.iter().any(|(t, _)| n["type"] == *t));
    for (typ, path) in joins {
        list.push(serde_json::json!({"type": typ, "path": path}));
    }
    if joins.iter().any(|(t, _)| *t == "user") {
        let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        config["linux"]["uidMappings"] = map.clone();
        config["linux"]["gidMappings"] = map;
    }
    config
}

/// The pod case: a holder with its own user, network and UTS namespaces (the network and
/// UTS ones owned by its user namespace), set up from inside (hostname, lo's MTU); the
/// container joins all three by path and sees the holder's. The network namespace is
/// given as a bind mount of its file, as `ip netns` and engines keep them.
fn joined_user_namespace_with_its_net_and_uts(rt: &Runtime) {
    let env = Env::new(rt);
    let holder = Holder::start(
        &["--user", "--net", "--uts"],
        "hostname holder-uts && ip link set lo mtu 1234",
    );
    let netns = BoundNs::new(&holder.ns("net"), env.tmp.path().join("netns"));
    let config = joining_config(
        &env,
        "ujoin3",
        &[
            ("user", holder.ns("user")),
            ("network", netns.path()),
            ("uts", holder.ns("uts")),
        ],
    );
    env.write_config(&config);
    let out = env.run(&["run", "ujoin3"]);
    let want = expected(&holder, &holder, &holder, 1234);
    drop((netns, holder));
    assert_sees(rt, &out, &want);
    env.assert_nothing_left("ujoin3");
}

/// What SCRIPT prints in a container that joined these holders' namespaces.
fn expected(user: &Holder, net: &Holder, uts: &Holder, mtu: u32) -> Vec<String> {
    vec![
        user.link("user"),
        net.link("net"),
        uts.link("uts"),
        "holder-uts".into(),
        format!("mtu {mtu}"),
        "0".into(),
    ]
}

fn assert_sees(rt: &Runtime, out: &std::process::Output, want: &[String]) {
    assert_eq!(
        stdout(out).lines().collect::<Vec<_>>(),
        want,
        "{}: {}",
        rt.name,
        stderr(out)
    );
}

/// A joined user namespace with a network namespace the host's user namespace owns (held
/// by a second `unshare --net`): from inside the joined user namespace it cannot be
/// entered, so it is entered before (runc 1.2's first pass); the UTS namespace of the
/// first holder still comes from inside. runc 1.1 joins the user namespace first and
/// fails ("operation not permitted").
fn joined_user_namespace_with_a_host_owned_net(rt: &Runtime) {
    let env = Env::new(rt);
    let pod = Holder::start(&["--user", "--uts"], "hostname holder-uts");
    let net = Holder::start(&["--net"], "ip link set lo mtu 4321");
    let mut config = joining_config(
        &env,
        "ujoinh",
        &[
            ("user", pod.ns("user")),
            ("network", net.ns("net")),
            ("uts", pod.ns("uts")),
        ],
    );
    // sysfs can only be mounted by the owner of the network namespace.
    config["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| !["sysfs", "cgroup"].contains(&m["type"].as_str().unwrap()));
    env.write_config(&config);
    let out = env.run(&["run", "ujoinh"]);
    let want = expected(&pod, &net, &pod, 4321);
    drop((pod, net));
    if rt.name == "runc" {
        assert!(
            !out.status.success(),
            "runc 1.1 now joins host-owned namespaces"
        );
        env.assert_nothing_left("ujoinh");
        return;
    }
    assert_sees(rt, &out, &want);
    env.assert_nothing_left("ujoinh");
}

/// `{"type": "network", "path": <a UTS namespace>}` (its /proc file, and a bind mount of
/// it) and a path that is no namespace at all: refused with the path and both types
/// named, nothing left.
fn namespace_path_of_the_wrong_type_is_named(rt: &Runtime) {
    let env = Env::new(rt);
    let holder = Holder::start(&["--uts"], "true");
    let bound = BoundNs::new(&holder.ns("uts"), env.tmp.path().join("utsns"));
    for (id, path, needle) in [
        (
            "wrongns",
            holder.ns("uts"),
            "is a uts namespace, not a network namespace",
        ),
        (
            "wrongbound",
            bound.path(),
            "is a uts namespace, not a network namespace",
        ),
        ("notns", "/etc/hostname".into(), "is not a namespace"),
    ] {
        let config = joining_config(&env, id, &[("network", path.clone())]);
        env.write_config(&config);
        let out = env.run(&["run", id]);
        assert!(!out.status.success(), "{}: {id} ran", rt.name);
        let err = stderr(&out);
        if rt.name == "runc" {
            // runc 1.1: "... failed to setns into net namespace: invalid argument" or
            // similar, without the types.
            assert!(err.contains("namespace"), "runc: {err}");
        } else {
            assert!(err.contains(&path) && err.contains(needle), "{err}");
        }
        env.assert_nothing_left(id);
    }
}
