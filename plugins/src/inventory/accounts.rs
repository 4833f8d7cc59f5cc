//! Local users and groups from `/etc/passwd` and `/etc/group`.

use bagui_protocol::assets::{Group, User};

use crate::{CollectError, HostRoot};

/// Users from `/etc/passwd`. Comments, NIS `+`/`-` entries and malformed lines (wrong field
/// count, non-numeric ids, empty name) are skipped.
pub fn users(root: &HostRoot) -> Result<Vec<User>, CollectError> {
    Ok(parse_passwd(&root.read("/etc/passwd")?))
}

/// Groups from `/etc/group`, with their listed members. Malformed lines are skipped.
pub fn groups(root: &HostRoot) -> Result<Vec<Group>, CollectError> {
    Ok(parse_group(&root.read("/etc/group")?))
}

fn skippable(line: &str) -> bool {
    let line = line.trim();
    line.is_empty() || line.starts_with('#') || line.starts_with('+') || line.starts_with('-')
}

/// Parses passwd lines: `name:password:uid:gid:gecos:home:shell`.
pub fn parse_passwd(text: &str) -> Vec<User> {
    text.lines()
        .filter(|line| !skippable(line))
        .filter_map(|line| {
            let fields: Vec<&str> = line.trim_end_matches('\r').split(':').collect();
            let [name, _password, uid, gid, _gecos, home, shell] = fields[..] else {
                return None;
            };
            if name.is_empty() {
                return None;
            }
            Some(User {
                name: name.to_owned(),
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
                home: home.to_owned(),
                shell: shell.to_owned(),
            })
        })
        .collect()
}

/// Parses group lines: `name:password:gid:member,member`.
pub fn parse_group(text: &str) -> Vec<Group> {
    text.lines()
        .filter(|line| !skippable(line))
        .filter_map(|line| {
            let fields: Vec<&str> = line.trim_end_matches('\r').split(':').collect();
            let [name, _password, gid, members] = fields[..] else {
                return None;
            };
            if name.is_empty() {
                return None;
            }
            let mut members: Vec<String> = members
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect();
            members.sort();
            members.dedup();
            Some(Group {
                name: name.to_owned(),
                gid: gid.parse().ok()?,
                members,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::testutil::fixture;

    #[test]
    fn users_and_groups_from_fixture() {
        let root = fixture("accounts");
        let users = users(&root).unwrap();
        let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["root", "daemon", "nobody", "ops", "svc-app"]);
        assert_eq!(
            users[3],
            User {
                name: "ops".into(),
                uid: 1000,
                gid: 1000,
                home: "/home/ops".into(),
                shell: "/bin/bash".into(),
            }
        );
        assert_eq!(users[2].uid, 65534);
        assert_eq!(users[4].home, "/srv/app dir");

        let groups = groups(&root).unwrap();
        let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["root", "wheel", "docker", "ops", "nogroup"]);
        assert_eq!(groups[1].members, ["admin", "ops"]);
        assert!(groups[0].members.is_empty());
        assert_eq!(groups[2].gid, 998);
    }

    #[test]
    fn missing_files_are_errors() {
        let dir = crate::inventory::testutil::Dir::new();
        assert!(users(&dir.root()).is_err());
        assert!(groups(&dir.root()).is_err());
    }

    #[test]
    fn this_host_has_root() {
        let users = users(&HostRoot::default()).unwrap();
        assert!(users.iter().any(|u| u.name == "root" && u.uid == 0));
        let groups = groups(&HostRoot::default()).unwrap();
        assert!(groups.iter().any(|g| g.gid == 0));
    }
}
