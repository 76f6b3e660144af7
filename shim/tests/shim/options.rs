//! containerd's runc options in Create: NoPivotRoot and NoNewKeyring reach the runtime's
//! `create`, IoUid/IoGid own the process's pipes, checkpoint paths are refused by name.

use std::os::unix::fs::PermissionsExt;

use berth_proto::containerd::runc::v1::Options;
use berth_proto::containerd::task::v2::{StartRequest, WaitRequest};
use prost::Message;

use crate::harness::{runtime, skip_unless_root, FakeEvents, Fixture};

fn runc_options(o: Options) -> Option<prost_types::Any> {
    Some(prost_types::Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: o.encode_to_vec(),
    })
}

#[tokio::test]
async fn runc_options_reach_the_runtime_and_the_pipes() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("runc_options_reach_the_runtime_and_the_pipes") {
            return Ok(());
        }
        // The process reports who owns the pipe it writes to. It runs as the IoUid user,
        // the option's purpose (runc itself hands stdio owned by someone else to the
        // process's uid, keeping the group).
        let fx = Fixture::new(&["busybox", "stat", "-L", "-c", "%u:%g", "/proc/self/fd/1"])?;
        let config = fx.bundle.join("config.json");
        let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&config)?)?;
        spec["process"]["user"] = serde_json::json!({"uid": 1234, "gid": 5678});
        std::fs::write(&config, serde_json::to_vec_pretty(&spec)?)?;
        let mut fx = fx;
        // A runtime that records its command lines, then is the real one.
        let argv = fx.path("argv");
        let wrapper = fx.path("recording-runtime");
        let real = runtime();
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho \"$*\" >>'{}'\nexec {real} \"$@\"\n",
                argv.display()
            ),
        )?;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
        let events = FakeEvents::default();
        events.serve(&fx.events_sock)?;
        let out = fx
            .start_command_with(&fx.id, &wrapper.display().to_string())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fx.shim_pid = Some(
            std::fs::read_to_string(fx.bundle.join("shim.pid"))?
                .trim()
                .parse()?,
        );
        let socket = fx.bundle.join("shim.sock");
        let mut client = berth_proto::containerd::task::v2::task_client::TaskClient::new(
            berth_proto::transport::connect_unix(&socket).await?,
        );

        let stdout = fx.path("stdout");
        let mut req = fx.create_request(&stdout.display().to_string(), "");
        req.options = runc_options(Options {
            no_pivot_root: true,
            no_new_keyring: true,
            io_uid: 1234,
            io_gid: 5678,
            ..Options::default()
        });
        client.create(req).await?;
        client
            .start(StartRequest {
                id: fx.id.clone(),
                exec_id: String::new(),
            })
            .await?;
        let waited = client
            .wait(WaitRequest {
                id: fx.id.clone(),
                exec_id: String::new(),
            })
            .await?
            .into_inner();
        let owner = std::fs::read_to_string(&stdout)?;
        assert_eq!(waited.exit_status, 0, "stat failed: {owner}");
        assert_eq!(owner.trim(), "1234:5678");
        let calls = std::fs::read_to_string(&argv)?;
        let create = calls
            .lines()
            .find(|l| l.contains(" create "))
            .unwrap_or_default();
        assert!(
            create.contains("--no-pivot") && create.contains("--no-new-keyring"),
            "runtime create without the options: {calls}"
        );
        fx.delete_and_shutdown(&mut client).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn checkpoint_options_are_refused_and_nothing_is_left() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("checkpoint_options_are_refused_and_nothing_is_left") {
            return Ok(());
        }
        let mut fx = Fixture::new(&["true"])?;
        let events = FakeEvents::default();
        events.serve(&fx.events_sock)?;
        let mut client = fx.start_shim().await?;
        let mut req = fx.create_request("", "");
        req.options = runc_options(Options {
            criu_image_path: "/tmp/cp".into(),
            ..Options::default()
        });
        let err = client
            .create(req)
            .await
            .expect_err("create with criu paths");
        assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
        assert!(err.message().contains("criu_image_path"), "{err:?}");
        assert!(
            !fx.rootfs_mounted(),
            "rootfs mounted after a refused Create"
        );
        // Still usable: the same Create without the option works.
        client.create(fx.create_request("", "")).await?;
        fx.delete_and_shutdown(&mut client).await?;
        Ok(())
    })
    .await
}
