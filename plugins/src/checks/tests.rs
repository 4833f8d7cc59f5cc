//! Real plugin runs (Monitoring Plugins from Debian), config validation and the collector.
//!
//! These tests need `apt-get install -y monitoring-plugins-basic monitoring-plugins-standard`;
//! a missing plugin fails the test with that instruction rather than skipping it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use bagui_protocol::Lane;
use bagui_protocol::assets::{CHECK_RESULT, CheckResult, PerfDatum};
use bagui_protocol::messages::payload;

use super::exec::tests::script;
use super::*;

const PLUGINS: &str = "/usr/lib/nagios/plugins";

/// Full path of a Monitoring Plugins binary; fails the test if it is not installed.
fn plugin(name: &str) -> String {
    let path = format!("{PLUGINS}/{name}");
    assert!(
        Path::new(&path).is_file(),
        "{path} is missing: install the plugins with \
         `apt-get install -y monitoring-plugins-basic monitoring-plugins-standard`"
    );
    path
}

fn nagios(argv: &[&str]) -> CheckResult {
    let argv: Vec<String> = argv.iter().map(|arg| (*arg).to_owned()).collect();
    let mut results = run_command(
        "test",
        &argv,
        Convention::Nagios,
        Duration::from_secs(20),
        1_000,
    );
    assert_eq!(results.len(), 1);
    results.remove(0)
}

fn datum<'a>(result: &'a CheckResult, label: &str) -> &'a PerfDatum {
    result
        .perfdata
        .iter()
        .find(|datum| datum.label == label)
        .unwrap_or_else(|| panic!("no perfdata {label:?} in {result:#?}"))
}

#[test]
fn check_load_ok_with_perfdata() {
    let result = nagios(&[
        &plugin("check_load"),
        "-w",
        "1000,1000,1000",
        "-c",
        "2000,2000,2000",
    ]);
    assert_eq!(result.status, 0, "{result:#?}");
    assert_eq!(result.convention, "nagios");
    assert!(result.output.starts_with("LOAD OK"), "{}", result.output);
    assert_eq!(result.error, None);
    assert_eq!(result.started_ms, 1_000);
    for label in ["load1", "load5", "load15"] {
        let load = datum(&result, label);
        assert!(load.value.is_some_and(|v| v >= 0.0));
        assert_eq!(load.warn.as_deref(), Some("1000.000"));
        assert_eq!(load.crit.as_deref(), Some("2000.000"));
        assert_eq!(load.min, Some(0.0));
    }
}

#[test]
fn check_dummy_warning_critical_unknown() {
    let dummy = plugin("check_dummy");
    let warning = nagios(&[&dummy, "1", "text"]);
    assert_eq!(
        (warning.status, warning.output.as_str()),
        (1, "WARNING: text")
    );
    assert_eq!(warning.status_text(), "WARNING");
    let critical = nagios(&[&dummy, "2"]);
    assert_eq!(critical.status, 2, "{critical:#?}");
    assert!(critical.output.starts_with("CRITICAL"));
    let unknown = nagios(&[&dummy, "3", "no idea"]);
    assert_eq!(unknown.status, 3);
    assert_eq!(unknown.output, "UNKNOWN: no idea");
    // A plugin saying UNKNOWN is not an error of ours.
    assert_eq!(unknown.error, None);
    let ok = nagios(&["check_dummy", "0", "bare name"]);
    assert_eq!((ok.status, ok.output.as_str()), (0, "OK: bare name"));
}

#[test]
fn check_disk_states_and_bytes_perfdata() {
    let disk = plugin("check_disk");
    let ok = nagios(&[&disk, "-w", "0%", "-c", "0%", "-p", "/"]);
    assert_eq!(ok.status, 0, "{ok:#?}");
    let root = datum(&ok, "/");
    assert!(root.value.is_some_and(|v| v > 0.0));
    assert!(root.max.is_some_and(|max| max >= root.value.unwrap_or(0.0)));
    let critical = nagios(&[&disk, "-w", "100%", "-c", "100%", "-p", "/"]);
    assert_eq!(critical.status, 2, "{critical:#?}");
    assert!(critical.output.starts_with("DISK CRITICAL"));
    assert_eq!(datum(&critical, "/").uom, datum(&ok, "/").uom);
}

#[test]
fn check_procs_counts_processes() {
    let result = nagios(&[&plugin("check_procs"), "-w", "1:1000000"]);
    assert_eq!(result.status, 0, "{result:#?}");
    let procs = datum(&result, "procs");
    assert!(procs.value.is_some_and(|v| v >= 1.0));
    assert_eq!(procs.warn.as_deref(), Some("1:1000000"));
    let critical = nagios(&[&plugin("check_procs"), "-c", "0:0"]);
    assert_eq!(critical.status, 2, "{critical:#?}");
}

#[test]
fn check_tcp_against_a_loopback_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let ok = nagios(&[&plugin("check_tcp"), "-H", "127.0.0.1", "-p", &port]);
    assert_eq!(ok.status, 0, "{ok:#?}");
    assert_eq!(datum(&ok, "time").uom, "s");
    drop(listener);
    let critical = nagios(&[&plugin("check_tcp"), "-H", "127.0.0.1", "-p", &port]);
    assert_eq!(critical.status, 2, "{critical:#?}");
}

/// Answers `connections` HTTP requests with `status` and a short body.
pub(crate) fn http_responder(status: &'static str, connections: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
                line.clear();
            }
            let body = "hello from bagui test\n";
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn check_http_against_a_loopback_responder() {
    let port = http_responder("200 OK", 1).to_string();
    let ok = nagios(&[&plugin("check_http"), "-H", "127.0.0.1", "-p", &port]);
    assert_eq!(ok.status, 0, "{ok:#?}");
    let time = datum(&ok, "time");
    assert_eq!(time.uom, "s");
    assert_eq!(time.min, Some(0.0));
    let size = datum(&ok, "size");
    assert_eq!(size.uom, "B");
    assert!(size.value.is_some_and(|v| v > 0.0));
    let port = http_responder("500 Internal Server Error", 1).to_string();
    let critical = nagios(&[&plugin("check_http"), "-H", "127.0.0.1", "-p", &port]);
    assert_eq!(critical.status, 2, "{critical:#?}");
}

#[test]
fn odd_exits_are_unknown_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let four = script(dir.path(), "four", "echo 'FOUR | x=1'\nexit 4");
    let result = nagios(&[&four]);
    assert_eq!(result.status, 3);
    assert!(result.error.as_deref().unwrap().contains("exit status 4"));
    assert_eq!(result.perfdata.len(), 1);
    let killed = script(dir.path(), "killed", "kill -TERM $$");
    let result = nagios(&[&killed]);
    assert_eq!(result.status, 3);
    assert!(
        result.error.as_deref().unwrap().contains("signal 15"),
        "{result:#?}"
    );
    let silent = script(dir.path(), "silent", "echo oops >&2\nexit 2");
    let result = nagios(&[&silent]);
    assert_eq!(result.status, 2);
    assert_eq!(result.output, "(no output on stdout)");
    assert!(result.error.as_deref().unwrap().contains("stderr: oops"));
    let missing = nagios(&["/nonexistent/check_nothing"]);
    assert_eq!(missing.status, 3);
    assert!(missing.error.as_deref().unwrap().contains("not found"));
}

#[test]
fn a_hanging_check_times_out_with_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let hang = script(
        dir.path(),
        "hang",
        "sleep 60 &\necho $! > \"$1\"\necho 'still thinking'\nsleep 60",
    );
    let started = Instant::now();
    let results = run_command(
        "hang",
        &[hang, pid_file.to_str().unwrap().to_owned()],
        Convention::Nagios,
        Duration::from_millis(700),
        5,
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let result = &results[0];
    assert_eq!(result.status, 3);
    assert!(
        result.error.as_deref().unwrap().contains("timed out"),
        "{result:#?}"
    );
    assert_eq!(result.long_output, "still thinking");
    assert!(result.duration_ms >= 700);
    let child: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(2);
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
    };
    while alive(child) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !alive(child),
        "background child {child} survived the timeout"
    );
}

#[test]
fn megabytes_of_output_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let spam = script(
        dir.path(),
        "spam",
        "echo 'SPAM OK | first=1'\nyes 'more text' | head -c 4000000\nexit 0",
    );
    let result = nagios(&[&spam]);
    assert_eq!(result.status, 0);
    assert_eq!(result.output, "SPAM OK");
    assert_eq!(result.perfdata.len(), 1);
    assert!(result.long_output.len() < exec::DEFAULT_OUTPUT_CAP);
    assert!(
        result.error.as_deref().unwrap().contains("truncated"),
        "{result:#?}"
    );
}

#[test]
fn jsonl_program_reports_several_results() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(
        dir.path(),
        "queues",
        r#"echo '{"status":0,"output":"all fine","perfdata":[{"label":"depth","value":3}]}'
echo '{"name":"orders","status":2,"output":"stuck"}'
echo 'garbage'
exit 1"#,
    );
    let results = run_command(
        "queues",
        &[program],
        Convention::Jsonl,
        Duration::from_secs(10),
        7,
    );
    let summary: Vec<(&str, u8)> = results
        .iter()
        .map(|r| (r.name.as_str(), r.status))
        .collect();
    assert_eq!(
        summary,
        [("queues", 0), ("queues/orders", 2), ("queues", 3)]
    );
    assert!(
        results
            .iter()
            .all(|r| r.convention == "jsonl" && r.started_ms == 7)
    );
    let empty = script(dir.path(), "empty", "echo broken >&2\nexit 5");
    let results = run_command("e", &[empty], Convention::Jsonl, Duration::from_secs(10), 0);
    assert_eq!(results.len(), 1);
    let error = results[0].error.as_deref().unwrap();
    assert!(
        error.contains("no result lines") && error.contains("exit status 5"),
        "{error}"
    );
    assert!(error.contains("stderr: broken"), "{error}");
}

fn config(json: &str) -> CheckConfig {
    serde_json::from_str(json).unwrap()
}

#[test]
fn config_validation_errors_are_clear() {
    let cases = [
        (r#"{"name":""}"#, "empty name"),
        (
            r#"{"name":"a b","probe":"tcp","target":"h:1"}"#,
            "name may only",
        ),
        (r#"{"name":"x"}"#, "set command or probe"),
        (
            r#"{"name":"x","command":["/bin/true"],"probe":"tcp","target":"h:1"}"#,
            "not both",
        ),
        (r#"{"name":"x","command":["./check"]}"#, "relative path"),
        (r#"{"name":"x","command":[]}"#, "empty command"),
        (
            r#"{"name":"x","command":["/bin/true"],"interval":"10s","timeout":"10s"}"#,
            "must be shorter than interval",
        ),
        (
            r#"{"name":"x","command":["/bin/true"],"interval":"ten"}"#,
            "interval duration",
        ),
        (r#"{"name":"x","probe":"tcp"}"#, "needs a target"),
        (
            r#"{"name":"x","probe":"tcp","target":"nohost"}"#,
            "needs host:port",
        ),
        (
            r#"{"name":"x","probe":"http","target":"ftp://h/"}"#,
            "http:// or https://",
        ),
        (
            r#"{"name":"x","probe":"tcp","target":"h:1","warn_days":3}"#,
            "warn_days is only for",
        ),
        (
            r#"{"name":"x","command":["/bin/true"],"target":"h:1"}"#,
            "target is only for probes",
        ),
        (
            r#"{"name":"x","probe":"dns","target":"h","convention":"jsonl"}"#,
            "convention is only for commands",
        ),
        (
            r#"{"name":"x","probe":"tls_expiry","target":"h","warn_days":3,"crit_days":9}"#,
            "crit_days must not be above",
        ),
    ];
    for (json, expected) in cases {
        let error = config(json).validate().unwrap_err().to_string();
        assert!(error.contains(expected), "{json}: {error}");
    }
    let unknown_field =
        serde_json::from_str::<CheckConfig>(r#"{"name":"x","commnd":["/bin/true"]}"#);
    assert!(
        unknown_field
            .unwrap_err()
            .to_string()
            .contains("unknown field")
    );
    let duplicate = validate(&[
        config(r#"{"name":"x","command":["/bin/true"]}"#),
        config(r#"{"name":"x","probe":"dns","target":"localhost"}"#),
    ]);
    assert!(
        duplicate
            .unwrap_err()
            .to_string()
            .contains("configured twice")
    );
}

#[test]
fn config_defaults_and_probe_options() {
    let spec = config(r#"{"name":"load","command":["check_load","-w","5"]}"#)
        .validate()
        .unwrap();
    assert_eq!(spec.interval, DEFAULT_INTERVAL);
    assert_eq!(spec.timeout, DEFAULT_TIMEOUT);
    assert_eq!(
        spec.kind,
        CheckKind::Command {
            argv: vec!["check_load".into(), "-w".into(), "5".into()],
            convention: Convention::Nagios
        }
    );
    let short = config(r#"{"name":"s","command":["/bin/true"],"interval":"4s"}"#)
        .validate()
        .unwrap();
    assert_eq!(short.timeout, Duration::from_secs(2));
    let tls = config(r#"{"name":"cert","probe":"tls_expiry","target":"example.internal","interval":"1h","timeout":"5s","warn_days":20}"#)
        .validate()
        .unwrap();
    let CheckKind::Probe(probe) = tls.kind else {
        panic!("not a probe");
    };
    assert_eq!(
        (probe.warn_days, probe.crit_days),
        (20, probes::DEFAULT_CRIT_DAYS)
    );
    assert_eq!(probe.timeout, Duration::from_secs(5));
}

#[test]
fn collector_uses_the_state_lane_only_when_the_status_changes() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("status");
    std::fs::write(&state, "0").unwrap();
    let flip = script(
        dir.path(),
        "flip",
        "s=$(cat \"$1\")\necho \"STATUS $s | v=$s\"\nexit $s",
    );
    let spec = CheckConfig {
        name: "flip".into(),
        command: Some(vec![flip, state.to_str().unwrap().to_owned()]),
        interval: Some("30s".into()),
        timeout: Some("5s".into()),
        ..CheckConfig::default()
    }
    .validate()
    .unwrap();
    let collector = CheckCollector::new(spec);
    assert_eq!(collector.name(), "check.flip");
    assert_eq!(collector.interval(), Duration::from_secs(30));
    assert_eq!(
        collector.deadline(),
        Duration::from_secs(5) + DEADLINE_MARGIN
    );
    assert!(collector.deadline() <= collector.interval());
    let run = |expected_status: u8| {
        let outputs = collector.collect(42).unwrap();
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].kind, CHECK_RESULT);
        let result: CheckResult = payload::decode(&outputs[0].body).unwrap();
        assert_eq!(result.status, expected_status, "{result:#?}");
        assert_eq!(result.name, "flip");
        outputs[0].lane
    };
    assert_eq!(run(0), Lane::State, "first run");
    assert_eq!(run(0), Lane::Metrics);
    std::fs::write(&state, "2").unwrap();
    assert_eq!(run(2), Lane::State);
    assert_eq!(run(2), Lane::Metrics);
    std::fs::write(&state, "0").unwrap();
    assert_eq!(run(0), Lane::State);
}

#[test]
fn collectors_from_config() {
    let built = collectors(&[
        config(r#"{"name":"a","command":["/bin/true"]}"#),
        config(r#"{"name":"b","probe":"tcp","target":"127.0.0.1:9"}"#),
    ])
    .unwrap();
    let names: Vec<&str> = built.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["check.a", "check.b"]);
}
