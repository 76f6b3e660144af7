use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::content::Descriptor;
use crate::db::filter::Filter;
use crate::diff::Applier;
use crate::snapshots::Mode;

struct Env {
    _dir: tempfile::TempDir,
    db: Db,
    content: ContentStore,
    snaps: Snapshotter,
    gc: Gc,
}

fn env() -> anyhow::Result<Env> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path())?;
    let content = ContentStore::open(dir.path(), db.clone())?;
    let snaps = Snapshotter::open(
        dir.path(),
        db.clone(),
        Some(Mode::Overlay { index_off: false }),
    )?;
    let gc = Gc::new(db.clone(), content.clone(), snaps.clone()).with_grace(Duration::ZERO);
    Ok(Env {
        _dir: dir,
        db,
        content,
        snaps,
        gc,
    })
}

fn put(
    env: &Env,
    ns: &str,
    data: &[u8],
    labels: BTreeMap<String, String>,
) -> anyhow::Result<String> {
    let d = format!("sha256:{}", hex::encode(Sha256::digest(data)));
    let mut w = env.content.writer(ns, &d, 0, "")?;
    w.write_at(0, data)?;
    Ok(w.commit(0, &d, labels)?)
}

fn layer() -> anyhow::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "hello", &b"hi"[..])?;
    Ok(b.into_inner()?)
}

fn snapshot_names(env: &Env) -> anyhow::Result<Vec<String>> {
    Ok(env
        .snaps
        .list("ns", &Filter::default())?
        .into_iter()
        .map(|i| i.name)
        .collect())
}

struct Pinned;
impl ContainerRefs for Pinned {
    fn snapshot_refs(&self, ns: &str) -> Result<Vec<(String, String)>, DbError> {
        Ok(if ns == "ns" {
            vec![
                ("overlayfs".into(), "pinned".into()),
                ("overlayfs".into(), "ctr".into()),
            ]
        } else {
            Vec::new()
        })
    }
}

#[test]
fn keeps_what_images_leases_and_containers_reach() -> anyhow::Result<()> {
    let env = env()?;
    let tar = layer()?;
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
    let l = put(&env, "ns", &tar, BTreeMap::new())?;
    let config = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#);
    let c = put(&env, "ns", config.as_bytes(), BTreeMap::new())?;
    let manifest = format!(
        r#"{{"schemaVersion":2,"config":{{"digest":"{c}"}},"layers":[{{"digest":"{l}"}}]}}"#
    );
    let m = put(&env, "ns", manifest.as_bytes(), BTreeMap::new())?;
    let target = Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: m.clone(),
        size: manifest.len() as i64,
        annotations: BTreeMap::new(),
    };
    crate::images::create(&env.db, "ns", "img", target, BTreeMap::new())?;
    // Unpack the image the way the engine does: the layer's snapshot is named by chain ID.
    let mounts = env.snaps.prepare("ns", "extract", "", BTreeMap::new())?;
    let desc = Descriptor {
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        digest: l.clone(),
        size: tar.len() as i64,
        annotations: BTreeMap::new(),
    };
    Applier::new(env.content.clone()).apply("ns", &desc, &mounts)?;
    env.snaps
        .commit("ns", &diff_id, "extract", BTreeMap::new())?;
    env.snaps.prepare("ns", "ctr", &diff_id, BTreeMap::new())?;
    // Garbage, and things protected by other means.
    let g = put(&env, "ns", b"garbage", BTreeMap::new())?;
    let root = || [(ROOT_LABEL.to_string(), "x".to_string())].into();
    put(&env, "other", b"garbage", root())?;
    let leased = put(&env, "ns", b"leased", BTreeMap::new())?;
    let labelled = put(&env, "ns", b"root", root())?;
    // A lease id as ctr makes them (`<nanos>-<base64url>`): not a containerd identifier.
    let lease = "483955030--_q8";
    crate::leases::create(&env.db, "ns", lease, BTreeMap::new())?;
    let empty = crate::leases::create(&env.db, "ns", "", BTreeMap::new()).unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument, "{empty}");
    let res = crate::leases::Resource {
        id: leased.clone(),
        kind: "content".into(),
    };
    crate::leases::change_resource(&env.db, "ns", lease, res, true)?;
    for (key, parent) in [("orphan", ""), ("orphan-child", "orphan-c"), ("pinned", "")] {
        let active = format!("{key}-a");
        env.snaps.prepare(
            "ns",
            &active,
            if parent.is_empty() { "" } else { "orphan" },
            BTreeMap::new(),
        )?;
        env.snaps.commit("ns", key, &active, BTreeMap::new())?;
    }
    env.gc.set_container_refs(Arc::new(Pinned));

    let r = env.gc.collect()?;
    assert_eq!((r.content, r.snapshots, r.blobs), (1, 2, 0), "{r:?}");
    assert!(env.content.info("ns", &g).is_err());
    assert!(
        env.content.blob_path(&g)?.exists(),
        "still recorded in namespace other"
    );
    for d in [&l, &c, &m, &leased, &labelled] {
        env.content.info("ns", d)?;
    }
    assert_eq!(
        snapshot_names(&env)?,
        ["ctr".to_string(), "pinned".into(), diff_id.clone()]
    );

    crate::images::delete(&env.db, "ns", "img", None)?;
    crate::content::ContentStore::delete(&env.content, "other", &g)?;
    let r = env.gc.collect()?;
    assert_eq!((r.content, r.blobs), (3, 3), "{r:?}");
    assert!(!env.content.blob_path(&m)?.exists() && !env.content.blob_path(&g)?.exists());
    // The container's snapshot still holds its parent layer.
    assert!(snapshot_names(&env)?.contains(&diff_id));
    // Once the container's snapshot goes, so does the layer.
    env.snaps.remove("ns", "ctr")?;
    env.gc.collect()?;
    assert_eq!(snapshot_names(&env)?, ["pinned"]);
    crate::leases::delete(&env.db, "ns", lease)?;
    assert_eq!(env.gc.collect()?.content, 1);
    Ok(())
}

#[test]
fn chain_ids_follow_the_oci_definition() {
    let ids = chain_ids(&["sha256:a".into(), "sha256:b".into()]);
    let second = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(b"sha256:a sha256:b"))
    );
    assert_eq!(ids, ["sha256:a".to_string(), second]);
}

#[test]
fn young_unreferenced_objects_wait_for_their_grace() -> anyhow::Result<()> {
    let mut env = env()?;
    env.gc = Gc::new(env.db.clone(), env.content.clone(), env.snaps.clone());
    let d = put(&env, "ns", b"fresh", BTreeMap::new())?;
    env.snaps.prepare("ns", "a", "", BTreeMap::new())?;
    env.snaps.commit("ns", "fresh", "a", BTreeMap::new())?;
    // An unpack that crashed midway leaves an active snapshot nobody references.
    env.snaps
        .prepare("ns", "stale-extract", "fresh", BTreeMap::new())?;
    let r = env.gc.collect()?;
    assert_eq!((r.content, r.snapshots, r.deferred), (0, 0, 3), "{r:?}");
    env.content.info("ns", &d)?;
    env.gc =
        Gc::new(env.db.clone(), env.content.clone(), env.snaps.clone()).with_grace(Duration::ZERO);
    let r = env.gc.collect()?;
    assert_eq!((r.content, r.snapshots, r.deferred), (1, 2, 0), "{r:?}");
    Ok(())
}

#[test]
fn expired_leases_are_removed() -> anyhow::Result<()> {
    let env = env()?;
    let past = [(EXPIRE_LABEL.to_string(), "2000-01-01T00:00:00Z".to_string())].into();
    crate::leases::create(&env.db, "ns", "old", past)?;
    crate::leases::create(&env.db, "ns", "new", BTreeMap::new())?;
    assert_eq!(env.gc.collect()?.leases, 1);
    assert_eq!(
        crate::leases::list(&env.db, "ns", &Filter::default())?.len(),
        1
    );
    Ok(())
}
