//! The README's session, as a user runs it: the release build, settings from the environment,
//! the default audit path under the working directory, and curl.

mod support;

use std::process::Command;

use support::*;

#[tokio::test]
#[cfg_attr(
    debug_assertions,
    ignore = "runs the release build: use cargo test --release"
)]
async fn the_readme_session_works_with_the_release_binary() {
    assert!(
        binary().contains("/release/"),
        "expected target/release/specgate, got {}",
        binary()
    );
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let workdir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(Some(workdir.path()), &env_for(&ca, &upstream));

    let url = gw.url("/api/3/connections");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args([
                "-sS",
                "-i",
                "-X",
                "POST",
                &url,
                "-H",
                "Content-Type: application/json",
                "-d",
            ])
            .arg(VALID_CREATE)
            .output()
            .expect("curl is installed")
    })
    .await
    .unwrap();
    let response = String::from_utf8_lossy(&output.stdout);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(response.ends_with(CREATED), "{response}");

    let audit = std::fs::read_to_string(workdir.path().join("audit/specgate-audit.jsonl")).unwrap();
    assert_eq!(
        audit.lines().count(),
        2,
        "the audit log gained the attempt and the create"
    );
    assert!(audit.contains(r#""resource_id":"1""#), "{audit}");
    assert_eq!(upstream.requests()[0].headers["api-token"], CANARY_TOKEN);
}
