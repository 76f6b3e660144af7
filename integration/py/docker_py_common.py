"""docker-py (Debian's python3-docker) driving berth-engine for the calls users make most.

Run by integration/tests/docker_py.rs with DOCKER_HOST pointing at a test stack whose
engine has the `busybox` image. Exits non-zero with the failed check on stderr.
"""

import os
import socket
import sys
import time
import urllib.request

import docker
from docker.errors import ContainerError, ImageNotFound, NotFound


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_get(url, deadline_s=20):
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read()
        except OSError as e:
            last = e
            time.sleep(0.1)
    raise AssertionError(f"GET {url} failed until the deadline: {last}")


def system(client):
    check(client.ping() is True, "ping")
    v = client.version()
    check(v.get("ApiVersion") and v.get("Version"), f"version: {v}")
    info = client.info()
    check("Containers" in info and "Images" in info, f"info keys: {sorted(info)}")
    names = {n.name for n in client.networks.list()}
    check({"bridge", "host", "none"} <= names, f"networks: {names}")


def images(client):
    img = client.images.get("busybox")
    check(img.id.startswith("sha256:"), f"image id {img.id}")
    check("busybox:latest" in img.tags, f"tags {img.tags}")
    check(any(i.id == img.id for i in client.images.list()), "images.list has busybox")
    check(img.tag("pyrepo", "v1"), "tag")
    check(client.images.get("pyrepo:v1").id == img.id, "tagged image resolves")
    client.images.remove("pyrepo:v1")
    try:
        client.images.get("pyrepo:v1")
        raise AssertionError("removed tag still resolves")
    except ImageNotFound:
        pass
    # The low-level create does not pull on 404 (the high-level run would try docker.io).
    try:
        client.api.create_container("berth-no-such-image:latest", ["true"])
        raise AssertionError("create with a missing image succeeded")
    except ImageNotFound:
        pass


def foreground_runs(client):
    out = client.containers.run("busybox", ["echo", "hello"], remove=True)
    check(out == b"hello\n", f"run output {out!r}")
    try:
        client.containers.run(
            "busybox", ["sh", "-c", "echo oops >&2; exit 3"], remove=True
        )
        raise AssertionError("a failing run did not raise")
    except ContainerError as e:
        check(e.exit_status == 3, f"exit_status {e.exit_status}")
        check(b"oops" in (e.stderr or b""), f"stderr {e.stderr!r}")


def detached_lifecycle(client):
    t0 = int(time.time()) - 1
    c = client.containers.run(
        "busybox",
        ["sleep", "300"],
        detach=True,
        name="pyc",
        labels={"suite": "docker-py"},
        environment={"A": "1"},
        working_dir="/tmp",
        hostname="pyhost",
    )
    c.reload()
    check(c.status == "running", f"status {c.status}")
    check(c.name == "pyc", f"name {c.name}")
    check(c.labels.get("suite") == "docker-py", f"labels {c.labels}")
    check("A=1" in c.attrs["Config"]["Env"], f"env {c.attrs['Config']['Env']}")
    check(c.attrs["State"]["Pid"] > 0, "State.Pid")
    r = c.exec_run(["sh", "-c", "echo $A; pwd; hostname"])
    check(r.exit_code == 0, f"exec exit {r.exit_code}")
    check(r.output == b"1\n/tmp\npyhost\n", f"exec output {r.output!r}")
    r = c.exec_run(["sh", "-c", "exit 4"])
    check(r.exit_code == 4, f"exec exit code {r.exit_code}")
    listed = client.containers.list(filters={"label": "suite=docker-py"})
    check([x.id for x in listed] == [c.id], f"list by label {listed}")
    check(client.containers.get("pyc").id == c.id, "get by name")
    c.stop(timeout=1)
    res = c.wait()
    check(res["StatusCode"] == 137, f"wait {res}")
    c.reload()
    check(c.status == "exited", f"status after stop {c.status}")
    check(
        client.api.inspect_container(c.id)["State"]["ExitCode"] == 137,
        "inspect ExitCode",
    )
    c.remove()
    try:
        client.containers.get("pyc")
        raise AssertionError("removed container still found")
    except NotFound:
        pass
    kinds = set()
    for ev in client.events(since=t0, until=int(time.time()) + 1, decode=True):
        if ev.get("Type") == "container" and ev.get("id") == c.id:
            kinds.add(ev.get("status") or ev.get("Action"))
    check({"create", "start", "die", "destroy"} <= kinds, f"events {kinds}")


def logs_and_prune(client):
    c = client.containers.run(
        "busybox", ["sh", "-c", "echo out; echo err >&2"], detach=True
    )
    check(c.wait()["StatusCode"] == 0, "wait")
    check(c.logs(stdout=True, stderr=False) == b"out\n", "stdout logs")
    check(c.logs(stdout=False, stderr=True) == b"err\n", "stderr logs")
    pruned = client.containers.prune()
    check(c.id in (pruned.get("ContainersDeleted") or []), f"prune {pruned}")


def published_port(client):
    port = free_port()
    c = client.containers.run(
        "busybox",
        ["sh", "-c", "mkdir -p /www && echo served > /www/index.html && httpd -f -p 80 -h /www"],
        detach=True,
        ports={"80/tcp": ("127.0.0.1", port)},
    )
    try:
        c.reload()
        bound = c.ports.get("80/tcp") or []
        check(
            any(b.get("HostPort") == str(port) for b in bound), f"ports {c.ports}"
        )
        body = http_get(f"http://127.0.0.1:{port}/index.html")
        check(body == b"served\n", f"body {body!r}")
    finally:
        c.remove(force=True)


def main():
    client = docker.DockerClient(
        base_url=os.environ["DOCKER_HOST"], version="auto", timeout=60
    )
    for step in (
        system,
        images,
        foreground_runs,
        detached_lifecycle,
        logs_and_prune,
        published_port,
    ):
        step(client)
        print(f"ok {step.__name__}", flush=True)
    check(client.containers.list(all=True) == [], "containers left behind")
    print(f"docker-py {docker.__version__}: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # one line naming the failed check, then the traceback
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        raise
