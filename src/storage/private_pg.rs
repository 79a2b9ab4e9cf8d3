//! A private PostgreSQL cluster in a local data directory, so that Helpline
//! (and its tests) run on a fresh machine with no configuration at all.
//!
//! The cluster is created once with `initdb` and started with `pg_ctl`. It
//! trusts whoever reaches it, so nobody else may: it listens on no TCP
//! address, only on a Unix socket in a directory of its own that only the
//! cluster's user can enter (and root, who is that user's superior anyway).
//! Its "port" only names the socket file.
//! If it is already running (another Helpline process, a test binary) it is
//! reused. PostgreSQL refuses to run as root, so when we are root its
//! programs run as the `postgres` user (or `nobody`) and the directory is
//! handed to that user.

use std::{
    ffi::CString,
    fs::{self, File},
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

#[derive(Debug, thiserror::Error)]
pub enum PrivatePgError {
    #[error(
        "no DATABASE_URL is set and no PostgreSQL server programs (initdb, pg_ctl) were found on PATH \
         or under /usr/lib/postgresql/*/bin: install PostgreSQL (e.g. `apt-get install postgresql`) \
         or set DATABASE_URL=postgres://user:password@host:5432/helpline"
    )]
    NoBinaries,
    #[error(
        "PostgreSQL refuses to run as root, so it runs as uid {uid}, which cannot enter {dir}: \
         set HELPLINE_DATA_DIR to a directory that user can reach (e.g. under /var/lib or /tmp)"
    )]
    Unreachable { uid: u32, dir: String },
    #[error("{0}")]
    Io(String),
    #[error("{step} failed ({status}); see {log}")]
    Command {
        step: &'static str,
        status: String,
        log: String,
    },
}

/// A running private cluster.
#[derive(Debug)]
pub struct PrivatePostgres {
    pub data_dir: PathBuf,
    /// Where the cluster's socket is: a directory only its user can enter.
    pub socket_dir: PathBuf,
    pub port: u16,
    bin_dir: PathBuf,
    run_as: Option<(u32, u32)>,
    /// Whether this process started it (and so should stop it).
    pub started_here: bool,
}

impl PrivatePostgres {
    /// Creates the cluster under `dir` if needed and makes sure it runs.
    /// Blocking: call it from `spawn_blocking` inside a runtime.
    pub fn ensure_running(dir: &Path) -> Result<Self, PrivatePgError> {
        let bin_dir = find_bin_dir(std::env::var_os("PATH"), Path::new("/usr/lib/postgresql"))
            .ok_or(PrivatePgError::NoBinaries)?;
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let dir = dir.canonicalize().map_err(|e| io_err(dir, e))?;
        let run_as = unprivileged_user();
        if let Some((uid, _)) = run_as {
            if !reachable_by_others(&dir) {
                return Err(PrivatePgError::Unreachable {
                    uid,
                    dir: dir.display().to_string(),
                });
            }
        }

        // Several processes may start at once (test binaries, instances):
        // one at a time creates or starts the cluster.
        let lock = File::create(dir.join("cluster.lock")).map_err(|e| io_err(&dir, e))?;
        lock.lock().map_err(|e| io_err(&dir, e))?;

        let data_dir = dir.join("pgdata");
        let log = dir.join("postgres.log");
        let socket_dir = dir.join("socket");
        private_dir(&socket_dir)?;
        if let Some((uid, gid)) = run_as {
            chown(&dir, uid, gid)?;
            chown(&socket_dir, uid, gid)?;
            if log.exists() {
                chown(&log, uid, gid)?;
            }
        }
        let mut pg = Self {
            socket_dir,
            data_dir,
            port: 0,
            bin_dir,
            run_as,
            started_here: false,
        };

        if !pg.data_dir.join("PG_VERSION").exists() {
            pg.run(
                "initdb",
                Command::new(pg.bin("initdb"))
                    .arg("-D")
                    .arg(&pg.data_dir)
                    .args([
                        "-U",
                        "postgres",
                        "--auth=trust",
                        "-E",
                        "UTF8",
                        "--no-instructions",
                    ]),
                &log,
            )?;
        }

        if let Some(port) = pg.running_port() {
            pg.port = port;
            // Started by an older Helpline, on TCP: start it again on the
            // socket alone.
            if !pg.socket_dir.join(format!(".s.PGSQL.{port}")).exists() {
                pg.restart()?;
            }
            return Ok(pg);
        }

        pg.port = free_port().map_err(|e| io_err(&dir, e))?;
        pg.start()?;
        Ok(pg)
    }

    /// Starts the cluster on its port (again, after `stop`). Blocking.
    pub fn start(&mut self) -> Result<(), PrivatePgError> {
        let log = self.data_dir.with_file_name("postgres.log");
        let options = self.server_options();
        self.run(
            "pg_ctl start",
            Command::new(self.bin("pg_ctl"))
                .arg("start")
                .args(["-w", "-t", "60", "-D"])
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&log)
                .args(["-o", &options]),
            &log,
        )?;
        self.started_here = true;
        Ok(())
    }

    /// A URL for the cluster's `postgres` database, or for `database`,
    /// through its socket.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/{database}?host={}",
            self.port,
            self.socket_dir.display()
        )
    }

    /// Stops the cluster if this process started it.
    pub fn stop(&self) {
        if self.started_here {
            let log = self.data_dir.with_file_name("postgres.log");
            let _ = self.run(
                "pg_ctl stop",
                Command::new(self.bin("pg_ctl"))
                    .arg("stop")
                    .args(["-m", "fast", "-D"])
                    .arg(&self.data_dir),
                &log,
            );
        }
    }

    /// Restarts the server on the same port (`pg_ctl restart -m fast`): every
    /// connection is cut, as in a failover or an upgrade.
    pub fn restart(&self) -> Result<(), PrivatePgError> {
        let log = self.data_dir.with_file_name("postgres.log");
        self.run(
            "pg_ctl restart",
            Command::new(self.bin("pg_ctl"))
                .arg("restart")
                .args(["-m", "fast", "-w", "-t", "60", "-D"])
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&log)
                .args(["-o", &self.server_options()]),
            &log,
        )
    }

    fn server_options(&self) -> String {
        format!(
            "-p {} -c listen_addresses='' -c unix_socket_directories='{}' \
             -c unix_socket_permissions=0700 -c max_connections=300",
            self.port,
            self.socket_dir.display()
        )
    }

    /// The port of a postmaster already serving this data directory.
    fn running_port(&self) -> Option<u16> {
        let status = self
            .command(
                Command::new(self.bin("pg_ctl"))
                    .arg("status")
                    .arg("-D")
                    .arg(&self.data_dir),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        if !status.success() {
            return None;
        }
        // postmaster.pid: line 4 is the port.
        let pid_file = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        pid_file.lines().nth(3)?.trim().parse().ok()
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn command<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.current_dir(self.data_dir.parent().unwrap_or(Path::new("/")))
    }

    fn run(&self, step: &'static str, cmd: &mut Command, log: &Path) -> Result<(), PrivatePgError> {
        let output = self
            .command(cmd)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| PrivatePgError::Io(format!("{step}: {e}")))?;
        if output.status.success() {
            return Ok(());
        }
        let mut detail = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if detail.is_empty() {
            detail = output.status.to_string();
        }
        Err(PrivatePgError::Command {
            step,
            status: detail,
            log: log.display().to_string(),
        })
    }
}

/// `pg_ctl` and `initdb` on `path`, else the newest `{lib_root}/*/bin`.
fn find_bin_dir(path: Option<std::ffi::OsString>, lib_root: &Path) -> Option<PathBuf> {
    let has_all = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(path) = path {
        for dir in std::env::split_paths(&path) {
            if has_all(&dir) {
                // Follow symlinks (Debian links /usr/local/bin/initdb into
                // /usr/lib/postgresql/N/bin) so sibling programs are found.
                let real = dir.join("pg_ctl").canonicalize().ok()?;
                return real.parent().map(Path::to_path_buf);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(lib_root)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_all(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

/// Whether a user other than the owner can enter `dir` (every ancestor
/// searchable by others).
pub fn reachable_by_others(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    dir.ancestors().skip(1).all(|a| {
        fs::metadata(a)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

/// Whether `ensure_running` will have to run PostgreSQL as another user.
pub fn runs_as_other_user() -> bool {
    unprivileged_user().is_some()
}

/// PostgreSQL will not run as root: pick the `postgres` user, else `nobody`.
fn unprivileged_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    ["postgres", "nobody"].iter().find_map(|name| {
        let name = CString::new(*name).ok()?;
        // SAFETY: getpwnam returns null or a pointer to a static record we
        // copy out of immediately.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if pw.is_null() {
            return None;
        }
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        Some((uid, gid))
    })
}

/// Creates `dir` if needed, enterable by its owner alone.
fn private_dir(dir: &Path) -> Result<(), PrivatePgError> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| io_err(dir, e))
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), PrivatePgError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| io_err(path, e))
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn io_err(path: &Path, e: std::io::Error) -> PrivatePgError {
    PrivatePgError::Io(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_postgresql_programs_the_error_says_how_to_fix_it() {
        let empty = std::env::temp_dir().join(format!("helpline-no-pg-{}", std::process::id()));
        fs::create_dir_all(&empty).unwrap();
        assert_eq!(
            find_bin_dir(Some(empty.clone().into_os_string()), &empty),
            None
        );
        let message = PrivatePgError::NoBinaries.to_string();
        assert!(!message.contains('\n'), "one line: {message}");
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains("DATABASE_URL="), "{message}");
    }

    #[test]
    fn programs_are_found_under_the_newest_versioned_directory() {
        let root =
            std::env::temp_dir().join(format!("helpline-pg-versions-{}", std::process::id()));
        for version in ["13", "16", "9"] {
            let bin = root.join(version).join("bin");
            fs::create_dir_all(&bin).unwrap();
            for program in ["initdb", "pg_ctl", "postgres"] {
                fs::write(bin.join(program), "").unwrap();
            }
        }
        assert_eq!(find_bin_dir(None, &root), Some(root.join("16").join("bin")));
    }
}
