//! wepoq's own image on the real Docker engine: a dynamically linked binary (this test
//! binary, as wepoq's CLI is in development builds) imported with its loader and libraries
//! runs in a FROM-scratch container, and importing again finds the image by its tag.

use std::process::Command;

use wepoq_reconciler::docker::{self, image};
use wepoq_reconciler::sandbox::{Component, require};

#[tokio::test(flavor = "current_thread")]
async fn the_running_binary_runs_from_scratch_with_its_libraries() {
    if require(Component::Docker).is_none() {
        return;
    }
    let engine = docker::connect(None).await.unwrap();
    let reference = image::ensure_self_image(&engine).await.unwrap();
    assert!(reference.starts_with("wepoq-self:"), "{reference}");
    assert_eq!(
        image::ensure_self_image(&engine).await.unwrap(),
        reference,
        "the same content is the same tag"
    );
    // The image's entrypoint is this test binary: ask it to list its tests.
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--label",
            "wepoq.net/test=self-image",
            &reference,
            "--list",
        ])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    let _ = Command::new("docker").args(["rmi", &reference]).output();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        listed.contains("self_image::the_running_binary_runs_from_scratch_with_its_libraries"),
        "{listed}"
    );
}
