//! What can be checked of `deploy/` without a cluster, a container runtime or a host to install
//! on: the files parse, every setting they name is one the binary reads, the probes hit the
//! admin endpoints, and the systemd unit passes `systemd-analyze verify` where systemd exists.

mod support;

use std::path::Path;
use std::process::Command;

use serde_yaml_ng::Value;

fn repo(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Every `SPECGATE_*` name in `text`.
fn setting_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("SPECGATE_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        // `SPECGATE_*` in prose is the family, not a setting.
        if end > "SPECGATE_".len() {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_setting_named_in_deploy_is_one_the_binary_reads() {
    let known = specgate::config::env_names();
    for file in [
        "deploy/Dockerfile",
        "deploy/kubernetes/app-with-specgate.yaml",
        "deploy/systemd/specgate.service",
        "deploy/README.md",
    ] {
        let names = setting_names(&repo(file));
        assert!(!names.is_empty(), "{file} names no setting");
        for name in names {
            // SPECGATE_GIT_SHA is the build's, not the binary's.
            if name != "SPECGATE_GIT_SHA" {
                assert!(
                    known.contains(&name.as_str()),
                    "{file}: unknown setting {name}"
                );
            }
        }
    }
}

fn env_of(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn value<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
    &env.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} not set"))
        .1
}

#[test]
fn the_kubernetes_sidecar_is_wired_to_the_settings_it_uses() {
    let text = repo("deploy/kubernetes/app-with-specgate.yaml");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("each document parses"))
        .collect();
    assert!(
        docs.iter()
            .all(|d| d["apiVersion"].is_string() && d["kind"].is_string())
    );
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let sidecar = pod["initContainers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "specgate")
        .expect("specgate is a native sidecar");
    assert_eq!(sidecar["restartPolicy"], "Always");
    let env = env_of(sidecar);

    // Probes on the admin port, at the admin paths.
    let admin_port: u16 = value(&env, "SPECGATE_ADMIN_LISTEN")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let port = sidecar["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .unwrap();
    assert_eq!(port["containerPort"].as_u64(), Some(u64::from(admin_port)));
    for (probe, path) in [
        ("startupProbe", "/readyz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
    ] {
        assert_eq!(sidecar[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(sidecar[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                sidecar["resources"][kind][resource].is_string(),
                "{kind}.{resource}"
            );
        }
    }

    // The token file is in a Secret volume; the audit log on a persistent one.
    let mount_of = |path: &str| -> Value {
        let mount = sidecar["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| path.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
            .unwrap_or_else(|| panic!("{path} is on no volume"));
        pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap()
            .clone()
    };
    let token = mount_of(value(&env, "SPECGATE_API_TOKEN_FILE"));
    assert!(token["secret"]["secretName"].is_string(), "{token:?}");
    let token_file = value(&env, "SPECGATE_API_TOKEN_FILE")
        .rsplit('/')
        .next()
        .unwrap();
    assert_eq!(token["secret"]["items"][0]["path"], token_file);
    assert!(
        env.iter().all(|(n, _)| n != "SPECGATE_API_TOKEN"),
        "the token is never an environment variable"
    );
    let audit = mount_of(value(&env, "SPECGATE_AUDIT_LOG"));
    let claim = audit["persistentVolumeClaim"]["claimName"]
        .as_str()
        .unwrap();
    assert!(
        docs.iter()
            .any(|d| d["kind"] == "PersistentVolumeClaim" && d["metadata"]["name"] == claim)
    );

    // The proxy on loopback, and the app pointed at it.
    let listen = value(&env, "SPECGATE_LISTEN");
    assert!(listen.starts_with("127.0.0.1:"), "{listen}");
    let app = &pod["containers"][0];
    let app_env = env_of(app);
    assert!(
        app_env
            .iter()
            .any(|(_, v)| v.starts_with(&format!("http://{listen}/"))),
        "the app's base URL points at the sidecar: {app_env:?}"
    );
}

#[test]
fn the_dockerfile_builds_release_runs_non_root_and_checks_health() {
    let text = repo("deploy/Dockerfile");
    let from: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(from.len(), 2, "two stages: {from:?}");
    assert!(text.contains("cargo build --release --locked"));
    let user = text
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "{user}"
    );
    assert!(text.contains(r#"HEALTHCHECK"#) && text.contains(r#""probe", "readyz""#));
    // Every file copied from the build context exists.
    for line in text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        for source in &words[..words.len() - 1] {
            assert!(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(source).exists(),
                "COPY source {source} does not exist"
            );
        }
    }
}

#[test]
fn the_systemd_unit_is_hardened_and_verifies() {
    let text = repo("deploy/systemd/specgate.service");
    for line in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "ExecStart=/usr/local/bin/specgate serve",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Environment=SPECGATE_API_TOKEN_FILE=%d/api-token",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}");
    }
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        eprintln!("systemd-analyze is not installed: the unit was checked, not verified");
        return;
    }
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("specgate.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/specgate", support::binary()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}
