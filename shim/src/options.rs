//! containerd's runc options (`containerd.runc.v1.Options`) in a Create request: the ones
//! that change how the init is created and what its pipes look like.
//!
//! The runtime binary, its root, `SystemdCgroup` and `ShimCgroup` are chosen before the
//! shim exists (highd resolves them and passes `start`'s flags), so Create does not look
//! at them again.

use berth_proto::containerd::runc::v1::Options;
use prost::Message;

use crate::error::TaskError;
use crate::stdio::IoOwner;

/// The message's full name; type URLs end with it (ctr sends it bare).
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";

/// What the shim itself does with the options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// The runtime's `create --no-pivot` (ctr `--no-pivot`).
    pub no_pivot_root: bool,
    /// The runtime's `create --no-new-keyring`.
    pub no_new_keyring: bool,
    /// Owner of the pipes every process of the task gets (containerd's `IoUid`/`IoGid`),
    /// so a process in a user namespace can reopen its own stdio.
    pub io_owner: Option<IoOwner>,
}

impl CreateOptions {
    /// Decodes a Create request's options; another runtime's options type (e.g. ctr's
    /// `runtimeoptions.v1.Options`) means nothing to this shim and is ignored.
    pub fn decode(any: Option<&prost_types::Any>) -> Result<CreateOptions, TaskError> {
        let Some(any) = any else {
            return Ok(CreateOptions::default());
        };
        if !any.type_url.ends_with(RUNC_OPTIONS) {
            tracing::debug!(type_url = %any.type_url, "create options ignored");
            return Ok(CreateOptions::default());
        }
        let opts = Options::decode(any.value.as_slice()).map_err(|e| TaskError::BadOptions {
            type_url: any.type_url.clone(),
            reason: e.to_string(),
        })?;
        if !(opts.criu_path.is_empty()
            && opts.criu_image_path.is_empty()
            && opts.criu_work_path.is_empty())
        {
            return Err(TaskError::Unimplemented {
                what: "runc options criu_path/criu_image_path/criu_work_path (checkpoints)",
            });
        }
        Ok(CreateOptions {
            no_pivot_root: opts.no_pivot_root,
            no_new_keyring: opts.no_new_keyring,
            // containerd chowns to (IoUid, IoGid) always; 0:0 is the shim's own root.
            io_owner: (opts.io_uid != 0 || opts.io_gid != 0).then_some(IoOwner {
                uid: opts.io_uid,
                gid: opts.io_gid,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(o: Options) -> prost_types::Any {
        prost_types::Any {
            type_url: format!("type.googleapis.com/{RUNC_OPTIONS}"),
            value: o.encode_to_vec(),
        }
    }

    #[test]
    fn decodes_what_the_shim_applies() {
        assert_eq!(
            CreateOptions::decode(None).unwrap(),
            CreateOptions::default()
        );
        let got = CreateOptions::decode(Some(&any(Options {
            no_pivot_root: true,
            no_new_keyring: true,
            io_gid: 7,
            binary_name: "runc".into(),
            ..Default::default()
        })))
        .unwrap();
        assert_eq!(
            got,
            CreateOptions {
                no_pivot_root: true,
                no_new_keyring: true,
                io_owner: Some(IoOwner { uid: 0, gid: 7 }),
            }
        );
        let other = prost_types::Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: vec![0xff],
        };
        assert_eq!(
            CreateOptions::decode(Some(&other)).unwrap(),
            CreateOptions::default()
        );
    }

    #[test]
    fn refuses_checkpoint_paths_and_garbage_by_name() {
        let err = CreateOptions::decode(Some(&any(Options {
            criu_path: "/usr/sbin/criu".into(),
            ..Default::default()
        })))
        .unwrap_err();
        assert!(err.to_string().contains("criu_path"), "{err}");
        let garbage = prost_types::Any {
            type_url: RUNC_OPTIONS.into(),
            value: vec![0xff, 0xff],
        };
        let err = CreateOptions::decode(Some(&garbage)).unwrap_err();
        assert!(err.to_string().contains(RUNC_OPTIONS), "{err}");
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::InvalidArgument
        );
    }
}
