use super::*;
use crate::db::Db;
use sha2::{Digest, Sha256};

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn store() -> anyhow::Result<(tempfile::TempDir, ContentStore)> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path())?;
    let cs = ContentStore::open(dir.path(), db)?;
    Ok((dir, cs))
}

#[test]
fn write_verify_read_and_share_across_namespaces() -> anyhow::Result<()> {
    let (dir, cs) = store()?;
    let data = b"hello berth content";
    let dgst = digest_of(data);
    let mut w = cs.writer("ns1", "ref1", data.len() as u64, &dgst)?;
    w.write_at(0, &data[..5])?;
    w.write_at(5, &data[5..])?;
    assert_eq!(w.commit(0, "", [("a".into(), "b".into())].into())?, dgst);
    let blob = dir.path().join("content/blobs/sha256").join(&dgst[7..]);
    assert_eq!(std::fs::read(&blob)?, data);
    assert_eq!(cs.read_at("ns1", &dgst, 6, 5)?, b"berth");
    assert_eq!(cs.read_at("ns1", &dgst, 0, 0)?, data);
    assert_eq!(
        cs.info("ns1", &dgst)?.labels.get("a").map(String::as_str),
        Some("b")
    );
    // Another namespace does not see it until it writes it too; then the blob is shared.
    assert_eq!(
        cs.info("ns2", &dgst).map_err(|e| e.code()),
        Err(tonic::Code::NotFound)
    );
    let mut w = cs.writer("ns2", "ref1", 0, "")?;
    w.write_at(0, data)?;
    assert_eq!(w.commit(data.len() as u64, &dgst, BTreeMap::new())?, dgst);
    // Opening a writer for content the namespace already has is AlreadyExists.
    let err = cs
        .writer("ns1", "again", 0, &dgst)
        .map(|_| ())
        .map_err(|e| e.code());
    assert_eq!(err, Err(tonic::Code::AlreadyExists));
    let mut w = cs.writer("ns1", "again", 0, "")?;
    w.write_at(0, data)?;
    let err = w.commit(0, "", BTreeMap::new()).map_err(|e| e.code());
    assert_eq!(err, Err(tonic::Code::AlreadyExists));
    assert!(cs.list_statuses("ns1", &Filter::default())?.is_empty());
    // Deleting from one namespace keeps the blob for the other.
    cs.delete("ns1", &dgst)?;
    assert!(blob.exists());
    cs.delete("ns2", &dgst)?;
    assert!(!blob.exists());
    Ok(())
}

#[test]
fn resume_after_reopen_and_restart_from_zero() -> anyhow::Result<()> {
    let (dir, cs) = store()?;
    let data = b"0123456789abcdef";
    let dgst = digest_of(data);
    {
        let mut w = cs.writer("ns", "layer", 16, &dgst)?;
        w.write_at(0, &data[..10])?;
        // A second writer on the same ref is refused while the first is open.
        let err = cs
            .writer("ns", "layer", 16, &dgst)
            .map(|_| ())
            .map_err(|e| e.code());
        assert_eq!(err, Err(tonic::Code::Unavailable));
    }
    // A restarted daemon (new store on the same root) resumes at the recorded offset.
    let cs = ContentStore::open(dir.path(), cs.db().clone())?;
    let st = cs.status("ns", "layer")?;
    assert_eq!(
        (st.offset, st.total, st.expected.as_str()),
        (10, 16, dgst.as_str())
    );
    let mut w = cs.writer("ns", "layer", 0, "")?;
    assert_eq!(w.offset(), 10);
    let err = w.write_at(3, b"x").map_err(|e| e.code());
    assert_eq!(err, Err(tonic::Code::OutOfRange));
    w.write_at(0, b"junk")?;
    assert_eq!(w.offset(), 4);
    w.write_at(0, &data[..10])?;
    w.write_at(10, &data[10..])?;
    assert_eq!(w.commit(0, "", BTreeMap::new())?, dgst);
    Ok(())
}

#[test]
fn mismatch_and_abort_clean_the_ingest() -> anyhow::Result<()> {
    let (dir, cs) = store()?;
    let expected = digest_of(b"right");
    let mut w = cs.writer("ns", "r", 0, &expected)?;
    w.write_at(0, b"wrong")?;
    let err = w.commit(0, "", BTreeMap::new()).map_err(|e| e.to_string());
    let msg = err.err().unwrap_or_default();
    assert!(
        msg.contains(&expected) && msg.contains(&digest_of(b"wrong")),
        "{msg}"
    );
    let ingest = dir.path().join("content/ingest");
    assert_eq!(std::fs::read_dir(&ingest)?.count(), 0);
    assert!(cs.blobs_on_disk()?.is_empty());

    let mut w = cs.writer("ns", "r2", 0, "")?;
    w.write_at(0, b"short")?;
    let err = w.commit(99, "", BTreeMap::new()).map_err(|e| e.code());
    assert_eq!(err, Err(tonic::Code::FailedPrecondition));
    assert_eq!(cs.list_statuses("ns", &Filter::default())?.len(), 1);
    assert!(cs.list_statuses("other", &Filter::default())?.is_empty());
    cs.abort("ns", "r2")?;
    assert_eq!(std::fs::read_dir(&ingest)?.count(), 0);
    assert_eq!(
        cs.abort("ns", "r2").map_err(|e| e.code()),
        Err(tonic::Code::NotFound)
    );
    Ok(())
}

#[test]
fn labels_update_with_field_paths_and_filters() -> anyhow::Result<()> {
    let (_dir, cs) = store()?;
    let mut w = cs.writer("ns", "r", 0, "")?;
    w.write_at(0, b"x")?;
    let d = w.commit(
        0,
        "",
        [("keep".into(), "1".into()), ("drop".into(), "2".into())].into(),
    )?;
    let mut info = cs.info("ns", &d)?;
    info.labels = [("new".to_string(), "3".to_string())].into();
    let out = cs.update("ns", &info, &["labels.new".into(), "labels.drop".into()])?;
    let keys: Vec<_> = out.labels.keys().map(String::as_str).collect();
    assert_eq!(keys, ["keep", "new"]);
    assert!(cs.update("ns", &info, &["size".into()]).is_err());
    assert_eq!(
        cs.list("ns", &Filter::parse(&["labels.new==3".into()])?)?
            .len(),
        1
    );
    assert!(cs
        .list("ns", &Filter::parse(&["labels.drop".into()])?)?
        .is_empty());
    assert!(cs.info("ns", "sha256:bad").is_err());
    Ok(())
}

#[test]
fn leftovers_of_a_crash_are_removed_at_open() -> anyhow::Result<()> {
    let (dir, cs) = store()?;
    let mut w = cs.writer("ns", "kept", 0, "")?;
    w.write_at(0, b"resumable")?;
    drop(w);
    let orphan = digest_of(b"renamed in, never recorded");
    std::fs::write(cs.blob_path(&orphan)?, b"renamed in, never recorded")?;
    let half = dir.path().join("content/ingest/half-created");
    std::fs::create_dir_all(&half)?;
    let cs = ContentStore::open(dir.path(), cs.db().clone())?;
    assert!(!cs.blob_path(&orphan)?.exists() && !half.exists());
    assert_eq!(
        cs.status("ns", "kept")?.offset,
        9,
        "resumable ingests survive"
    );
    Ok(())
}

#[test]
fn stale_ingests_go_unless_a_writer_holds_them() -> anyhow::Result<()> {
    let (_dir, cs) = store()?;
    let day = std::time::Duration::from_secs(24 * 3600);
    let old = std::time::SystemTime::now() - 2 * day;
    for reference in ["abandoned", "held", "fresh"] {
        let mut w = cs.writer("ns", reference, 0, "")?;
        w.write_at(0, b"partial")?;
    }
    for reference in ["abandoned", "held"] {
        let data = cs.ingest_dir("ns", reference).join("data");
        std::fs::File::options()
            .write(true)
            .open(data)?
            .set_modified(old)?;
    }
    let _held = cs.writer("ns", "held", 0, "")?;
    assert_eq!(cs.remove_stale_ingests(day)?, 1);
    assert_eq!(
        cs.status("ns", "abandoned").map_err(|e| e.code()).err(),
        Some(tonic::Code::NotFound)
    );
    assert_eq!(cs.status("ns", "held")?.offset, 7);
    assert_eq!(cs.status("ns", "fresh")?.offset, 7);
    Ok(())
}
