//! Dropping root privileges after binding (Hipache's `user` and `group`): the listeners on privileged ports
//! and the access-log file are opened as root, then the process serves as an unprivileged user.

use nix::unistd::{getuid, setgid, setgroups, setuid, Gid, Group, Uid, User};

use crate::config::RunAs;

/// Switch to `run_as` when running as root; a no-op otherwise (Hipache only switched when started as root).
/// `root` or `0` keeps root. The error names the user or group that could not be used.
pub fn drop_to(run_as: &RunAs) -> Result<(), String> {
    if !getuid().is_root() || run_as.user == "root" || run_as.user == "0" {
        return Ok(());
    }
    if run_as.user.is_empty() {
        return Err("`user` is empty while running as root: set it to the account to serve as, or to \"root\" \
                    (Hipache's ROOT_NEEDS_ROOT)"
            .into());
    }
    let user = find_user(&run_as.user)?;
    let gid = match &run_as.group {
        Some(group) => find_group(group)?,
        None => user.gid,
    };
    setgroups(&[gid]).map_err(|e| format!("setgroups({gid}): {e}"))?;
    setgid(gid).map_err(|e| format!("setgid({gid}): {e}"))?;
    setuid(user.uid).map_err(|e| format!("setuid({}): {e}", user.uid))?;
    tracing::info!(
        "dropped privileges to user {} ({}) and group {gid}",
        run_as.user,
        user.uid
    );
    Ok(())
}

fn find_user(name: &str) -> Result<User, String> {
    let found = match name.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(name),
    };
    found
        .map_err(|e| format!("user {name:?}: {e}"))?
        .ok_or_else(|| format!("user {name:?} does not exist"))
}

fn find_group(name: &str) -> Result<Gid, String> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(Gid::from_raw(gid));
    }
    Group::from_name(name)
        .map_err(|e| format!("group {name:?}: {e}"))?
        .map(|g| g.gid)
        .ok_or_else(|| format!("group {name:?} does not exist"))
}
