//! The README's session, as a newcomer runs it: the release build, its first command
//! (`serve --mock`, no upstream or token), the default audit path under the working directory,
//! and the README's own curl command, run by a shell. And what keeps that build and the tests
//! from compiling the dependency tree twice.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use support::*;

/// The README's code blocks, in order.
fn readme_blocks() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    readme
        .split("```sh\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap().trim().to_owned())
        .collect()
}

#[test]
fn the_readme_starts_with_the_two_commands() {
    let blocks = readme_blocks();
    assert_eq!(blocks[0], "cargo run --release -- serve --mock");
    assert_eq!(blocks[1], "cargo test --release");
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    // `.ci/run` times each step with its `step` function.
    assert!(ci.lines().any(|l| {
        l.trim_start_matches("step ")
            .starts_with("cargo test --release")
    }));
}

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
    let workdir = tempfile::tempdir().unwrap();
    // `cargo run --release -- serve --mock`, on port 0 instead of 8080.
    let gw = Gateway::start_with(&["serve", "--mock"], Some(workdir.path()), &[]);

    let curl = readme_blocks()
        .into_iter()
        .find(|b| b.starts_with("curl "))
        .expect("the README has a curl example");
    let curl = curl.replace("127.0.0.1:8080", &gw.addr.to_string());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .args(["-c", &format!("{curl} -sS")])
            .output()
            .expect("sh and curl are installed")
    })
    .await
    .unwrap();
    let response = String::from_utf8_lossy(&output.stdout);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("x-specgate-mock: true"), "{response}");
    let body: serde_json::Value =
        serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::from_str::<serde_json::Value>(CREATED).unwrap()
    );

    let audit = std::fs::read_to_string(workdir.path().join("audit/specgate-audit.jsonl")).unwrap();
    assert_eq!(
        audit.lines().count(),
        2,
        "the audit log gained the attempt and the create"
    );
    assert!(audit.contains(r#""resource_id":"1""#), "{audit}");
    assert!(
        audit.contains(r#""operation_id":"create-connection""#),
        "{audit}"
    );
}

/// Each package of the build (`name version`) and the features it is built with, as
/// `cargo tree` resolves them for the edges `edges`.
fn features(edges: &str) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--locked",
            "--offline",
            "--prefix",
            "none",
            "-e",
            edges,
        ])
        .args(["-f", "{p}|{f}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut packages: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let Some((package, features)) = line.split_once('|') else {
            continue;
        };
        // `tokio v1.54.1`: a crate in two versions is two packages.
        let name: Vec<&str> = package.split(' ').take(2).collect();
        packages.entry(name.join(" ")).or_default().extend(
            features
                .split(',')
                .map(|f| f.replace("(*)", "").trim().to_owned())
                .filter(|f| !f.is_empty()),
        );
    }
    packages
}

#[test]
fn the_binary_and_the_tests_share_the_features_of_their_common_crates() {
    // A crate the tests build with other features than the binary is compiled twice, with
    // everything above it: minutes of CI (Cargo.toml's unification entries say why). tokio's
    // test-util is the one difference kept on purpose, and the three below are built twice
    // anyway because they sit above tokio.
    let binary = features("normal,build");
    let tests = features("normal,build,dev");
    let differing: Vec<&str> = binary
        .iter()
        .filter(|(name, features)| tests.get(*name).is_some_and(|t| t != *features))
        .map(|(name, _)| name.split(' ').next().unwrap_or(name))
        .collect();
    assert_eq!(
        differing,
        ["hyper-util", "sync_wrapper", "tokio", "tower"],
        "declare the dev-dependencies' features of the others in Cargo.toml"
    );
}

#[test]
fn every_test_file_is_compiled() {
    // With autotests off, a tests/*.rs file not declared in tests/main.rs would never run.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");
    let main = std::fs::read_to_string(format!("{dir}/main.rs")).unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "rs") && stem != "main" {
            assert!(
                main.lines().any(|l| l == format!("mod {stem};")),
                "tests/{stem}.rs is not declared in tests/main.rs, so it never runs"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "found only {checked} test files");
}
