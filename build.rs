//! Records the commit the binary is built from, for `--version` and `specgate_build_info`.
//! `SPECGATE_GIT_SHA` wins (for builds without a checkout, such as a Docker context);
//! otherwise `git` is asked, and `unknown` is used when neither answers.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SPECGATE_GIT_SHA");
    let sha = std::env::var("SPECGATE_GIT_SHA")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    // Rebuild when HEAD moves: HEAD itself (a branch switch) and the ref it points at (a commit).
    // Only paths that exist: cargo counts a missing one as changed, and would rebuild the crate
    // every time (a fresh clone has no packed-refs).
    let watch = |path: String| {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    };
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        watch(head);
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
        watch(format!("{common}/refs/heads"));
        watch(format!("{common}/packed-refs"));
    }
    println!("cargo:rustc-env=SPECGATE_GIT_SHA={sha}");
}
