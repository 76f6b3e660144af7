//! After `docker rm` of every container nothing of them is left: no shim, no mount, no
//! cgroup, no task or runtime state.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use berth_integration::stack::Daemon;
use berth_integration::{cleanup, wait_until, Stack};

use crate::common::{container_id, wait_no_containers, wait_status, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![Spec {
        name: "leftovers::nothing_left_after_rm",
        needs: DOCKER,
        run: nothing_left,
    }]
}

fn nothing_left() -> Result<()> {
    let s = Stack::with_busybox()?;
    let running = container_id(
        &s.docker(&["run", "-d", "busybox", "sleep", "1000"])?
            .ok()?
            .stdout,
    )?;
    s.docker(&["exec", &running, "echo", "x"])?.ok()?;
    s.docker(&["run", "--name", "done", "busybox", "true"])?
        .ok()?;
    s.docker(&["run", "--rm", "busybox", "echo", "gone"])?
        .ok()?;
    let killed = container_id(
        &s.docker(&["run", "-d", "busybox", "sleep", "1000"])?
            .ok()?
            .stdout,
    )?;
    s.docker(&["kill", &killed])?.ok()?;
    wait_status(&s, &killed, "exited")?;

    s.docker(&["rm", "-f", &running, "done", &killed])?.ok()?;
    wait_no_containers(&s)?;

    // Besides the two daemons, nothing may run from the stack's dirs: no shim (found by
    // its --bundle), runtime or container process.
    let daemons = [s.pid(Daemon::Highd), s.pid(Daemon::Engine)];
    let stray = || -> Vec<(i32, String)> {
        cleanup::processes_under(&s.dir)
            .into_iter()
            .filter(|&p| !daemons.contains(&u32::try_from(p).ok()))
            .map(|p| (p, cleanup::cmdline(p).unwrap_or_default()))
            .collect()
    };
    let waited = wait_until("the stack's shims to exit", Duration::from_secs(20), || {
        Ok(stray().is_empty().then_some(()))
    });
    ensure!(waited.is_ok(), "processes left: {:?}", stray());
    let mounts = cleanup::mounts_under(&s.dir)?;
    ensure!(mounts.is_empty(), "mounts left: {mounts:?}");
    for top in cleanup::cgroup_dirs(&s.cgroup_name) {
        let children = subdirs(&top);
        ensure!(
            children.is_empty(),
            "cgroups left under {}: {children:?}",
            top.display()
        );
    }
    // Task dirs are <state>/<ns>/<id>; runtime state is <state>/runtime/<ns>/<id>.
    for ns in subdirs(&s.highd_state()) {
        let nested = if ns.ends_with("runtime") {
            subdirs(&ns)
        } else {
            vec![ns]
        };
        for dir in nested {
            let left = subdirs(&dir);
            ensure!(
                left.is_empty(),
                "state dirs left under {}: {left:?}",
                dir.display()
            );
        }
    }
    let records = subdirs(&s.dir.join("e").join("containers"));
    ensure!(
        records.is_empty(),
        "engine container dirs left: {records:?}"
    );
    Ok(())
}

fn subdirs(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}
