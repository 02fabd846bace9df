//! Servers a run left behind when it could not clean up: a test binary killed by a time-out, a
//! `lockcheck faults` run killed by a signal it cannot catch. `Drop` removes a server on every
//! path that unwinds, Ctrl-C included where the command handles it; this covers the paths that
//! do not.
//!
//! - Every container and network is labelled with its owner: this process, by pid and start
//!   time (a pid alone may be reused). The first server a process starts in Docker first removes
//!   the containers and networks whose owner is no longer running.
//! - Every server process is started under `setpriv --pdeathsig KILL`, so the kernel kills it
//!   when the thread that started it ends, however it ends.

use std::collections::BTreeSet;
use std::path::Path;

use tokio::sync::OnceCell;

use crate::docker::docker;

/// The label that names the process owning a container or network.
pub(crate) const OWNER_LABEL: &str = "lockcheck.owner";

/// This process as an owner: `pid-starttime`.
pub(crate) fn owner() -> String {
    let pid = std::process::id();
    format!("{pid}-{}", start_time(pid).unwrap_or(0))
}

/// The fields of `/proc/PID/stat` after the command name (field 3 on: state, parent pid, …).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: count after its end.
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().map(str::to_owned).collect())
}

/// A process's start time (clock ticks since boot, `/proc/PID/stat` field 22), which tells a
/// reused pid from the original.
fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// The child processes of `pid` that are still running (a zombie not yet reaped is gone):
/// what a test looks at to show a run left no process behind.
pub fn live_children(pid: u32) -> Vec<u32> {
    let Ok(processes) = std::fs::read_dir("/proc") else { return Vec::new() };
    let parent = pid.to_string();
    processes
        .flatten()
        .filter_map(|process| {
            let child = process.file_name().to_str()?.parse().ok()?;
            let fields = stat_fields(child)?;
            (fields.len() > 1 && fields[0] != "Z" && fields[1] == parent).then_some(child)
        })
        .collect()
}

/// Whether the owner a label names is still running.
fn is_running(owner: &str) -> bool {
    let Some((pid, started)) = owner.split_once('-') else { return false };
    let (Ok(pid), Ok(started)) = (pid.parse::<u32>(), started.parse::<u64>()) else { return false };
    start_time(pid).is_some_and(|now| now == started || started == 0)
}

/// What [`remove_orphans`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Container ids.
    pub containers: Vec<String>,
    /// Network ids.
    pub networks: Vec<String>,
}

/// Removes every container and network labelled with an owner that is no longer running.
pub async fn remove_orphans() -> Result<Removed, String> {
    remove_where(|owner| !is_running(owner)).await
}

/// Removes every container and network this process started and still owns: for an
/// interrupted run, whose servers may be caught half-started (a container created, its start
/// cancelled before a handle to it existed).
pub async fn remove_own() -> Result<Removed, String> {
    let me = owner();
    remove_where(|owner| owner == me).await
}

/// Removes the labelled containers, then networks (a network with endpoints cannot be
/// removed), whose owner `doomed` picks.
async fn remove_where(doomed: impl Fn(&str) -> bool) -> Result<Removed, String> {
    let mut removed = Removed::default();
    let format = format!("{{{{.ID}}}} {{{{.Label \"{OWNER_LABEL}\"}}}}");
    let filter = format!("label={OWNER_LABEL}");
    let containers = docker(&["ps", "--all", "--filter", &filter, "--format", &format]).await?;
    for id in owned_by(&containers, &doomed) {
        if removal(docker(&["rm", "--force", "--volumes", &id]).await)? {
            removed.containers.push(id);
        }
    }
    let networks = docker(&["network", "ls", "--filter", &filter, "--format", &format]).await?;
    for id in owned_by(&networks, &doomed) {
        if removal(docker(&["network", "rm", &id]).await)? {
            removed.networks.push(id);
        }
    }
    Ok(removed)
}

/// Whether a removal removed something: one that another process (another run's sweep) is
/// doing, or has done, is not an error.
fn removal(result: Result<String, String>) -> Result<bool, String> {
    match result {
        Ok(_) => Ok(true),
        Err(error)
            if error.contains("already in progress") || error.contains("No such") || error.contains("not found") =>
        {
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

/// The ids in `listing` (lines of `ID OWNER`) whose owner `doomed` picks.
fn owned_by(listing: &str, doomed: impl Fn(&str) -> bool) -> BTreeSet<String> {
    listing
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, owner)| doomed(owner.trim()))
        .map(|(id, _)| id.to_owned())
        .collect()
}

static SWEPT: OnceCell<()> = OnceCell::const_new();

/// [`remove_orphans`], once per process, before its first container; a failure is printed,
/// not fatal (it concerns servers of other runs).
pub(crate) async fn sweep_once() {
    SWEPT
        .get_or_init(|| async {
            match remove_orphans().await {
                Ok(removed) if removed != Removed::default() => eprintln!(
                    "lockcheck: removed {} container(s) and {} network(s) left behind by runs that ended without cleaning up",
                    removed.containers.len(),
                    removed.networks.len()
                ),
                Ok(_) => {}
                Err(error) => eprintln!("lockcheck: could not look for servers left behind by earlier runs: {error}"),
            }
        })
        .await;
}

/// The command that starts `binary` so that it dies with the thread that started it:
/// `setpriv --pdeathsig KILL -- binary`, or the binary alone where `setpriv` is missing.
pub(crate) fn dying_with_parent(binary: &Path) -> tokio::process::Command {
    const SETPRIV: &str = "/usr/bin/setpriv";
    if Path::new(SETPRIV).exists() {
        let mut command = tokio::process::Command::new(SETPRIV);
        command.args(["--pdeathsig", "KILL", "--"]).arg(binary);
        command
    } else {
        tokio::process::Command::new(binary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_running_and_a_dead_or_reused_pid_is_not() {
        assert!(is_running(&owner()), "{}", owner());
        // The start time does not match: the pid was reused by another process.
        let pid = std::process::id();
        assert!(!is_running(&format!("{pid}-1")));
        // Above the kernel's pid limit (2^22): no such process.
        assert!(!is_running("4194305-5"));
        assert!(!is_running("garbage"));
    }

    #[test]
    fn a_spawned_child_is_live_until_it_is_reaped() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep runs");
        assert!(live_children(std::process::id()).contains(&child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!live_children(std::process::id()).contains(&child.id()));
    }

    #[test]
    fn orphans_are_the_ids_whose_owner_is_gone() {
        let listing = format!("aaa {}\nbbb 4194305-5\nccc \nddd nonsense", owner());
        let ids: Vec<String> = owned_by(&listing, |owner| !is_running(owner)).into_iter().collect();
        assert_eq!(ids, ["bbb", "ccc", "ddd"]);
        let ids: Vec<String> = owned_by(&listing, |owner| owner == super::owner()).into_iter().collect();
        assert_eq!(ids, ["aaa"]);
    }
}
