//! Idmapped bind mounts (`idmap`/`ridmap`, a mount's uidMappings/gidMappings). berth-lowrt
//! only: runc 1.1 has no idmapped mounts (they came in 1.2).

use std::os::unix::fs::MetadataExt;

use serde_json::json;

use super::harness::{berth, skip_unless_root, stderr, stdout, Env};

fn userns_config(env: &Env, id: &str, script: &str) -> serde_json::Value {
    let mut config = env.config(id, &["sh", "-c", script]);
    config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    config["linux"]["uidMappings"] = map.clone();
    config["linux"]["gidMappings"] = map;
    config
}

#[test]
fn idmapped_mounts_show_mapped_owners() {
    if skip_unless_root("idmapped_mounts_show_mapped_owners") {
        return;
    }
    let env = Env::new(&berth());
    let src = env.tmp.path().join("idsrc");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("root_file"), "r").unwrap();
    std::fs::write(src.join("user_file"), "u").unwrap();
    std::os::unix::fs::chown(src.join("user_file"), Some(1000), Some(1000)).unwrap();
    // The mapped root cannot create them in the host-owned rootfs.
    for d in ["own", "explicit", "plain"] {
        std::fs::create_dir(env.bundle.join("rootfs").join(d)).unwrap();
    }

    let script = "stat -c %u:%g /own/root_file /own/user_file /explicit/root_file \
                  /explicit/user_file /plain/root_file; touch /own/new && echo wrote";
    let mut config = userns_config(&env, "idm", script);
    let narrow = json!([{"containerID": 0, "hostID": 101000, "size": 10}]);
    config["mounts"].as_array_mut().unwrap().extend([
        // The container's own mappings: on-disk 0 is the container's root.
        json!({"destination": "/own", "type": "bind", "source": src, "options": ["bind", "idmap"]}),
        // The mount's: on-disk 0 is host uid 101000, which is 1000 in the container;
        // on-disk 1000 is outside the mapping (overflow id).
        json!({"destination": "/explicit", "type": "bind", "source": src, "options": ["rbind", "ro"],
               "uidMappings": narrow, "gidMappings": narrow}),
        json!({"destination": "/plain", "type": "bind", "source": src, "options": ["bind"]}),
    ]);
    env.write_config(&config);
    let out = env.run(&["run", "idm"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "0:0",
            "1000:1000",
            "1000:1000",
            "65534:65534",
            "65534:65534",
            "wrote"
        ],
        "{}",
        stderr(&out)
    );
    // Written by the container's root through the idmapped mount: on-disk owner 0.
    let meta = std::fs::metadata(src.join("new")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    env.assert_nothing_left("idm");

    // Without a user namespace the mount's own mappings are needed; the host sees them.
    let mut config = env.config("idm2", &["stat", "-c", "%u", "/m/root_file"]);
    let one = json!([{"containerID": 0, "hostID": 1234, "size": 1}]);
    config["mounts"].as_array_mut().unwrap().push(json!(
        {"destination": "/m", "type": "bind", "source": src, "options": ["bind"],
         "uidMappings": one, "gidMappings": one}
    ));
    env.write_config(&config);
    let out = env.run(&["run", "idm2"]);
    assert_eq!(stdout(&out), "1234\n", "{}", stderr(&out));
    env.assert_nothing_left("idm2");
}

#[test]
fn bad_idmapped_mounts_are_refused_by_name() {
    if skip_unless_root("bad_idmapped_mounts_are_refused_by_name") {
        return;
    }
    let env = Env::new(&berth());
    for (id, mount, want) in [
        (
            "idtmpfs",
            json!({"destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"]}),
            "mount /t: idmapped mounts are only supported for bind mounts",
        ),
        (
            "idnomap",
            json!({"destination": "/b", "type": "bind", "source": "/tmp", "options": ["bind", "idmap"]}),
            "mount /b: an idmapped mount needs uidMappings and gidMappings",
        ),
        (
            "idhalf",
            json!({"destination": "/b", "type": "bind", "source": "/tmp", "options": ["bind"],
                   "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}),
            "mount /b: uidMappings and gidMappings must be given together",
        ),
    ] {
        let mut config = env.config(id, &["true"]);
        config["mounts"].as_array_mut().unwrap().push(mount);
        env.write_config(&config);
        let out = env.run(&["run", id]);
        assert!(!out.status.success(), "{id}");
        assert!(stderr(&out).contains(want), "{id}: {}", stderr(&out));
        env.assert_nothing_left(id);
    }
    let out = env.run(&["features"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["linux"]["mountExtensions"]["idmap"]["enabled"], true);
    let opts = doc["mountOptions"].as_array().unwrap();
    assert!(opts.contains(&json!("idmap")) && opts.contains(&json!("ridmap")));
}
