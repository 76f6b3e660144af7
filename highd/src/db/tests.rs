use super::*;

#[test]
fn records_are_namespaced_and_survive_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path())?;
    db.update(|tx| -> Result<(), DbError> {
        tx.put(IMAGES, "a", "img1", &1u32)?;
        tx.put(IMAGES, "a", "img2", &2u32)?;
        tx.put(IMAGES, "b", "img1", &3u32)?;
        tx.put(IMAGES, "ab", "x", &4u32)?;
        Ok(())
    })?;
    assert_eq!(
        db.list::<u32>(IMAGES, "a")?,
        vec![("img1".to_string(), 1), ("img2".to_string(), 2)]
    );
    assert_eq!(db.get::<u32>(IMAGES, "b", "img1")?, Some(3));
    assert_eq!(db.get::<u32>(IMAGES, "b", "img2")?, None);
    assert_eq!(db.view(|tx| tx.namespaces(IMAGES))?, vec!["a", "ab", "b"]);
    drop(db);
    let db = Db::open(dir.path())?;
    assert_eq!(db.get::<u32>(IMAGES, "ab", "x")?, Some(4));
    // Tables never written read as empty.
    assert!(db.list::<u32>(LEASES, "a")?.is_empty());
    Ok(())
}

#[test]
fn failed_transaction_leaves_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path())?;
    let res = db.update(|tx| -> Result<(), StoreError> {
        tx.put(IMAGES, "a", "img", &1u32)?;
        Err(StoreError::not_found("image", "other"))
    });
    assert!(res.is_err());
    assert_eq!(db.get::<u32>(IMAGES, "a", "img")?, None);
    let ids = db.update(|tx| -> Result<_, DbError> { Ok((tx.next_id("s")?, tx.next_id("s")?)) })?;
    assert_eq!(ids, (1, 2));
    Ok(())
}

#[test]
fn custom_tables_share_the_database() -> anyhow::Result<()> {
    const CONTAINERS: Table = table("containers");
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path())?;
    db.update(|tx| tx.put(CONTAINERS, "ns", "c1", &"spec"))?;
    assert_eq!(
        db.get::<String>(CONTAINERS, "ns", "c1")?.as_deref(),
        Some("spec")
    );
    Ok(())
}

#[test]
fn status_codes_follow_containerd() {
    let s: tonic::Status = StoreError::SnapshotHasChildren { key: "k".into() }.into();
    assert_eq!(s.code(), tonic::Code::FailedPrecondition);
    assert!(s.message().contains("\"k\""));
    let s: tonic::Status = StoreError::not_found("image", "busybox").into();
    assert_eq!(s.code(), tonic::Code::NotFound);
}
