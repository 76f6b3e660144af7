//! `docker run -u` with names from the image's /etc/passwd and /etc/group (the test image
//! has root, nobody and nogroup), and dockerd's errors for unknown ones.

use anyhow::{ensure, Result};
use berth_integration::Stack;

use crate::common::{expect_contains, wait_no_containers, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![Spec {
        name: "users_seccomp::user_names_from_image",
        needs: DOCKER,
        run: user_names,
    }]
}

fn id(s: &Stack, user: &str) -> Result<String> {
    let out = s
        .docker(&[
            "run",
            "--rm",
            "-u",
            user,
            "busybox",
            "sh",
            "-c",
            "id -u; id -g",
        ])?
        .ok()?;
    Ok(out.stdout.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn user_names() -> Result<()> {
    let s = Stack::with_busybox()?;
    for (user, want) in [
        ("nobody", "65534 65534"),
        ("nobody:root", "65534 0"),
        ("root:nogroup", "0 65534"),
        ("65534", "65534 65534"),
        ("1234", "1234 0"),
        ("12:34", "12 34"),
    ] {
        let got = id(&s, user)?;
        ensure!(got == want, "-u {user}: id says {got:?}, want {want:?}");
    }
    let out = s.docker(&["run", "--rm", "-u", "ghost", "busybox", "true"])?;
    ensure!(out.code != 0, "-u ghost succeeded: {out}");
    expect_contains(
        "unknown user",
        &out.stderr,
        "unable to find user ghost: no matching entries in passwd file",
    )?;
    let out = s.docker(&["run", "--rm", "-u", "nobody:ghosts", "busybox", "true"])?;
    ensure!(out.code != 0, "-u nobody:ghosts succeeded: {out}");
    expect_contains(
        "unknown group",
        &out.stderr,
        "unable to find group ghosts: no matching entries in group file",
    )?;
    wait_no_containers(&s)
}
