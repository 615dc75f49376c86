//! The `check`, `routes`, `probe`, `--version` and `--help` subcommands of the real binary.

use crate::support;

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
        stderr.starts_with("specgate check: SPECGATE_UPSTREAM")
            && stderr.contains("SPECGATE_API_TOKEN_FILE")
            && stderr.contains("specgate serve --mock"),
        "nothing configured: both settings named, and mock mode offered: {stderr}"
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

/// A document with one thing enforced less than written (a type that is no type), beside
/// one that is broken (a `$ref` to nowhere).
fn loose_and_broken(dir: &std::path::Path) -> (String, String) {
    let write = |name: &str, schema: &str| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "openapi: 3.0.3\ninfo: {{title: t, version: '1'}}\npaths:\n  /things/{{id}}:\n    put:\n      requestBody:\n        content:\n          application/json:\n            schema: {schema}\n      responses: {{'200': {{description: ok}}}}\n"
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    (
        write("loose.yaml", "{properties: {a: {type: strng}}}"),
        write("broken.yaml", "{$ref: '#/components/schemas/Nope'}"),
    )
}

#[test]
fn check_and_routes_warn_with_pointers_and_strict_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (loose, _) = loose_and_broken(dir.path());
    let pointer =
        "/paths/~1things~1{id}/put/requestBody/content/application~1json/schema/properties/a/type";
    for args in [&["check", "--mock"][..], &["routes"][..]] {
        let command = args[0];
        let out = run(args, &[("SPECGATE_SPEC", &loose)]);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{command}: {stderr}");
        assert!(
            stderr.starts_with(&format!(
                "specgate {command}: warning: spec {loose} at {pointer}: not valid JSON Schema"
            )),
            "{command}: {stderr}"
        );
        assert!(
            text(&out.stdout).contains("PUT     /things/{id}"),
            "{command}"
        );

        let strict: Vec<&str> = args.iter().copied().chain(["--strict"]).collect();
        let out = run(&strict, &[("SPECGATE_SPEC", &loose)]);
        assert_eq!(out.status.code(), Some(1), "{command} --strict");
        assert!(
            text(&out.stderr).contains(&format!("specgate {command}: spec {loose} at {pointer}")),
            "{command} --strict: {}",
            text(&out.stderr)
        );
    }
    let out = run(&["check", "--mock"], &[("SPECGATE_SPEC", &loose)]);
    assert!(
        text(&out.stdout).contains(&format!(
            "spec:     {loose} (version 3.0.3; overlays: none); 1 operation, 1 warning"
        )),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn routes_and_check_refuse_what_serve_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (_, broken) = loose_and_broken(dir.path());
    for args in [&["check", "--mock"][..], &["routes"][..]] {
        let out = run(args, &[("SPECGATE_SPEC", &broken)]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("spec {broken} at /paths/~1things~1{{id}}/put/requestBody/content/application~1json/schema/$ref")),
            "{args:?}: {stderr}"
        );
        assert!(text(&out.stdout).is_empty() || args[0] == "check");
    }
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
