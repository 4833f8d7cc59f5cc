//! CLI verbs of 管理在线 and 服务在线: `kpi`, `maintenance`, `service` (see
//! `crate::admin_service`). Local when no `run` holds the store, through the API otherwise.

use anyhow::{Context, Result, bail};
use bagui_ops::model::Millis;
use bagui_ops::services::Service;
use bagui_protocol::units;
use clap::{ArgGroup, Args, Subcommand};

use crate::admin_service::{CreateMaintenance, KpiRow, KpiView, MaintenanceView, ServiceReport};
use crate::cli::{Access, Output, print_rows, query_escape};

/// `bagui-cp kpi`: work-order KPIs of a division's subtree for a month.
#[derive(Args)]
pub struct KpiArgs {
    /// Division code; its whole subtree counts (default: the region).
    #[arg(long, default_value = "45")]
    division: String,
    /// CST calendar month, YYYY-MM.
    #[arg(long)]
    period: String,
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

/// `bagui-cp availability`: an agent's availability for a month.
#[derive(Args)]
pub struct AvailabilityArgs {
    agent: String,
    /// CST calendar month, YYYY-MM.
    #[arg(long)]
    period: String,
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

pub(crate) async fn availability_command(access: Access, args: &AvailabilityArgs) -> Result<()> {
    let view: crate::admin_service::AgentAvailabilityView = access
        .read(
            |admin| admin.agent_availability(&args.agent, &args.period),
            || {
                format!(
                    "/api/v1/agents/{}/availability?period={}",
                    query_escape(&args.agent),
                    query_escape(&args.period)
                )
            },
        )
        .await?;
    if let Output::Json = args.output {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    let percent = view
        .availability_percent
        .map(|value| format!("{value:.3} %"))
        .unwrap_or_else(|| "- (all maintenance)".into());
    println!(
        "{} ({}) {}: {percent} over {} session(s){}",
        view.agent,
        view.division,
        view.period,
        view.sessions,
        if view.recorded {
            ""
        } else {
            "; no session ever recorded"
        }
    );
    Ok(())
}

#[derive(Subcommand)]
pub enum MaintenanceCommand {
    /// Silence an agent or a division subtree for a while (audited).
    #[command(
        group(ArgGroup::new("target").required(true).args(["agent", "division"])),
        group(ArgGroup::new("end").required(true).args(["until", "duration"]))
    )]
    Add {
        #[arg(long)]
        agent: Option<String>,
        /// Division code; every division and agent below it is covered.
        #[arg(long)]
        division: Option<String>,
        /// Start: RFC 3339 (2026-11-20T22:00:00+08:00) or `now`.
        #[arg(long, default_value = "now")]
        from: String,
        /// End: RFC 3339.
        #[arg(long)]
        until: Option<String>,
        /// Length instead of an end: 30m, 2h, 1d (at most 30 days).
        #[arg(long = "for")]
        duration: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// Windows in force or to come (expired ones are pruned).
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// End a window now.
    Remove { id: String },
}

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Create or replace a service of the catalog (audited).
    Put(Box<ServicePut>),
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    Show {
        id: String,
    },
    /// The service's state now: UP, DOWN, MAINTENANCE or UNKNOWN.
    Status {
        id: String,
    },
    Remove {
        id: String,
    },
    /// Availability, failures, MTBF, MTTR and provision rate for a month.
    Report {
        #[arg(long)]
        id: String,
        /// CST calendar month, YYYY-MM.
        #[arg(long)]
        period: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Args)]
pub struct ServicePut {
    #[arg(long)]
    id: String,
    #[arg(long)]
    name: String,
    /// The owning team's id.
    #[arg(long)]
    team: String,
    /// The division that runs it (its maintenance windows are the service's).
    #[arg(long)]
    division: String,
    /// An agent (host) the service runs on (repeatable).
    #[arg(long)]
    agent: Vec<String>,
    /// A probe, `AGENT:NAME`, or a bare `NAME` for that probe on every --agent (repeatable).
    #[arg(long)]
    probe: Vec<String>,
    /// The slowest answer that still counts as service provided (500ms, 2s).
    #[arg(long, default_value = "1s")]
    latency_objective: String,
}

/// `11m40s`, `2h`, `-` for none.
fn duration(ms: Option<Millis>) -> String {
    let Some(ms) = ms else {
        return "-".into();
    };
    let secs = ms / 1000;
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut text = String::new();
    for (value, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if value > 0 {
            text.push_str(&format!("{value}{unit}"));
        }
    }
    if text.is_empty() {
        format!("{ms}ms")
    } else {
        text
    }
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |value| format!("{value:.2}%"))
}

pub(crate) async fn kpi_command(access: Access, args: &KpiArgs) -> Result<()> {
    let view: KpiView = access
        .read(
            |admin| admin.kpi(&args.division, &args.period),
            || {
                format!(
                    "/api/v1/kpi?division={}&period={}",
                    query_escape(&args.division),
                    query_escape(&args.period)
                )
            },
        )
        .await
        .context("computing the KPIs")?;
    if let Output::Json = args.output {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    if let Output::Table = args.output {
        println!(
            "{} {} — {} [{}, {})",
            view.division, view.division_path, view.period, view.from, view.to
        );
    }
    let mut rows: Vec<(&str, &KpiRow)> = vec![("total", &view.total)];
    rows.extend(view.teams.iter().map(|row| ("team", row)));
    rows.extend(view.divisions.iter().map(|row| ("division", row)));
    print_rows(
        args.output,
        &rows,
        &[
            "kind",
            "id",
            "name",
            "opened",
            "mtta",
            "mttr",
            "handling",
            "sla",
            "escalations",
            "reopened",
            "reopen_rate",
        ],
        |(kind, row)| {
            vec![
                kind.to_string(),
                row.id.clone(),
                row.name.clone(),
                row.kpi.opened.to_string(),
                duration(row.kpi.mtta_ms),
                duration(row.kpi.mttr_ms),
                duration(row.kpi.handling_time_ms),
                percent(row.kpi.sla_compliance_percent),
                row.kpi.escalations.to_string(),
                row.counters.reopened.to_string(),
                percent(row.kpi.reopen_rate_percent),
            ]
        },
    )
}

pub(crate) async fn maintenance_command(
    access: Access,
    command: &MaintenanceCommand,
) -> Result<()> {
    match command {
        MaintenanceCommand::Add {
            agent,
            division,
            from,
            until,
            duration,
            reason,
        } => {
            let request = CreateMaintenance {
                agent: agent.clone(),
                division: division.clone(),
                from: Some(from.clone()),
                until: until.clone(),
                duration: duration.clone(),
                reason: reason.clone(),
            };
            let window: MaintenanceView = match &access {
                Access::Local { admin, .. } => admin.maintenance_create("admin", &request)?,
                Access::Remote(client) => client.post("/api/v1/maintenance", &request).await?,
            };
            println!(
                "maintenance window {} on {} {} from {} until {}",
                window.id, window.target_kind, window.target, window.start, window.end
            );
            Ok(())
        }
        MaintenanceCommand::List { output } => {
            let windows: Vec<MaintenanceView> = access
                .read(
                    |admin| admin.maintenance_list(),
                    || "/api/v1/maintenance".into(),
                )
                .await?;
            print_rows(
                *output,
                &windows,
                &["id", "target", "start", "end", "active", "by", "reason"],
                |window| {
                    vec![
                        window.id.clone(),
                        format!("{} {}", window.target_kind, window.target),
                        window.start.clone(),
                        window.end.clone(),
                        window.active.to_string(),
                        window.created_by.clone(),
                        window.reason.clone(),
                    ]
                },
            )
        }
        MaintenanceCommand::Remove { id } => {
            let window: MaintenanceView = match &access {
                Access::Local { admin, .. } => admin.maintenance_remove("admin", id)?,
                Access::Remote(client) => {
                    client
                        .delete(&format!("/api/v1/maintenance/{}", query_escape(id)))
                        .await?
                }
            };
            println!("maintenance window {} removed", window.id);
            Ok(())
        }
    }
}

pub(crate) async fn service_command(access: Access, command: &ServiceCommand) -> Result<()> {
    match command {
        ServiceCommand::Put(put) => {
            let objective = match units::parse_duration(&put.latency_objective) {
                Ok(objective) if objective.as_millis() > 0 => objective,
                Ok(_) => bail!("--latency-objective must be above 0 (500ms, 2s)"),
                Err(error) => bail!("--latency-objective: {error}"),
            };
            let service = Service {
                id: put.id.clone(),
                name: put.name.clone(),
                owner_team: put.team.clone(),
                division: put.division.clone(),
                agents: put.agent.clone(),
                probes: put.probe.clone(),
                latency_objective_ms: u64::try_from(objective.as_millis()).unwrap_or(u64::MAX),
            };
            let service: Service = match &access {
                Access::Local { admin, .. } => admin.service_put("admin", service)?,
                Access::Remote(client) => client.post("/api/v1/services", &service).await?,
            };
            println!(
                "service {} ({}) of team {} at {}: agents {:?}, probes {:?}, objective {} ms",
                service.id,
                service.name,
                service.owner_team,
                service.division,
                service.agents,
                service.probes,
                service.latency_objective_ms
            );
            Ok(())
        }
        ServiceCommand::List { output } => {
            let services: Vec<Service> = access
                .read(|admin| admin.services(), || "/api/v1/services".into())
                .await?;
            print_rows(
                *output,
                &services,
                &[
                    "id",
                    "team",
                    "division",
                    "agents",
                    "probes",
                    "objective",
                    "name",
                ],
                |service| {
                    vec![
                        service.id.clone(),
                        service.owner_team.clone(),
                        service.division.clone(),
                        service.agents.join(","),
                        service.probes.join(","),
                        format!("{}ms", service.latency_objective_ms),
                        service.name.clone(),
                    ]
                },
            )
        }
        ServiceCommand::Show { id } => {
            let service: Service = access
                .read(
                    |admin| admin.service(id),
                    || format!("/api/v1/services/{}", query_escape(id)),
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&service)?);
            Ok(())
        }
        ServiceCommand::Status { id } => {
            let status: crate::admin_service::ServiceStatusView = access
                .read(
                    |admin| admin.service_status(id),
                    || format!("/api/v1/services/{}/status", query_escape(id)),
                )
                .await?;
            println!(
                "{} {} at {}",
                status.service,
                serde_json::to_value(status.status)?.as_str().unwrap_or("?"),
                status.at
            );
            Ok(())
        }
        ServiceCommand::Remove { id } => {
            let service: Service = match &access {
                Access::Local { admin, .. } => admin.service_remove("admin", id)?,
                Access::Remote(client) => {
                    client
                        .delete(&format!("/api/v1/services/{}", query_escape(id)))
                        .await?
                }
            };
            println!("service {} removed", service.id);
            Ok(())
        }
        ServiceCommand::Report { id, period, output } => {
            let report: ServiceReport = access
                .read(
                    |admin| admin.service_report(id, period),
                    || {
                        format!(
                            "/api/v1/services/{}/report?period={}",
                            query_escape(id),
                            query_escape(period)
                        )
                    },
                )
                .await?;
            print_report(&report, *output)
        }
    }
}

fn print_report(report: &ServiceReport, output: Output) -> Result<()> {
    let summary = &report.summary;
    let cells = vec![
        report.service.id.clone(),
        report.period.clone(),
        percent(summary.availability_percent),
        summary.failures.to_string(),
        duration(summary.mtbf_ms),
        duration(summary.mttr_ms),
        percent(summary.provision_rate_percent),
        duration(Some(summary.maintenance_ms)),
    ];
    let header = [
        "service",
        "period",
        "availability",
        "failures",
        "mtbf",
        "mttr",
        "provision_rate",
        "maintenance",
    ];
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(report)?),
        Output::Csv => print_rows(output, &[()], &header, |_| cells.clone())?,
        Output::Table => {
            println!(
                "{} ({}) — {} [{}, {})",
                report.service.id, report.service.name, report.period, report.from, report.to
            );
            for (name, value) in header.iter().zip(&cells).skip(2) {
                println!("  {name:<15} {value}");
            }
            for probe in &report.probes {
                println!(
                    "  probe {} (check {}): {} results",
                    probe.probe, probe.check, probe.results
                );
            }
            for note in &report.notes {
                println!("  note: {note}");
            }
        }
    }
    Ok(())
}
