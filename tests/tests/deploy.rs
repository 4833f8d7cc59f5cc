//! Every example under `deploy/` must load, and the units must keep their hardening.

use std::path::PathBuf;
use std::time::Duration;

use bagui_agent::config::AgentConfig;
use bagui_control_plane::config::ControlPlaneConfig;

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

#[test]
fn example_configs_load_and_match_the_defaults() {
    let agent = AgentConfig::load(&deploy("agent.toml")).unwrap();
    let defaults = AgentConfig::default();
    assert_eq!(agent.outbox.max_size, defaults.outbox.max_size);
    assert_eq!(agent.link.backoff_max, defaults.link.backoff_max);
    assert_eq!(agent.collectors.metrics_interval, Duration::from_secs(15));

    let control_plane = ControlPlaneConfig::load(&deploy("control-plane.toml")).unwrap();
    let defaults = ControlPlaneConfig::default();
    assert_eq!(
        control_plane.server.quic_listen,
        defaults.server.quic_listen
    );
    assert_eq!(
        control_plane.server.http_listen,
        defaults.server.http_listen
    );
    assert_eq!(
        control_plane.enroll.cert_lifetime,
        defaults.enroll.cert_lifetime
    );
    assert_eq!(control_plane.session.max_frame, defaults.session.max_frame);
    assert_eq!(
        control_plane.admission.rate_per_second,
        defaults.admission.rate_per_second
    );
}

#[test]
fn systemd_units_are_hardened() {
    for (unit, extra) in [
        (
            "systemd/bagui-agent.service",
            &["StateDirectory=bagui-agent"][..],
        ),
        (
            "systemd/bagui-cp.service",
            &[
                "User=bagui",
                "StateDirectory=bagui",
                "CapabilityBoundingSet=\n",
            ][..],
        ),
    ] {
        let text = std::fs::read_to_string(deploy(unit)).unwrap();
        for directive in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "UMask=0077",
        ]
        .iter()
        .chain(extra)
        {
            assert!(text.contains(directive), "{unit} lacks {directive:?}");
        }
    }
}
