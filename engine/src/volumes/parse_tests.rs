use serde_json::json;

use super::*;

#[test]
fn binds_as_dockerd_parses_them() {
    let m = parse_bind("/host/dir/:/data:ro").unwrap();
    assert_eq!(m.kind, MountKind::Bind);
    assert_eq!(
        (m.source.as_str(), m.destination.as_str()),
        ("/host/dir", "/data")
    );
    assert!(!m.rw && m.create_source);
    assert_eq!(
        (m.mode.as_str(), m.propagation.as_str()),
        ("ro", "rprivate")
    );
    let m = parse_bind("/h:/d:rw,rshared,z").unwrap();
    assert_eq!(m.propagation, "rshared");
    let v = parse_bind("myvol:/data").unwrap();
    assert_eq!(v.kind, MountKind::Volume);
    assert_eq!((v.name.as_str(), v.mode.as_str()), ("myvol", "z"));
    assert!(v.rw && v.copy_data && !v.anonymous);
    assert!(!parse_bind("myvol:/data:nocopy,ro").unwrap().copy_data);
    for (raw, msg) in [
        ("/a:/b:c:d", "invalid volume specification: '/a:/b:c:d'"),
        ("/a:ro", "invalid volume specification: '/a:ro'"),
        ("/a:/b:xx", "invalid mode: xx"),
        ("/a:/b:ro,rw", "invalid mode: ro,rw"),
        ("/a:/b:nocopy", "invalid mode: nocopy"),
        ("vol:/b:rshared", "invalid mode: rshared"),
        (
            "/a:rel",
            "invalid volume specification: '/a:rel': invalid mount config for type \"bind\": invalid mount path: 'rel' mount path must be absolute",
        ),
        (
            "/a:/",
            "invalid volume specification: '/a:/': invalid mount config for type \"bind\": invalid specification: destination can't be '/'",
        ),
    ] {
        assert_eq!(parse_bind(raw).unwrap_err().to_string(), msg, "{raw}");
    }
}

#[test]
fn mounts_and_tmpfs() {
    let got = container_mounts(
        &["/img".into(), "/data".into()],
        &["/anon".into()],
        &["vol:/data".into()],
        &[
            json!({"Type": "bind", "Source": "/src", "Target": "/b", "ReadOnly": true,
                   "BindOptions": {"Propagation": "rslave"}}),
            json!({"Type": "volume", "Target": "/v", "VolumeOptions": {"NoCopy": true,
                   "DriverConfig": {"Name": "", "Options": {"type": "tmpfs", "device": "tmpfs"}}}}),
            json!({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 0o1770}}),
        ],
        &[("/x".to_string(), "size=64m,exec".to_string())].into(),
    )
    .unwrap();
    let dsts: Vec<&str> = got.iter().map(|m| m.destination.as_str()).collect();
    assert_eq!(dsts, ["/img", "/anon", "/data", "/b", "/v", "/t", "/x"]);
    assert!(got[0].anonymous && got[0].copy_data);
    assert_eq!(got[2].name, "vol");
    assert!(!got[3].rw && !got[3].create_source);
    assert_eq!(got[3].propagation, "rslave");
    assert!(got[4].anonymous && !got[4].copy_data);
    assert_eq!(got[4].volume_options["type"], "tmpfs");
    assert_eq!(got[5].tmpfs_options, ["size=1m", "mode=1770"]);
    assert_eq!(got[6].tmpfs_options, ["size=64m", "exec"]);
    assert_eq!(
        got[3].inspect(),
        json!({"Type": "bind", "Source": "/src", "Destination": "/b", "Mode": "",
               "RW": false, "Propagation": "rslave"})
    );
    assert_eq!(got[2].inspect()["Driver"], "local");
}

#[test]
fn bad_mounts() {
    let one = |m: serde_json::Value| {
        container_mounts(&[], &[], &[], &[m], &Default::default())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        one(json!({"Type": "bind", "Source": "rel", "Target": "/b"})),
        "invalid mount config for type \"bind\": invalid mount path: 'rel' mount path must be absolute"
    );
    assert_eq!(
        one(json!({"Type": "bind", "Target": "/b"})),
        "invalid mount config for type \"bind\": field Source must not be empty"
    );
    assert_eq!(
        one(json!({"Type": "tmpfs", "Source": "x", "Target": "/b"})),
        "invalid mount config for type \"tmpfs\": field Source must not be specified"
    );
    assert_eq!(
        one(json!({"Type": "volume", "Target": "/b", "BindOptions": {}})),
        "invalid mount config for type \"volume\": field BindOptions must not be specified"
    );
    assert_eq!(
        one(json!({"Type": "npipe", "Target": "/b"})),
        "invalid mount config for type \"npipe\": mount type unknown"
    );
    let dup = container_mounts(
        &[],
        &[],
        &["/a:/d".into(), "v:/d/".into()],
        &[],
        &Default::default(),
    );
    assert_eq!(dup.unwrap_err().to_string(), "Duplicate mount point: /d");
    let bad = container_mounts(&[], &[], &[], &[], &[("/t".into(), "bogus".into())].into());
    assert_eq!(
        bad.unwrap_err().to_string(),
        "invalid tmpfs option \"bogus\""
    );
}
