//! The processes of a cluster: starting a node detached (its own session, its log and pid file
//! under the cluster dir), finding it running, signalling it and waiting until it is gone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::ProgressBar;

use super::plan::Node;

/// The pid in `node`'s pid file, if that process is still running (and is that node: the pid
/// was not reused by another program). A zombie counts as gone.
pub fn running_pid(node: &Node) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(node.pid_path()).ok()?.trim().parse().ok()?;
    is_alive(pid, &node.config_path).then_some(pid)
}

pub(crate) fn is_alive(pid: u32, config_path: &Path) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if matches!(state, Some('Z' | 'X') | None) {
            return false;
        }
        let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
        let needle = config_path.as_os_str().as_encoded_bytes();
        return cmdline.windows(needle.len()).any(|window| window == needle);
    }
    // No /proc (not Linux): trust the pid.
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

pub(crate) fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: a plain syscall on a pid we started and just checked.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

/// Starts `node` detached: its own session (so a Ctrl-C or hang-up of the terminal does not
/// reach it), stdout and stderr appended to its log, its pid in its pid file.
pub(crate) fn spawn(node: &Node) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(&node.dir).with_context(|| format!("creating {}", node.dir.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node.log_path())
        .with_context(|| format!("opening {}", node.log_path().display()))?;
    let exe = std::env::current_exe().context("finding the meridian binary")?;
    let mut command = std::process::Command::new(exe);
    command
        .args(node.args())
        .current_dir(&node.dir)
        // The spec says where each node is; an IDC from the environment would put every node in one.
        .env_remove("MERIDIAN_IDC")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().with_context(|| format!("starting {}", node.name))?;
    let pid = child.id();
    // The child is not waited for: it outlives this command. Dropping `Child` leaves it running.
    drop(child);
    std::fs::write(node.pid_path(), format!("{pid}\n"))
        .with_context(|| format!("writing {}", node.pid_path().display()))?;
    Ok(pid)
}

/// Waits up to `timeout` for `pid` (of `node`) to be gone, then SIGKILLs it; whether it went by
/// itself.
pub(crate) async fn wait_gone(node: &Node, pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_alive(pid, &node.config_path) {
        if Instant::now() >= deadline {
            signal(pid, libc::SIGKILL);
            while is_alive(pid, &node.config_path) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Sends `sig` to `node` and waits up to `timeout` for it to be gone; SIGKILL after that.
/// Returns the pid it stopped and whether it went by itself, or None if it was not running.
pub(crate) async fn stop(node: &Node, sig: libc::c_int, timeout: Duration) -> Option<(u32, bool)> {
    let pid = running_pid(node)?;
    signal(pid, sig);
    Some((pid, wait_gone(node, pid, timeout).await))
}

/// Prints `line` above the progress bar, or plainly when the bar is hidden (not a terminal).
pub(crate) fn say(progress: &ProgressBar, line: String) {
    if progress.is_hidden() {
        println!("{line}");
    } else {
        progress.println(line);
    }
}

pub(crate) fn log_tail(node: &Node, lines: usize) -> String {
    let text = std::fs::read_to_string(node.log_path()).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n    ")
}
