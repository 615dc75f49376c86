//! What can be checked of `deploy/` without a cluster, a container runtime or a host to install
//! on, done the way each file says: the Dockerfile's build stage built from exactly its context,
//! and its image run as deploy/README's `docker run` runs it; the Kubernetes sidecar started with
//! the manifest's env and args and asked at its probes' paths; the systemd unit through
//! `systemd-analyze verify` where systemd exists; every setting named is one the binary reads.

use crate::support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
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

#[tokio::test]
async fn the_kubernetes_sidecar_is_wired_to_the_settings_it_uses_and_runs_with_them() {
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

    // As deploy/README says: every container non-root-capable, read-only, nothing to escalate.
    let containers = pod["initContainers"]
        .as_sequence()
        .unwrap()
        .iter()
        .chain(pod["containers"].as_sequence().unwrap());
    for container in containers {
        let context = &container["securityContext"];
        let name = &container["name"];
        assert_eq!(context["allowPrivilegeEscalation"], false, "{name:?}");
        assert_eq!(context["readOnlyRootFilesystem"], true, "{name:?}");
        assert_eq!(
            context["capabilities"]["drop"],
            serde_yaml_ng::from_str::<Value>("[ALL]").unwrap(),
            "{name:?}"
        );
    }
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);

    // The sidecar run with its env and args: mounted paths in a directory standing for the
    // pod's file system, the Secret's file holding a token, ports 0 for the fixed ones.
    let pod_root = tempfile::tempdir().unwrap();
    let mapped = |value: &str| -> String {
        if value.starts_with('/') {
            inside(pod_root.path(), value).display().to_string()
        } else {
            value.replace(":8080", ":0").replace(":9090", ":0")
        }
    };
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.clone(), mapped(v))).collect();
    let token = PathBuf::from(value(&env, "SPECGATE_API_TOKEN_FILE"));
    std::fs::create_dir_all(token.parent().unwrap()).unwrap();
    std::fs::write(&token, format!("{}\n", support::CANARY_TOKEN)).unwrap();
    let args: Vec<&str> = sidecar["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let gw = support::Gateway::start_with(&args, None, &env);
    assert!(gw.addr.ip().is_loopback());
    // Each probe's path answers on the admin port: /healthz 200; /readyz 200, or 503 naming
    // why (this machine cannot resolve the example upstream).
    for (probe, ok) in [
        ("livenessProbe", &[200][..]),
        ("readinessProbe", &[200, 503][..]),
        ("startupProbe", &[200, 503][..]),
    ] {
        let path = sidecar[probe]["httpGet"]["path"].as_str().unwrap();
        // The kubelet probes the pod IP; here, loopback.
        let url = format!("http://127.0.0.1:{}{path}", gw.admin.port());
        let answer = support::client().get(url).send().await.unwrap();
        let status = answer.status().as_u16();
        let body = answer.text().await.unwrap();
        assert!(ok.contains(&status), "{probe} {path}: {status} {body}");
        if path == "/readyz" {
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            let failing = body["failing"].as_array().unwrap();
            assert!(
                failing.iter().all(|f| f == "upstream"),
                "only the example upstream may fail: {body}"
            );
        }
    }
    assert!(
        PathBuf::from(value(&env, "SPECGATE_AUDIT_LOG"))
            .parent()
            .unwrap()
            .is_dir(),
        "the audit log's directory is made on the mounted volume"
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

/// A Dockerfile's instructions, `(KEYWORD, rest)`, continuation lines joined, comments dropped,
/// split into stages at each `FROM`.
fn dockerfile_stages(text: &str) -> Vec<Vec<(String, String)>> {
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (keyword, rest) = pending.split_once(' ').unwrap_or((&pending, ""));
        let instruction = (keyword.to_ascii_uppercase(), rest.trim().to_owned());
        if instruction.0 == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("a Dockerfile starts with FROM")
            .push(instruction);
        pending.clear();
    }
    stages
}

/// Whether `.dockerignore` lets `path` (relative, `/`-separated) into the build context:
/// the last pattern matching it or a directory above it decides; `*` stays within a segment.
fn in_context(ignore: &[String], path: &str) -> bool {
    fn glob(pattern: &str, name: &str) -> bool {
        match pattern.split_once('*') {
            None => pattern == name,
            Some((head, tail)) => {
                name.starts_with(head)
                    && (head.len()..=name.len())
                        .any(|at| !name[head.len()..at].contains('/') && glob(tail, &name[at..]))
            }
        }
    }
    let mut included = true;
    for pattern in ignore {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p.trim_matches('/')),
            None => (false, pattern.trim_matches('/')),
        };
        let mut prefixes = path.match_indices('/').map(|(at, _)| &path[..at]);
        if glob(pattern, path) || prefixes.any(|prefix| glob(pattern, prefix)) {
            included = negated;
        }
    }
    included
}

fn dockerignore() -> Vec<String> {
    repo(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Every file under `path` (itself, if a file), relative to the repository.
fn files_under(path: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    walk(&root.join(path))
        .into_iter()
        .filter(|f| f.is_file())
        .map(|f| f.strip_prefix(root).unwrap().to_str().unwrap().to_owned())
        .collect()
}

/// Where an absolute path inside an image lands in `root`.
fn inside(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Carries out a `COPY` as Docker does: each source from the context (or `--from`, another
/// stage's root), a directory's contents (empty directories too) into the destination, a file
/// into it when it ends in `/` (or names several sources) and as it otherwise. Returns the
/// destination and the `--chown` owner, if any.
fn copy(
    rest: &str,
    context: &[String],
    image: &Path,
    workdir: &str,
    stages: &HashMap<String, PathBuf>,
) -> (String, Option<String>) {
    let mut words: Vec<&str> = rest.split_whitespace().collect();
    let mut from = None;
    let mut chown = None;
    words.retain(|w| {
        if let Some(stage) = w.strip_prefix("--from=") {
            from = Some(stages[stage].clone());
        } else if let Some(owner) = w.strip_prefix("--chown=") {
            chown = Some(owner.to_owned());
        }
        !w.starts_with("--")
    });
    let (dest, sources) = words.split_last().unwrap();
    let dest = if dest.starts_with('/') {
        (*dest).to_owned()
    } else {
        format!("{workdir}/{dest}")
    };
    let into_dir = dest.ends_with('/') || sources.len() > 1;
    let root = from
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_owned());
    for source in sources {
        let base = inside(&root, source);
        let entries: Vec<PathBuf> = match &from {
            Some(_) => walk(&base).into_iter().filter(|p| p.exists()).collect(),
            None => files_under(source)
                .into_iter()
                .filter(|f| in_context(context, f))
                .map(|f| root.join(f))
                .collect(),
        };
        // From the context, nothing there means .dockerignore left it out: docker build stops.
        assert!(
            !entries.is_empty(),
            "COPY {source}: nothing there (.dockerignore, or the stage did not make it)"
        );
        for entry in entries {
            let target = if base.is_dir() {
                inside(image, &dest).join(entry.strip_prefix(&base).unwrap())
            } else if into_dir {
                inside(image, &dest).join(base.file_name().unwrap())
            } else {
                inside(image, &dest)
            };
            if entry.is_dir() {
                std::fs::create_dir_all(&target).unwrap();
            } else {
                copy_file(&entry, &target);
            }
        }
    }
    (dest, chown)
}

/// Copies a file, keeping its modification time: cargo goes by mtimes, so an unchanged source
/// or dependency copied again is not rebuilt.
fn copy_file(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap();
    let modified = std::fs::metadata(from).unwrap().modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(to)
        .unwrap()
        .set_modified(modified)
        .unwrap();
}

/// Seeds `to`, a build directory's profile directory, with the dependencies this checkout's
/// own build compiled in `from`, never overwriting: the stage reuses them and compiles only
/// specgate, from its copied context. One shared build directory would not do: cargo names
/// both copies of specgate's units alike, and each build would undo the other's.
fn seed_build_dir(from: &Path, to: &Path) {
    for kind in ["build", ".fingerprint", "deps"] {
        for file in walk(&from.join(kind)).into_iter().filter(|f| f.is_file()) {
            let relative = file.strip_prefix(from).unwrap();
            let unit = relative.iter().nth(1).unwrap().to_str().unwrap();
            let library = [".rlib", ".rmeta", ".so", ".d"]
                .iter()
                .any(|ext| unit.ends_with(ext));
            let specgate = unit.starts_with("specgate-") || unit.starts_with("libspecgate-");
            // Of deps/, the libraries only: the rest are test executables.
            if specgate || kind == "deps" && !library || to.join(relative).exists() {
                continue;
            }
            copy_file(&file, &to.join(relative));
        }
    }
}

/// `path`, or every file and empty directory under it when it is a directory.
fn walk(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        let under: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap()
            .flat_map(|e| walk(&e.unwrap().path()))
            .collect();
        // An empty directory is a leaf of its own.
        if under.is_empty() {
            vec![path.to_owned()]
        } else {
            under
        }
    } else {
        vec![path.to_owned()]
    }
}

/// The target directory this test binary was built into (`<target>/release/deps/integration-…`).
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .to_owned()
}

/// `cargo <args> --offline` in `dir` with `build_dir`, in a container's environment: nothing of
/// this test run's (cargo's variables for tests would make dependencies look changed) but the
/// toolchain's and the stage's, and no git repository above.
fn run_cargo(
    args: &[&str],
    dir: &Path,
    build_dir: &Path,
    stage_env: &[(String, String)],
    step: &str,
) {
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or("cargo".into()));
    cargo.env_clear();
    for keep in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
    ] {
        if let Some(value) = std::env::var_os(keep) {
            cargo.env(keep, value);
        }
    }
    let out = cargo
        .args(args)
        .arg("--offline")
        .current_dir(dir)
        .env("GIT_CEILING_DIRECTORIES", std::env::temp_dir())
        .env("CARGO_BUILD_BUILD_DIR", build_dir)
        .envs(stage_env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the Dockerfile's `{step}` failed in its own context:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command line as the shell splits and expands it when it is pasted, in the repository
/// (`$(git rev-parse …)` and all).
fn shell_words(line: &str) -> Vec<String> {
    let out = Command::new("sh")
        .args(["-c", &format!("set -- {line}; printf '%s\\0' \"$@\"")])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "sh could not read {line:?}: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_terminator('\0')
        .map(str::to_owned)
        .collect()
}

/// `ENV` and `ARG` of a stage (an `ARG` as `build_args` give it, else its default), `${NAME}`
/// substituted; absolute paths mapped into `image`.
fn stage_env(
    stage: &[(String, String)],
    build_args: &[(String, String)],
    image: Option<&Path>,
) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = Vec::new();
    for (keyword, rest) in stage {
        if keyword != "ENV" && keyword != "ARG" {
            continue;
        }
        for assignment in rest.split_whitespace() {
            let (name, value) = assignment.split_once('=').unwrap_or((assignment, ""));
            let given = build_args
                .iter()
                .find(|(n, _)| n == name && keyword == "ARG");
            let mut value = given.map_or(value, |(_, v)| v.as_str()).to_owned();
            for (known, v) in &vars {
                value = value.replace(&format!("${{{known}}}"), v);
            }
            if let (Some(image), true) = (image, value.starts_with('/')) {
                value = inside(image, &value).display().to_string();
            }
            vars.retain(|(n, _)| n != name);
            vars.push((name.to_owned(), value));
        }
    }
    vars
}

#[tokio::test]
async fn the_dockerfile_builds_from_its_own_context_and_its_image_runs_as_deploy_readme_says() {
    let stages = dockerfile_stages(&repo("deploy/Dockerfile"));
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let context = dockerignore();
    for big in [
        "target/release/specgate",
        ".git/HEAD",
        "audit/specgate-audit.jsonl",
        "tests/deploy.rs",
    ] {
        assert!(!in_context(&context, big), "{big} is in the build context");
    }
    let scratch = tempfile::tempdir().unwrap();
    let mut roots = HashMap::new();

    // The build stage, as `docker build` runs it, with --offline against the local registry
    // cache, sharing this build's compiled dependencies (build-dir) but not its output.
    let build = &stages[0];
    let name = build[0].1.rsplit(' ').next().unwrap().to_owned();
    // The context is copied into an emptied directory outside this checkout (cargo would read
    // a .cargo/config.toml above it, which the image never sees), at the same path every run
    // so that cargo can tell an unchanged source; the build directory, under target/, is kept.
    let checkout = {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        env!("CARGO_MANIFEST_DIR").hash(&mut hasher);
        hasher.finish()
    };
    let root = std::env::temp_dir().join(format!("specgate-dockerfile-stage-{checkout:016x}"));
    if root.exists() {
        std::fs::remove_dir_all(&root).unwrap();
    }
    let build_dir = target_dir().join("dockerfile-build-stage");
    seed_build_dir(&target_dir().join("release"), &build_dir.join("release"));
    let mut workdir = "/".to_owned();
    // deploy/README's `docker build`: its Dockerfile, its context, its --build-args (evaluated
    // by the shell, as when it is pasted).
    let readme = repo("deploy/README.md");
    let docker_build = shell_words(
        readme
            .lines()
            .find(|l| l.starts_with("docker build "))
            .expect("deploy/README shows a docker build"),
    );
    let flag = |name: &str| -> Vec<&str> {
        docker_build
            .windows(2)
            .filter(|w| w[0] == name)
            .map(|w| w[1].as_str())
            .collect()
    };
    assert_eq!(flag("-f"), ["deploy/Dockerfile"]);
    assert_eq!(flag("-t"), ["specgate"], "the image docker run runs");
    assert_eq!(
        docker_build.last().map(String::as_str),
        Some("."),
        "the context is the repository root"
    );
    let build_args: Vec<(String, String)> = flag("--build-arg")
        .into_iter()
        .map(|arg| {
            let (name, value) = arg.split_once('=').unwrap();
            (name.to_owned(), value.to_owned())
        })
        .collect();
    let sha = &build_args
        .iter()
        .find(|(n, _)| n == "SPECGATE_GIT_SHA")
        .expect("the commit comes in as a build argument")
        .1;
    let env = stage_env(build, &build_args, None);
    for (keyword, rest) in build {
        match keyword.as_str() {
            "WORKDIR" => workdir = rest.clone(),
            "COPY" => {
                copy(rest, &context, &root, &workdir, &roots);
            }
            "RUN" => {
                for step in rest.split("&&").map(str::trim) {
                    let words: Vec<&str> = step.split_whitespace().collect();
                    match words.as_slice() {
                        ["mkdir", "-p", dirs @ ..] => {
                            for dir in dirs {
                                std::fs::create_dir_all(inside(&root, dir)).unwrap();
                            }
                        }
                        ["cargo", args @ ..] => {
                            run_cargo(args, &inside(&root, &workdir), &build_dir, &env, step)
                        }
                        _ => panic!("RUN step {step:?}: this test does not know how to run it"),
                    }
                }
            }
            _ => {}
        }
    }
    roots.insert(name, root);

    // The runtime stage's files and environment, in a directory standing for its root.
    let runtime = &stages[1];
    let image = scratch.path().join("image");
    let mut copied = Vec::new();
    for (keyword, rest) in runtime {
        if keyword == "COPY" {
            copied.push(copy(rest, &context, &image, "/", &roots));
        }
    }
    let words = |keyword: &str| -> Vec<String> {
        let (_, rest) = runtime.iter().find(|(k, _)| k == keyword).unwrap();
        serde_json::from_str(rest).unwrap_or_else(|e| panic!("{keyword} {rest}: {e}"))
    };
    let entrypoint = inside(&image, &words("ENTRYPOINT")[0]);
    assert!(
        entrypoint.is_file(),
        "{} is not in the image",
        entrypoint.display()
    );
    let version = Command::new(&entrypoint).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        !sha.is_empty() && version.contains(sha.as_str()),
        "{version} names {sha:?}"
    );

    // deploy/README's `docker run`: its -e flags are the environment, what follows the image
    // name the arguments. The published port is Docker's; here the listener takes port 0.
    let run = shell_words(
        readme
            .lines()
            .find(|l| l.starts_with("docker run "))
            .expect("deploy/README shows a docker run"),
    );
    let mut env = stage_env(runtime, &build_args, Some(&image));
    let mut args = Vec::new();
    let mut flags = run.iter().map(String::as_str).skip(2);
    while let Some(flag) = flags.next() {
        match flag {
            "-e" => {
                let (k, v) = flags.next().unwrap().split_once('=').unwrap();
                env.push((k.to_owned(), v.replace(":8080", ":0")));
            }
            "-p" => {
                flags.next();
            }
            "--rm" => {}
            image_name => {
                assert_eq!(image_name, "specgate", "{run:?}");
                args.extend(flags.by_ref().map(str::to_owned));
            }
        }
    }
    assert_eq!(args, ["serve", "--mock"], "{run:?}");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The audit directory is in the image, made by a COPY owned by the user the image runs as
    // (specgate does not make it there: a root-owned volume would refuse every create).
    let user = runtime
        .iter()
        .find(|(k, _)| k == "USER")
        .map(|(_, u)| u.clone())
        .expect("a USER");
    let audit_log = runtime
        .iter()
        .filter(|(k, _)| k == "ENV")
        .flat_map(|(_, rest)| rest.split_whitespace())
        .find_map(|a| a.strip_prefix("SPECGATE_AUDIT_LOG="))
        .expect("the image sets SPECGATE_AUDIT_LOG");
    let audit_dir = Path::new(audit_log).parent().unwrap();
    assert!(
        inside(&image, audit_dir.to_str().unwrap()).is_dir(),
        "{audit_dir:?} not in the image"
    );
    let (_, owner) = copied
        .iter()
        .filter(|(dest, _)| audit_dir.starts_with(dest.trim_end_matches('/')))
        .max_by_key(|(dest, _)| dest.len())
        .expect("a COPY makes the audit directory");
    assert_eq!(
        owner.as_deref(),
        Some(user.as_str()),
        "--chown of the audit directory"
    );
    let gw = support::Gateway::launch_program(&entrypoint, &args, &env);
    assert_eq!(
        gw.addr.ip().to_string(),
        "0.0.0.0",
        "it listens where -e says"
    );

    // The HEALTHCHECK: the image's own binary asks its admin listener.
    let healthcheck = runtime
        .iter()
        .find(|(k, _)| k == "HEALTHCHECK")
        .map(|(_, rest)| rest.split_once("CMD ").unwrap().1)
        .unwrap();
    let probe: Vec<String> = serde_json::from_str(healthcheck).unwrap();
    let out = Command::new(inside(&image, &probe[0]))
        .args(&probe[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("SPECGATE_ADMIN_LISTEN", gw.admin.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "HEALTHCHECK failed: {out:?}");

    // And it answers a create from the spec baked into the image, auditing where ENV says.
    let answer = support::client()
        .post(format!(
            "http://127.0.0.1:{}/api/3/connections",
            gw.addr.port()
        ))
        .header("content-type", "application/json")
        .body(support::VALID_CREATE)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    let audit = env.iter().find(|(k, _)| k == "SPECGATE_AUDIT_LOG").unwrap();
    assert!(audit.1.starts_with(image.to_str().unwrap()));
    gw.wait_for_log("request", 1);
    assert!(Path::new(&audit.1).is_file(), "no audit log at {}", audit.1);
}
