//! linux.personality: LINUX32 makes the container see a 32-bit machine (`uname -m`).
//! berth-lowrt only: runc 1.1 ignores linux.personality (support came in runc 1.2).

use serde_json::json;

use super::harness::{berth, skip_unless_root, stderr, stdout, Env};

#[test]
fn personality_linux32_changes_uname() {
    if skip_unless_root("personality_linux32_changes_uname") {
        return;
    }
    let rt = &berth();
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("SKIPPED personality_linux32_changes_uname: needs x86_64");
        return;
    }
    let env = Env::new(rt);
    let mut config = env.config("pers", &["uname", "-m"]);
    config["linux"]["personality"] = json!({"domain": "LINUX32"});
    env.write_config(&config);
    let out = env.run(&["run", "pers"]);
    assert_eq!(stdout(&out), "i686\n", "{}: {}", rt.name, stderr(&out));
    config["linux"]["personality"] = json!({"domain": "LINUX"});
    env.write_config(&config);
    let out = env.run(&["run", "pers"]);
    assert_eq!(stdout(&out), "x86_64\n", "{}: {}", rt.name, stderr(&out));
    env.assert_nothing_left("pers");
}
