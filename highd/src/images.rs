//! Images: containerd's images service (name → target descriptor and labels).

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_proto::containerd::events as ev;
use berth_proto::containerd::services::images::v1 as pb;
use berth_proto::containerd::types::Descriptor as PbDescriptor;
use chrono::{DateTime, Utc};
use pb::images_server::Images;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::content::{digest_hex, update_labels, Descriptor};
use crate::db::filter::{self, Filter};
use crate::db::{self, Db, StoreError, IMAGES};
use crate::gc::Gc;

/// The DB record of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub target: Descriptor,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An image as the service sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub record: ImageRecord,
}

impl filter::Adaptor for Image {
    fn field(&self, path: &[String]) -> Option<String> {
        let t = &self.record.target;
        match (
            path.first().map(String::as_str),
            path.get(1).map(String::as_str),
        ) {
            (Some("name"), _) => Some(self.name.clone()),
            (Some("target"), Some("digest")) => Some(t.digest.clone()),
            (Some("target"), Some("mediatype")) => Some(t.media_type.clone()),
            _ => filter::label(&self.record.labels, path),
        }
    }
}

fn validate(name: &str, target: &Descriptor) -> Result<(), StoreError> {
    if name.is_empty() {
        return Err(StoreError::invalid("image name", name, "must not be empty"));
    }
    if target.media_type.is_empty() {
        return Err(StoreError::invalid(
            "image target media type",
            name,
            "must not be empty",
        ));
    }
    digest_hex(&target.digest).map(drop)
}

pub fn create(
    db: &Db,
    ns: &str,
    name: &str,
    target: Descriptor,
    labels: BTreeMap<String, String>,
) -> Result<Image, StoreError> {
    validate(name, &target)?;
    let now = Utc::now();
    let record = ImageRecord {
        target,
        labels,
        created_at: now,
        updated_at: now,
    };
    db.update(|tx| {
        if tx.get::<ImageRecord>(IMAGES, ns, name)?.is_some() {
            return Err(StoreError::exists("image", name));
        }
        crate::namespaces::ensure(tx, ns)?;
        tx.put(IMAGES, ns, name, &record)?;
        Ok(())
    })?;
    Ok(Image {
        name: name.to_string(),
        record,
    })
}

pub fn get(db: &Db, ns: &str, name: &str) -> Result<Image, StoreError> {
    let record = db
        .get(IMAGES, ns, name)?
        .ok_or_else(|| StoreError::not_found("image", name))?;
    Ok(Image {
        name: name.to_string(),
        record,
    })
}

pub fn list(db: &Db, ns: &str, filter: &Filter) -> Result<Vec<Image>, StoreError> {
    Ok(db
        .list::<ImageRecord>(IMAGES, ns)?
        .into_iter()
        .map(|(name, record)| Image { name, record })
        .filter(|i| filter.matches(i))
        .collect())
}

/// containerd's image update: labels (whole or per key), target and annotations may change.
pub fn update(db: &Db, ns: &str, new: Image, paths: &[String]) -> Result<Image, StoreError> {
    db.update(|tx| {
        let mut r: ImageRecord = tx
            .get(IMAGES, ns, &new.name)?
            .ok_or_else(|| StoreError::not_found("image", &new.name))?;
        if paths.is_empty() {
            validate(&new.name, &new.record.target)?;
            r.target = new.record.target.clone();
            r.labels.clone_from(&new.record.labels);
        } else {
            update_labels(
                &mut r.labels,
                &new.record.labels,
                paths,
                &["target", "annotations"],
            )?;
            if paths.iter().any(|p| p == "target") {
                validate(&new.name, &new.record.target)?;
                r.target = new.record.target.clone();
            }
            if paths.iter().any(|p| p == "annotations") {
                r.target
                    .annotations
                    .clone_from(&new.record.target.annotations);
            }
        }
        r.updated_at = Utc::now();
        tx.put(IMAGES, ns, &new.name, &r)?;
        Ok(Image {
            name: new.name.clone(),
            record: r,
        })
    })
}

/// Deletes an image; with `target` set, only if it still points there (containerd's check).
pub fn delete(db: &Db, ns: &str, name: &str, target: Option<&str>) -> Result<(), StoreError> {
    db.update(|tx| {
        let r: ImageRecord = tx
            .get(IMAGES, ns, name)?
            .ok_or_else(|| StoreError::not_found("image", name))?;
        if let Some(t) = target.filter(|t| *t != r.target.digest) {
            return Err(StoreError::invalid(
                "image target",
                t,
                "image has a different target",
            ));
        }
        tx.delete(IMAGES, ns, name)?;
        Ok(())
    })
}

pub(crate) fn desc_from_pb(d: Option<PbDescriptor>) -> Descriptor {
    let d = d.unwrap_or_default();
    Descriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: d.annotations.into_iter().collect(),
    }
}

pub(crate) fn desc_to_pb(d: Descriptor) -> PbDescriptor {
    PbDescriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: d.annotations.into_iter().collect(),
    }
}

fn to_pb(i: Image) -> pb::Image {
    pb::Image {
        name: i.name,
        labels: i.record.labels.into_iter().collect(),
        target: Some(desc_to_pb(i.record.target)),
        created_at: Some(db::timestamp(i.record.created_at)),
        updated_at: Some(db::timestamp(i.record.updated_at)),
    }
}

fn from_pb(i: pb::Image) -> Image {
    Image {
        name: i.name,
        record: ImageRecord {
            target: desc_from_pb(i.target),
            labels: i.labels.into_iter().collect(),
            created_at: db::from_timestamp(i.created_at.as_ref()),
            updated_at: db::from_timestamp(i.updated_at.as_ref()),
        },
    }
}

/// `containerd.services.images.v1.Images`.
#[derive(Clone)]
pub struct ImagesService {
    db: Db,
    gc: Arc<Gc>,
    events: db::Publisher,
}

impl ImagesService {
    pub fn new(db: Db, gc: Arc<Gc>, events: db::Publisher) -> ImagesService {
        ImagesService { db, gc, events }
    }
}

fn image_labels(i: &Image) -> std::collections::HashMap<String, String> {
    i.record.labels.clone().into_iter().collect()
}

#[tonic::async_trait]
impl Images for ImagesService {
    async fn get(
        &self,
        req: Request<pb::GetImageRequest>,
    ) -> Result<Response<pb::GetImageResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let image = get(&self.db, &ns, &req.into_inner().name)?;
        Ok(Response::new(pb::GetImageResponse {
            image: Some(to_pb(image)),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let filter = Filter::parse(&req.into_inner().filters)?;
        let images = list(&self.db, &ns, &filter)?;
        Ok(Response::new(pb::ListImagesResponse {
            images: images.into_iter().map(to_pb).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<pb::CreateImageRequest>,
    ) -> Result<Response<pb::CreateImageResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let i = from_pb(req.into_inner().image.unwrap_or_default());
        let image = create(&self.db, &ns, &i.name, i.record.target, i.record.labels)?;
        let labels = image_labels(&image);
        self.events.emit(
            &ns,
            ev::ImageCreate {
                name: image.name.clone(),
                labels,
            },
        );
        Ok(Response::new(pb::CreateImageResponse {
            image: Some(to_pb(image)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateImageRequest>,
    ) -> Result<Response<pb::UpdateImageResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let req = req.into_inner();
        let i = from_pb(req.image.unwrap_or_default());
        let image = update(&self.db, &ns, i, &db::mask_paths(req.update_mask))?;
        let labels = image_labels(&image);
        self.events.emit(
            &ns,
            ev::ImageUpdate {
                name: image.name.clone(),
                labels,
            },
        );
        Ok(Response::new(pb::UpdateImageResponse {
            image: Some(to_pb(image)),
        }))
    }

    async fn delete(&self, req: Request<pb::DeleteImageRequest>) -> Result<Response<()>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let req = req.into_inner();
        let target = req.target.map(|t| t.digest);
        delete(&self.db, &ns, &req.name, target.as_deref())?;
        self.events.emit(
            &ns,
            ev::ImageDelete {
                name: req.name.clone(),
            },
        );
        self.gc.after_delete(req.sync).await?;
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(d: &str) -> Descriptor {
        Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: format!("sha256:{}", d.repeat(64)),
            size: 10,
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn create_get_update_list_delete() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(dir.path())?;
        let name = "docker.io/library/busybox:latest";
        create(&db, "ns", name, desc("a"), BTreeMap::new())?;
        let code = |r: Result<Image, StoreError>| r.map(|_| ()).map_err(|e| e.code());
        assert_eq!(
            code(create(&db, "ns", name, desc("a"), BTreeMap::new())),
            Err(tonic::Code::AlreadyExists)
        );
        assert_eq!(
            code(create(
                &db,
                "ns",
                "x",
                Descriptor::default(),
                BTreeMap::new()
            )),
            Err(tonic::Code::InvalidArgument)
        );
        assert_eq!(code(get(&db, "other", name)), Err(tonic::Code::NotFound));
        let mut new = get(&db, "ns", name)?;
        new.record.target = desc("b");
        new.record.labels.insert("l".into(), "v".into());
        let out = update(&db, "ns", new.clone(), &["labels".into()])?;
        assert_eq!(
            (out.record.target.digest, out.record.labels.len()),
            (desc("a").digest, 1)
        );
        let out = update(&db, "ns", new, &["target".into()])?;
        assert_eq!(out.record.target.digest, desc("b").digest);
        let f = Filter::parse(&[format!("target.digest=={}", desc("b").digest)])?;
        assert_eq!(list(&db, "ns", &f)?.len(), 1);
        assert!(delete(&db, "ns", name, Some(&desc("a").digest)).is_err());
        delete(&db, "ns", name, None)?;
        assert_eq!(
            delete(&db, "ns", name, None).map_err(|e| e.code()),
            Err(tonic::Code::NotFound)
        );
        Ok(())
    }
}
