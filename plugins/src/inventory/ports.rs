//! Listening sockets and the processes that own them, from `/proc/net` and `/proc/*/fd`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use bagui_protocol::assets::Listening;

use super::first_line;
use crate::{CollectError, HostRoot};

/// TCP state `LISTEN`.
const TCP_LISTEN: &str = "0A";
/// TCP state `CLOSE`: what an unconnected UDP socket reports (`ss` calls it `UNCONN`).
const UDP_UNCONNECTED: &str = "07";

/// One socket line of `/proc/net/{tcp,tcp6,udp,udp6}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEntry {
    pub address: String,
    pub port: u16,
    pub state: String,
    pub inode: u64,
}

/// Decodes a `/proc/net` address: 8 hex digits (IPv4) or 32 (IPv6, four 32-bit words). The
/// kernel prints each network-order word as a native-endian integer, so the words are turned
/// back into bytes in native order (little-endian on every machine we run on). v4-mapped IPv6
/// addresses stay IPv6 (`::ffff:10.0.0.1`), as `ss` shows them.
pub fn decode_address(hex: &str) -> Option<String> {
    match hex.len() {
        8 => {
            let word = u32::from_str_radix(hex, 16).ok()?;
            Some(Ipv4Addr::from(word.to_ne_bytes()).to_string())
        }
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            Some(Ipv6Addr::from(bytes).to_string())
        }
        _ => None,
    }
}

/// Parses a `/proc/net/{tcp,udp}{,6}` table; the header and malformed lines are skipped.
pub fn parse_sockets(text: &str) -> Vec<SocketEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
        if fields.len() < 10 || !fields[0].ends_with(':') {
            continue;
        }
        let Some((address, port)) = fields[1].split_once(':') else {
            continue;
        };
        let (Some(address), Ok(port), Ok(inode)) = (
            decode_address(address),
            u16::from_str_radix(port, 16),
            fields[9].parse::<u64>(),
        ) else {
            continue;
        };
        out.push(SocketEntry {
            address,
            port,
            state: fields[3].to_ascii_uppercase(),
            inode,
        });
    }
    out
}

/// Owners of socket inodes: `inode -> (pid, comm)`, from the `socket:[INODE]` links in
/// `/proc/*/fd`. Processes we may not look into (other users', without root) are skipped; a
/// socket shared by several processes (a pre-fork server's master and workers) goes to the
/// lowest pid, normally the parent.
pub fn socket_owners(
    root: &HostRoot,
    wanted: &std::collections::HashSet<u64>,
) -> HashMap<u64, (u32, String)> {
    let mut owners: HashMap<u64, (u32, String)> = HashMap::new();
    if wanted.is_empty() {
        return owners;
    }
    let Ok(processes) = std::fs::read_dir(root.path("/proc")) else {
        return owners;
    };
    for process in processes.flatten() {
        let name = process.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        let mut comm: Option<String> = None;
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            if !wanted.contains(&inode) {
                continue;
            }
            if owners.get(&inode).is_some_and(|(owner, _)| *owner <= pid) {
                continue;
            }
            let comm = comm
                .get_or_insert_with(|| {
                    first_line(root, &format!("/proc/{pid}/comm")).unwrap_or_default()
                })
                .clone();
            owners.insert(inode, (pid, comm));
        }
    }
    owners
}

/// Listening sockets: TCP in `LISTEN` and unconnected UDP (state `CLOSE`, what `ss -ltnu`
/// lists as `UNCONN`), IPv4 and IPv6, with the owning process when it can be seen (empty
/// process and pid 0 otherwise).
///
/// Several sockets on one address and port (`SO_REUSEPORT` workers) are one entry, owned by
/// the lowest pid. Fails only when none of the four tables can be read.
pub fn listening(root: &HostRoot) -> Result<Vec<Listening>, CollectError> {
    let mut sockets: Vec<(&'static str, SocketEntry)> = Vec::new();
    let mut first_error = None;
    let mut read_any = false;
    for (file, proto, state) in [
        ("/proc/net/tcp", "tcp", TCP_LISTEN),
        ("/proc/net/tcp6", "tcp", TCP_LISTEN),
        ("/proc/net/udp", "udp", UDP_UNCONNECTED),
        ("/proc/net/udp6", "udp", UDP_UNCONNECTED),
    ] {
        match root.read(file) {
            Ok(text) => {
                read_any = true;
                sockets.extend(
                    parse_sockets(&text)
                        .into_iter()
                        .filter(|entry| entry.state == state)
                        .map(|entry| (proto, entry)),
                );
            }
            // IPv6 disabled: no tcp6/udp6 file.
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    if !read_any && let Some(error) = first_error {
        return Err(error);
    }
    let wanted = sockets
        .iter()
        .map(|(_, entry)| entry.inode)
        .filter(|inode| *inode != 0)
        .collect();
    let owners = socket_owners(root, &wanted);
    let mut by_key: HashMap<(&str, String, u16), Listening> = HashMap::new();
    for (proto, entry) in sockets {
        let (pid, process) = owners.get(&entry.inode).cloned().unwrap_or_default();
        let item = Listening {
            proto: proto.to_owned(),
            address: entry.address.clone(),
            port: entry.port,
            process,
            pid,
        };
        by_key
            .entry((proto, entry.address, entry.port))
            .and_modify(|existing| {
                let better = item.pid != 0 && (existing.pid == 0 || item.pid < existing.pid);
                if better {
                    *existing = item.clone();
                }
            })
            .or_insert(item);
    }
    let mut out: Vec<Listening> = by_key.into_values().collect();
    out.sort_by(|a, b| (&a.proto, a.port, &a.address).cmp(&(&b.proto, b.port, &b.address)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::testutil::fixture;
    use std::collections::BTreeSet;

    #[test]
    fn decodes_proc_net_addresses() {
        assert_eq!(decode_address("0100007F").unwrap(), "127.0.0.1");
        assert_eq!(decode_address("00000000").unwrap(), "0.0.0.0");
        assert_eq!(decode_address("020200C0").unwrap(), "192.0.2.2");
        assert_eq!(
            decode_address("00000000000000000000000000000000").unwrap(),
            "::"
        );
        assert_eq!(
            decode_address("00000000000000000000000001000000").unwrap(),
            "::1"
        );
        // v4-mapped ::ffff:127.0.0.1
        assert_eq!(
            decode_address("0000000000000000FFFF00000100007F").unwrap(),
            "::ffff:127.0.0.1"
        );
        // fe80::5054:ff:fe12:3456
        assert_eq!(
            decode_address("000080FE00000000FF005450563412FE").unwrap(),
            "fe80::5054:ff:fe12:3456"
        );
        assert_eq!(decode_address("XYZ"), None);
        assert_eq!(decode_address("0000000000000000FFFF00000100007G"), None);
    }

    #[test]
    fn listening_from_fixture_tables() {
        let root = fixture("ports");
        let listening = listening(&root).unwrap();
        let got: Vec<(&str, &str, u16, &str, u32)> = listening
            .iter()
            .map(|l| {
                (
                    l.proto.as_str(),
                    l.address.as_str(),
                    l.port,
                    l.process.as_str(),
                    l.pid,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("tcp", "0.0.0.0", 22, "sshd", 812),
                ("tcp", "::", 22, "sshd", 812),
                ("tcp", "127.0.0.1", 25, "", 0),
                ("tcp", "0.0.0.0", 80, "nginx", 900),
                ("tcp", "::ffff:127.0.0.1", 8080, "", 0),
                ("udp", "0.0.0.0", 68, "dhclient", 700),
                ("udp", "::", 123, "", 0),
            ]
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text = "  sl  local_address rem_address   st\n\
                    0: zz:0016 00000000:0000 0A 0 0 0 0 0 1\n\
                    1: 0100007F:0019\n\
                    2: 0100007F:0019 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 notanumber 1\n\
                    3: 0100007F:0019 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 77 1\n";
        let parsed = parse_sockets(text);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].inode, 77);
        assert_eq!(parsed[0].port, 25);
    }

    #[test]
    fn no_tables_is_an_error() {
        let dir = crate::inventory::testutil::Dir::new();
        assert!(listening(&dir.root()).is_err());
    }

    /// Binds in this process and expects to be found, with our pid and comm.
    #[test]
    fn finds_this_process_sockets() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (tcp_port, udp_port) = (
            tcp.local_addr().unwrap().port(),
            udp.local_addr().unwrap().port(),
        );
        let comm = std::fs::read_to_string("/proc/self/comm")
            .unwrap()
            .trim()
            .to_owned();
        let listening = listening(&HostRoot::default()).unwrap();
        for (proto, port) in [("tcp", tcp_port), ("udp", udp_port)] {
            let found = listening
                .iter()
                .find(|l| l.proto == proto && l.port == port && l.address == "127.0.0.1")
                .unwrap_or_else(|| panic!("{proto} {port} not in {listening:?}"));
            assert_eq!(found.pid, std::process::id(), "{found:?}");
            assert_eq!(found.process, comm, "{found:?}");
        }
    }

    fn ss_set() -> BTreeSet<(String, u16)> {
        let out = std::process::Command::new("ss")
            .arg("-ltnuH")
            .output()
            .expect("`ss` is missing: install iproute2 to run this test");
        assert!(out.status.success(), "ss -ltnuH failed: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let local = fields.get(4)?;
                let port = local.rsplit_once(':')?.1.parse().ok()?;
                Some((fields[0].to_owned(), port))
            })
            .collect()
    }

    /// The (proto, port) set agrees with `ss -ltnuH`. Other tests (in this and other crates)
    /// open and close sockets meanwhile, so a few attempts are allowed.
    #[test]
    fn agrees_with_ss() {
        let mut last = None;
        for _ in 0..5 {
            let expected = ss_set();
            let got: BTreeSet<(String, u16)> = listening(&HostRoot::default())
                .unwrap()
                .into_iter()
                .map(|l| (l.proto, l.port))
                .collect();
            if got == expected {
                return;
            }
            last = Some((got, expected));
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let (got, expected) = last.unwrap();
        panic!("listening {got:?}\n      ss {expected:?}");
    }
}
