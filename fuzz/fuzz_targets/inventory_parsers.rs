//! Arbitrary text as the `/proc`, `/etc` and `systemctl` files the inventory reads. On a
//! hostile or merely odd host (a container with a fake `/proc`, a hand-edited passwd) each
//! parser skips what it cannot read, never panics.
#![no_main]

use std::net::{IpAddr, Ipv6Addr};

use bagui_plugins::inventory::{accounts, hardware, os, ports, services};
use libfuzzer_sys::fuzz_target;

/// os-release keys the agent reads.
const RELEASE_KEYS: [&str; 7] = [
    "ID",
    "ID_LIKE",
    "NAME",
    "VERSION",
    "VERSION_ID",
    "PRETTY_NAME",
    "DISTRIB_ID",
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    // Functions of two texts take the parts around the first NUL, else the two halves.
    let (one, two) = text
        .split_once('\0')
        .unwrap_or_else(|| text.split_at(text.floor_char_boundary(text.len() / 2)));

    // hardware
    let cpu = hardware::parse_cpuinfo(text);
    assert!(cpu.sockets as usize <= text.len() && cpu.cores as usize <= text.len());
    let _ = hardware::arm_cpu_name(one, two);
    for mount in hardware::parse_mounts(text) {
        assert!(mount.mount_point.starts_with('/'), "{mount:?}");
        assert_ne!(mount.class, hardware::FsClass::Virtual, "{mount:?}");
        assert_eq!(
            mount.class,
            hardware::classify(&mount.fs_type, &mount.mount_point)
        );
    }
    let _ = hardware::classify(one, two);
    for (_, address) in hardware::parse_if_inet6(text) {
        let (address, prefix) = address.split_once('/').expect("address/prefix");
        address.parse::<Ipv6Addr>().expect("an IPv6 address");
        prefix.parse::<u8>().expect("a prefix length");
    }
    let local = hardware::parse_fib_trie_local(text);
    let routes = hardware::parse_link_routes(text);
    for route in &routes {
        assert!((1..=32).contains(&route.prefix), "{route:?}");
    }
    let (placed, _) = hardware::place_ipv4(&local, &routes);
    for (interface, _) in &placed {
        assert!(routes.iter().any(|r| &r.interface == interface));
    }
    let _ = hardware::parse_ip_addr(text);

    // ports
    for socket in ports::parse_sockets(text) {
        socket
            .address
            .parse::<IpAddr>()
            .unwrap_or_else(|_| panic!("not an address: {socket:?}"));
    }
    for word in text.split_whitespace().take(64) {
        let _ = ports::decode_address(word);
    }

    // accounts
    for user in accounts::parse_passwd(text) {
        assert!(!user.name.is_empty());
    }
    for group in accounts::parse_group(text) {
        assert!(!group.name.is_empty());
    }

    // services
    for unit in services::parse_list_units(text) {
        assert!(unit.name.ends_with(".service"), "{unit:?}");
    }
    let _ = services::parse_list_unit_files(text);
    let _ = services::merge_systemctl(one, two);
    let _ = services::merge_systemctl(text, text);
    let _ = services::has_install_section(text);

    // os
    for line in text.lines().take(64) {
        let _ = os::parse_release_line(line);
    }
    let _ = os::parse_release_line(text);
    let id = os::release_field(text, "ID").unwrap_or_default();
    let id_like = os::release_field(text, "ID_LIKE").unwrap_or_default();
    let _ = os::family(&id, &id_like);
    let _ = os::family(one, two);
    for key in RELEASE_KEYS {
        let _ = os::release_field(text, key);
    }
    let _ = os::release_field(two, one);
    let _ = os::uname_arch(text);
});
