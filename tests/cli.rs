//! The `check`, `routes`, `probe`, `--version` and `--help` subcommands of the real binary.

mod support;

use std::process::{Command, Output, Stdio};

use support::*;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(binary())
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run specgate")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_prints_the_route_table_and_never_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, CANARY_TOKEN).unwrap();
    let token = token.display().to_string();
    let out = run(
        &["check"],
        &[
            ("SPECGATE_UPSTREAM", "https://acct.api-us1.com/api/3"),
            ("SPECGATE_API_TOKEN_FILE", &token),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("upstream: https://acct.api-us1.com/api/3"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("token:    present (file {token})")),
        "{stdout}"
    );
    assert!(
        stdout.contains("POST    /api/3/connections  create-connection  yes        example 200"),
        "{stdout}"
    );
    assert!(!stdout.contains(CANARY_TOKEN) && !text(&out.stderr).contains(CANARY_TOKEN));
}

#[test]
fn check_exits_non_zero_naming_each_problem() {
    let out = run(
        &["check"],
        &[
            ("SPECGATE_UPSTREAM", "https://acct.api-us1.com/api/3"),
            ("SPECGATE_API_TOKEN_FILE", "/nonexistent/token"),
            ("SPECGATE_SPEC", "/nonexistent/spec.yaml"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("specgate check: SPECGATE_API_TOKEN_FILE (/nonexistent/token)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("specgate check: spec /nonexistent/spec.yaml: cannot read"),
        "{stderr}"
    );

    let out = run(&["check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("specgate check: SPECGATE_") && stderr.contains("no API token"),
        "{stderr}"
    );
    let out = run(&["check", "--mock"], &[]);
    assert!(out.status.success(), "mock mode needs no upstream or token");
}

#[test]
fn routes_needs_nothing_but_the_spec() {
    let out = run(&["routes"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "METHOD  PATH                OPERATION          VALIDATED  MOCK\n\
         POST    /api/3/connections  create-connection  yes        example 200\n"
    );
}

#[test]
fn version_and_help_for_every_subcommand() {
    let out = run(&["--version"], &[]);
    let version = text(&out.stdout);
    assert!(
        version.starts_with(&format!("specgate {} (git ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let out = run(&["--help"], &[]);
    let help = text(&out.stdout);
    for sub in ["serve", "check", "routes", "probe"] {
        assert!(help.contains(sub), "{help}");
        let out = run(&[sub, "--help"], &[]);
        assert!(out.status.success());
        let help = text(&out.stdout);
        assert!(help.lines().count() > 3, "{sub} has help:\n{help}");
    }
    let serve = text(&run(&["serve", "--help"], &[]).stdout);
    assert!(
        serve.contains("--mock") && serve.contains("--config"),
        "{serve}"
    );
}

#[tokio::test]
async fn probe_answers_for_a_running_gateway() {
    let gw = Gateway::start_with(&["serve", "--mock"], None, &[]);
    let admin = gw.admin.to_string();
    for endpoint in ["healthz", "readyz"] {
        let out = run(&["probe", endpoint, "--admin", &admin], &[]);
        assert!(out.status.success(), "{endpoint}: {}", text(&out.stderr));
    }
    drop(gw);
    let out = run(&["probe", "--admin", &admin], &[]);
    assert_eq!(out.status.code(), Some(1), "nothing listens there now");
}
