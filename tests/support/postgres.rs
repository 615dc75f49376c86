//! The PostgreSQL that audit-shipping tests talk to, found the way a fresh machine allows:
//!
//! 1. `SPECGATE_TEST_POSTGRES_URL` (`postgresql://user[:password]@host:port/db`, a superuser
//!    over TCP) when it is set;
//! 2. otherwise a throwaway server of this process's own, started from the machine's
//!    `initdb`/`pg_ctl` (on `PATH` or under `/usr/lib/postgresql/*/bin`) in a temporary
//!    directory on a free port, and stopped and removed when the process exits;
//! 3. otherwise none: each test that needs it passes without running, after one loud line on
//!    stderr, unless `SPECGATE_TEST_REQUIRE_POSTGRES` is set (as `.ci/run` does), when it fails.
//!
//! Shared by the library's unit tests, the integration tests and the benches (`#[path]`).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// Where the tests' PostgreSQL is.
#[derive(Debug)]
pub struct Server {
    pub host: String,
    pub port: u16,
    /// `user` or `user:password`, as it goes before the `@`.
    userinfo: String,
    pub dbname: String,
    /// Holding this keeps the throwaway server; the watchdog stops it when the pipe closes.
    _watchdog: Option<Mutex<(Child, ChildStdin)>>,
}

impl Server {
    /// `host:port`, for a TCP connection of the test's own (a proxy in front of it).
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The database's URL, without parameters.
    pub fn url(&self) -> String {
        self.url_at(&self.addr())
    }

    /// [`Server::url`] through another `host:port` (a proxy).
    pub fn url_at(&self, addr: &str) -> String {
        format!("postgresql://{}@{addr}/{}", self.userinfo, self.dbname)
    }

    /// The URL as `role`, a role the test made with `password`.
    pub fn url_as(&self, role: &str, password: &str) -> String {
        format!(
            "postgresql://{role}:{password}@{}/{}",
            self.addr(),
            self.dbname
        )
    }
}

/// `url` without its user and password, for a message.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if scheme < at => format!("{}…{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

const URL_VAR: &str = "SPECGATE_TEST_POSTGRES_URL";
const REQUIRE_VAR: &str = "SPECGATE_TEST_REQUIRE_POSTGRES";

/// The tests' PostgreSQL, started on first use; `None` (said once, loudly) when there is none
/// and none is required.
pub fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    match SERVER.get_or_init(find) {
        Ok(server) => Some(server),
        // A URL that was set but cannot be used is a mistake to fix, not a reason to skip.
        Err(why)
            if std::env::var_os(REQUIRE_VAR).is_some() || std::env::var_os(URL_VAR).is_some() =>
        {
            panic!("no PostgreSQL for the tests: {why}")
        }
        Err(why) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                // Straight to the process's stderr: the test harness captures `eprintln!`.
                let _ = writeln!(
                    std::io::stderr(),
                    "\n*** SKIPPED: the PostgreSQL audit-shipping tests of this binary did not run: {why}. \
                     Set {URL_VAR} to a server (a superuser over TCP; roles the tests make log in \
                     with a password), or install PostgreSQL's server \
                     binaries (initdb, pg_ctl) so a throwaway one can be started. ***\n"
                );
            });
            None
        }
    }
}

fn find() -> Result<Server, String> {
    if let Ok(url) = std::env::var(URL_VAR) {
        return from_url(&url);
    }
    let bin = binaries().ok_or_else(|| {
        format!("{URL_VAR} is not set and no initdb/pg_ctl was found on PATH or under /usr/lib/postgresql")
    })?;
    throwaway(&bin)
}

fn from_url(url: &str) -> Result<Server, String> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| format!("{URL_VAR} is not a PostgreSQL URL: {e}"))?;
    let host = match config.get_hosts() {
        [tokio_postgres::config::Host::Tcp(host)] => host.clone(),
        _ => return Err(format!("{URL_VAR} must name one TCP host")),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres").to_owned();
    let userinfo = match config.get_password() {
        Some(password) => format!("{user}:{}", String::from_utf8_lossy(password)),
        None => user,
    };
    Ok(Server {
        host,
        port,
        userinfo,
        dbname: config.get_dbname().unwrap_or("postgres").to_owned(),
        _watchdog: None,
    })
}

/// The directory holding `initdb` and `pg_ctl`: on PATH, else the newest Debian install.
fn binaries() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    });
    on_path.or_else(|| {
        let mut installed: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
            .filter(|(_, bin)| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
            .collect();
        installed.sort();
        installed.pop().map(|(_, bin)| bin)
    })
}

/// PostgreSQL refuses to run as root: as root, the server runs as `postgres` (or `nobody`).
fn run_as() -> Option<(String, u32, u32)> {
    // /proc/self belongs to the process's effective user (no unsafe geteuid: the library
    // that includes this file forbids unsafe code).
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").map_or(true, |m| m.uid() != 0) {
        return None;
    }
    for user in ["postgres", "nobody"] {
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, user]).output().ok()?;
            String::from_utf8(out.stdout).ok()?.trim().parse().ok()
        };
        if let (Some(uid), Some(gid)) = (id("-u"), id("-g")) {
            return Some((user.to_owned(), uid, gid));
        }
    }
    None
}

/// `program args…` as the server's user.
fn command(bin: &Path, program: &str, user: &Option<(String, u32, u32)>) -> Command {
    match user {
        None => Command::new(bin.join(program)),
        Some((_, uid, gid)) => {
            let mut command = Command::new("setpriv");
            command
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg(bin.join(program));
            command
        }
    }
}

fn run(mut command: Command, what: &str) -> Result<(), String> {
    let out = command
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn throwaway(bin: &Path) -> Result<Server, String> {
    let user = run_as();
    let dir = tempfile::Builder::new()
        .prefix("specgate-test-pg-")
        .tempdir()
        .map_err(|e| format!("a temporary directory: {e}"))?
        // Removed by the watchdog when the process exits, not when this value drops.
        .keep();
    if let Some((_, uid, gid)) = &user {
        std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    let data = dir.join("data");
    // From here on the watchdog removes the directory (and stops any server) however this
    // ends: returning the error drops its pipe.
    let watchdog = watchdog(bin, &user, &dir, &data)?;
    // Over TCP a password, so that no other user of this machine can log in as a superuser
    // while the tests run; the socket directory is the tests' own.
    let password = random_hex();
    let pwfile = dir.join("pwfile");
    std::fs::write(&pwfile, format!("{password}\n")).map_err(|e| format!("{e}"))?;
    if let Some((_, uid, gid)) = &user {
        std::os::unix::fs::chown(&pwfile, Some(*uid), Some(*gid)).map_err(|e| format!("{e}"))?;
    }
    let mut initdb = command(bin, "initdb", &user);
    initdb
        .arg("-D")
        .arg(&data)
        .arg("--pwfile")
        .arg(&pwfile)
        .args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C",
        ]);
    run(initdb, "initdb")?;
    // A free port can be taken between choosing and binding it: choose again a few times.
    let mut last = String::new();
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a free port: {e}"))?
            .port();
        let mut start = command(bin, "pg_ctl", &user);
        start.arg("-D").arg(&data).arg("-l").arg(dir.join("log")).args([
            "-w",
            "-t",
            "60",
            "-o",
            &format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c full_page_writes=off -c max_connections=200",
                dir.display()
            ),
            "start",
        ]);
        match run(start, "pg_ctl start") {
            Ok(()) => {
                return Ok(Server {
                    host: "127.0.0.1".into(),
                    port,
                    userinfo: format!("postgres:{password}"),
                    dbname: "postgres".into(),
                    _watchdog: Some(Mutex::new(watchdog)),
                });
            }
            Err(e) => {
                let mut log = String::new();
                let _ = std::fs::File::open(dir.join("log"))
                    .and_then(|mut f| f.read_to_string(&mut log));
                last = format!("{e}; server log: {}", log.trim());
                // A start that timed out may still come up: stop it before trying again.
                let mut stop = command(bin, "pg_ctl", &user);
                stop.arg("-D").arg(&data).args(["-m", "immediate", "stop"]);
                let _ = run(stop, "pg_ctl stop");
            }
        }
    }
    Err(last)
}

/// 128 random bits, as hex, from the kernel.
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A shell that waits for its stdin to close (this process exiting, however it exits), then
/// stops the server and removes its directory.
fn watchdog(
    bin: &Path,
    user: &Option<(String, u32, u32)>,
    dir: &Path,
    data: &Path,
) -> Result<(Child, ChildStdin), String> {
    // Deaf to the signals a Ctrl-C or a CI job's kill sends the test's process group: it must
    // outlive the tests to clean up after them.
    let script = r#"trap '' INT TERM HUP; read _ignored; "$0" -D "$1" -m immediate stop >/dev/null 2>&1; rm -rf "$2""#;
    let mut shell = match user {
        None => Command::new("sh"),
        Some((_, uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("sh");
            c
        }
    };
    use std::os::unix::process::CommandExt;
    let mut child = shell
        .process_group(0)
        .current_dir(std::env::temp_dir())
        .arg("-c")
        .arg(script)
        .arg(bin.join("pg_ctl"))
        .arg(data)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("the cleanup watchdog: {e}"))?;
    let stdin = child.stdin.take().expect("piped");
    Ok((child, stdin))
}
