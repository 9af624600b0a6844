//! The agent stays lean: no web, SQL, plotting or mail crates in its tree.

use std::process::Command;

#[test]
fn agent_dependency_tree_has_no_heavy_crates() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "-p", "ganglion-agent", "-e", "normal", "--prefix", "none"])
        .current_dir(ganglion_tests::workspace_root())
        .output()
        .expect("running cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    for heavy in ["axum ", "hyper ", "rusqlite ", "plotters ", "lettre ", "sysinfo "] {
        assert!(!tree.lines().any(|l| l.starts_with(heavy)), "{heavy}is in the agent's tree:\n{tree}");
    }
    assert!(tree.lines().any(|l| l.starts_with("ganglion-proto ")), "unexpected tree:\n{tree}");
}
