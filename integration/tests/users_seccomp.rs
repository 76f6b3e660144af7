//! `docker run -u` with names from the image's /etc/passwd and /etc/group (the test image
//! has root, nobody and nogroup), and dockerd's errors for unknown ones; seccomp: the
//! default profile, `seccomp=unconfined`, a custom profile file and a broken one.

use anyhow::{ensure, Result};
use berth_integration::Stack;

use crate::common::{expect_contains, wait_no_containers, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "users_seccomp::user_names_from_image",
            needs: DOCKER,
            run: user_names,
        },
        Spec {
            name: "users_seccomp::seccomp_default_unconfined_and_custom",
            needs: DOCKER,
            run: seccomp_profiles,
        },
    ]
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
    // Exec inherits the container's user name and takes its own.
    s.docker(&[
        "run", "-d", "--name", "u1", "-u", "nobody", "busybox", "sleep", "60",
    ])?
    .ok()?;
    let out = s.docker(&["exec", "u1", "id", "-u"])?.ok()?;
    ensure!(
        out.out() == "65534",
        "exec as the container's user: {:?}",
        out.out()
    );
    let out = s
        .docker(&[
            "exec",
            "-u",
            "root:nogroup",
            "u1",
            "sh",
            "-c",
            "id -u; id -g",
        ])?
        .ok()?;
    ensure!(
        out.stdout == "0\n65534\n",
        "exec -u root:nogroup: {:?}",
        out.stdout
    );
    s.docker(&["rm", "-f", "u1"])?.ok()?;
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

/// `Seccomp:` mode of the container's shell (0 off, 2 filter).
fn seccomp_mode(s: &Stack, opts: &[&str]) -> Result<String> {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["busybox", "sh", "-c", "grep '^Seccomp:' /proc/self/status"]);
    let out = s.docker(&args)?.ok()?;
    Ok(out
        .stdout
        .split_whitespace()
        .last()
        .unwrap_or("")
        .to_string())
}

fn seccomp_profiles() -> Result<()> {
    let s = Stack::with_busybox()?;
    ensure!(seccomp_mode(&s, &[])? == "2", "default profile not applied");
    ensure!(
        seccomp_mode(&s, &["--security-opt", "seccomp=unconfined"])? == "0",
        "seccomp=unconfined still filtered"
    );
    // The default profile denies unshare without CAP_SYS_ADMIN; plain work still runs.
    let out = s.docker(&["run", "--rm", "busybox", "unshare", "-u", "true"])?;
    ensure!(
        out.code != 0,
        "unshare allowed under the default profile: {out}"
    );
    expect_contains("unshare", &out.stderr, "Operation not permitted")?;
    let out = s
        .docker(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "mkdir /tmp/d && echo ok",
        ])?
        .ok()?;
    ensure!(out.stdout == "ok\n", "stdout {:?}", out.stdout);
    // A custom profile file: the CLI sends its content.
    let profile = s.dir.join("deny-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )?;
    let opt = format!("seccomp={}", profile.display());
    let out = s.docker(&[
        "run",
        "--rm",
        "--security-opt",
        &opt,
        "busybox",
        "mkdir",
        "/tmp/d",
    ])?;
    ensure!(
        out.code != 0,
        "mkdir allowed by a profile denying it: {out}"
    );
    expect_contains("custom profile", &out.stderr, "Operation not permitted")?;
    let bad = s.dir.join("bad.json");
    std::fs::write(&bad, "{\"defaultAction\": 7}")?;
    let opt = format!("seccomp={}", bad.display());
    let out = s.docker(&["run", "--rm", "--security-opt", &opt, "busybox", "true"])?;
    ensure!(out.code != 0, "a broken profile was accepted: {out}");
    expect_contains(
        "bad profile",
        &out.stderr,
        "decoding seccomp profile failed",
    )?;
    wait_no_containers(&s)
}
