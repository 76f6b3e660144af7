//! lowrt's integration tests: one binary, modules under suite/. Each test builds its own
//! busybox bundle in a temp dir, uses its own --root and its own cgroup parent
//! /berth-test-<rand>, and removes all of it. Tests that runc can also pass run against
//! both runtimes, to prove the test itself checks the right thing.

mod suite;
