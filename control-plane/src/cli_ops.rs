//! CLI verbs of 问题处置在线: `wo`, `team`, `intake-token`, `notify`, `incident`.

use anyhow::{Context, Result, bail};
use bagui_ops::model::{Category, Millis};
use bagui_ops::notify::{ChannelConfig, MessageFormat, OnDutyPerson};
use bagui_ops::workorder::Command as WoAction;
use clap::{Args, Subcommand};

use crate::admin_ops::{CreateIntakeToken, NewIntakeToken};
use crate::cli::{Access, Output, print_rows, query_escape};
use crate::clock::format_rfc3339;
use crate::dispatch::{OrderDetail, OrderFilter, OrderRow, OutboxEntry, Team};

#[derive(Subcommand)]
pub enum WoCommand {
    /// Work orders, open ones unless --all or --state.
    List {
        /// Only this division and below.
        #[arg(long)]
        division: Option<String>,
        /// Only this state (DISPATCHED, ACKED, SUPPRESSED, AUTO_RESOLVED …).
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        team: Option<String>,
        /// Include finished orders (closed, verified, auto-resolved).
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// One work order with its transition log.
    Show {
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Acknowledge (接单).
    Ack { id: String },
    /// Start handling.
    Start { id: String },
    /// Resolve, with the required feedback.
    Resolve {
        id: String,
        #[arg(long)]
        feedback: String,
    },
    /// Verify a resolution (or refuse it with --reject: back to handling).
    Verify {
        id: String,
        #[arg(long)]
        reject: bool,
    },
    /// Close a verified order.
    Close { id: String },
    /// Wrong owner: back for re-dispatch.
    Return {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Add the next level's team as supervisor (督办).
    Escalate {
        id: String,
        #[arg(long)]
        team: String,
    },
    /// A supervising team takes the order over (接管).
    TakeOver {
        id: String,
        #[arg(long)]
        team: String,
    },
    /// Give the order to another team (转派).
    Reassign {
        id: String,
        #[arg(long)]
        team: String,
    },
}

#[derive(Subcommand)]
pub enum TeamCommand {
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Create or replace a team.
    Put(Box<TeamPut>),
    Remove {
        id: String,
    },
}

#[derive(Args)]
pub struct TeamPut {
    #[arg(long)]
    id: String,
    #[arg(long)]
    name: String,
    /// Division code the team hangs on.
    #[arg(long)]
    division: String,
    /// Categories it handles: host, network, security, application (default: all).
    #[arg(long, value_delimiter = ',')]
    categories: Vec<String>,
    /// WeCom group robot URL (repeatable).
    #[arg(long)]
    wecom: Vec<String>,
    /// DingTalk robot URL; its signing secret with --dingtalk-secret.
    #[arg(long)]
    dingtalk: Vec<String>,
    #[arg(long)]
    dingtalk_secret: Option<String>,
    /// Feishu bot URL; its signing secret with --feishu-secret.
    #[arg(long)]
    feishu: Vec<String>,
    #[arg(long)]
    feishu_secret: Option<String>,
    /// Generic JSON webhook URL.
    #[arg(long)]
    webhook: Vec<String>,
    /// Always on duty, `NAME` or `NAME:PHONE` (repeatable); @-mentioned by the robots.
    #[arg(long)]
    on_duty: Vec<String>,
    /// Duty roster (值班表) as a JSON file: {"shifts": [{"name": "夜班", "days": "every_day",
    /// "start": "18:00", "end": "08:30", "members": [{"name": "张三", "phone": "138…"}]}]}.
    #[arg(long)]
    roster_file: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
pub enum IntakeTokenCommand {
    /// Create a token for `POST /api/v1/intake/…`; the bare token is the last line printed
    /// (send it as `Authorization: Bearer`).
    Create {
        #[arg(long, default_value = "intake")]
        name: String,
    },
}

#[derive(Subcommand)]
pub enum NotifyCommand {
    /// Pending and failed notifications, oldest first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum IncidentCommand {
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

fn time(ms: Millis) -> String {
    format_rfc3339(ms)
}

pub(crate) async fn wo_command(access: Access, command: &WoCommand) -> Result<()> {
    let (id, action) = match command {
        WoCommand::List {
            division,
            state,
            team,
            all,
            output,
        } => {
            let filter = OrderFilter {
                division: division.clone(),
                state: state.as_ref().map(|state| state.to_uppercase()),
                team: team.clone(),
                all: *all,
            };
            let rows: Vec<OrderRow> = match &access {
                Access::Local { admin, .. } => admin.work_orders(&filter)?,
                Access::Remote(client) => {
                    let mut query = vec![format!("all={}", filter.all)];
                    for (name, value) in [
                        ("division", &filter.division),
                        ("state", &filter.state),
                        ("team", &filter.team),
                    ] {
                        if let Some(value) = value {
                            query.push(format!("{name}={}", query_escape(value)));
                        }
                    }
                    client
                        .get(&format!("/api/v1/work-orders?{}", query.join("&")))
                        .await?
                }
            };
            return print_rows(
                *output,
                &rows,
                &[
                    "id",
                    "state",
                    "severity",
                    "category",
                    "team",
                    "level",
                    "suppressed_by",
                    "created",
                    "division_path",
                    "title",
                ],
                |row| {
                    vec![
                        row.id.clone(),
                        row.state.clone(),
                        format!("{:?}", row.severity),
                        format!("{:?}", row.category).to_lowercase(),
                        row.team.clone().unwrap_or_default(),
                        row.escalation_level.to_string(),
                        row.suppressed_by.clone().unwrap_or_default(),
                        time(row.created_at),
                        row.division_path.clone(),
                        row.title.clone(),
                    ]
                },
            );
        }
        WoCommand::Show { id, output } => {
            let detail: OrderDetail = match &access {
                Access::Local { admin, .. } => admin.work_order(id)?,
                Access::Remote(client) => {
                    client
                        .get(&format!("/api/v1/work-orders/{}", query_escape(id)))
                        .await?
                }
            };
            return print_detail(&detail, *output);
        }
        WoCommand::Ack { id } => (id, WoAction::Ack),
        WoCommand::Start { id } => (id, WoAction::Start),
        WoCommand::Resolve { id, feedback } => (
            id,
            WoAction::Resolve {
                feedback: feedback.clone(),
            },
        ),
        WoCommand::Verify { id, reject } => (id, WoAction::Verify { accepted: !reject }),
        WoCommand::Close { id } => (id, WoAction::Close),
        WoCommand::Return { id, reason } => (
            id,
            WoAction::Return {
                reason: reason.clone(),
            },
        ),
        WoCommand::Escalate { id, team } => (id, WoAction::Escalate { team: team.clone() }),
        WoCommand::TakeOver { id, team } => (id, WoAction::TakeOver { team: team.clone() }),
        WoCommand::Reassign { id, team } => (id, WoAction::Reassign { team: team.clone() }),
    };
    let detail: OrderDetail = match &access {
        Access::Local { admin, .. } => admin.work_order_command("admin", id, action)?,
        Access::Remote(client) => {
            client
                .post(
                    &format!("/api/v1/work-orders/{}/actions", query_escape(id)),
                    &action,
                )
                .await?
        }
    };
    println!(
        "{} is {} (team {}, escalation level {})",
        detail.row.id,
        detail.row.state,
        detail.row.team.as_deref().unwrap_or("-"),
        detail.row.escalation_level
    );
    Ok(())
}

fn print_detail(detail: &OrderDetail, output: Output) -> Result<()> {
    if let Output::Json = output {
        println!("{}", serde_json::to_string_pretty(detail)?);
        return Ok(());
    }
    let row = &detail.row;
    println!(
        "{}  {}  {:?}  {}",
        row.id, row.state, row.severity, row.title
    );
    println!("  division     {} {}", row.division, row.division_path);
    println!("  team         {}", row.team.as_deref().unwrap_or("-"));
    if !row.supervisors.is_empty() {
        println!("  supervisors  {}", row.supervisors.join(" → "));
    }
    if let Some(cause) = &row.suppressed_by {
        println!("  suppressed by {cause}");
    }
    if let Some(due) = row.ack_due_ms {
        println!("  ack by       {}", time(due));
    }
    if let Some(due) = row.handle_due_ms {
        println!("  resolve by   {}", time(due));
    }
    if let Some(feedback) = &detail.order.feedback {
        println!("  feedback     {feedback}");
    }
    println!("  log:");
    for transition in &detail.transitions {
        println!(
            "    {}  {:<13} → {:<13} {:?} by {}{}",
            time(transition.at),
            bagui_ops::workorder::state_name(transition.from),
            bagui_ops::workorder::state_name(transition.to),
            transition.command,
            transition.actor,
            if transition.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", transition.detail)
            }
        );
    }
    Ok(())
}

fn parse_on_duty(text: &str) -> OnDutyPerson {
    match text.split_once(':') {
        Some((name, phone)) => OnDutyPerson {
            phone: Some(phone.trim().to_owned()),
            ..OnDutyPerson::named(name.trim())
        },
        None => OnDutyPerson::named(text.trim()),
    }
}

pub(crate) async fn team_command(access: Access, command: &TeamCommand) -> Result<()> {
    match command {
        TeamCommand::List { output } => {
            let teams: Vec<Team> = match &access {
                Access::Local { admin, .. } => admin.teams()?,
                Access::Remote(client) => client.get("/api/v1/teams").await?,
            };
            print_rows(
                *output,
                &teams,
                &["id", "division", "categories", "channels", "name"],
                |team| {
                    vec![
                        team.id.clone(),
                        team.division.clone(),
                        if team.categories.is_empty() {
                            "all".into()
                        } else {
                            team.categories
                                .iter()
                                .map(|c| format!("{c:?}").to_lowercase())
                                .collect::<Vec<_>>()
                                .join(",")
                        },
                        team.channels
                            .iter()
                            .map(|channel| channel.kind().to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                        team.name.clone(),
                    ]
                },
            )
        }
        TeamCommand::Put(put) => {
            let TeamPut {
                id,
                name,
                division,
                categories,
                wecom,
                dingtalk,
                dingtalk_secret,
                feishu,
                feishu_secret,
                webhook,
                on_duty,
                roster_file,
            } = put.as_ref();
            let roster = match roster_file {
                Some(path) => Some(
                    serde_json::from_str::<bagui_ops::access::Roster>(
                        &std::fs::read_to_string(path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    )
                    .with_context(|| format!("{} is not a duty roster", path.display()))?,
                ),
                None => None,
            };
            let mut parsed = Vec::new();
            for category in categories {
                let known = ["host", "network", "security", "application"];
                if !known.contains(&category.as_str()) {
                    bail!("unknown category {category:?}; one of {}", known.join(", "));
                }
                parsed.push(Category::from_label(category));
            }
            let mut channels = Vec::new();
            channels.extend(wecom.iter().map(|url| ChannelConfig::Wecom {
                url: url.clone(),
                format: MessageFormat::Text,
            }));
            channels.extend(dingtalk.iter().map(|url| ChannelConfig::Dingtalk {
                url: url.clone(),
                secret: dingtalk_secret.clone(),
                format: MessageFormat::Text,
            }));
            channels.extend(feishu.iter().map(|url| ChannelConfig::Feishu {
                url: url.clone(),
                secret: feishu_secret.clone(),
            }));
            channels.extend(webhook.iter().map(|url| ChannelConfig::Webhook {
                url: url.clone(),
                bearer_token: None,
            }));
            let team = Team {
                id: id.clone(),
                name: name.clone(),
                division: division.clone(),
                categories: parsed,
                channels,
                on_duty: on_duty.iter().map(|text| parse_on_duty(text)).collect(),
                roster,
                created_ms: 0,
            };
            let team: Team = match &access {
                Access::Local { admin, .. } => admin.put_team("admin", team)?,
                Access::Remote(client) => client.post("/api/v1/teams", &team).await?,
            };
            println!("team {} ({}) at {}", team.id, team.name, team.division);
            Ok(())
        }
        TeamCommand::Remove { id } => {
            let team: Team = match &access {
                Access::Local { admin, .. } => admin.remove_team("admin", id)?,
                Access::Remote(client) => {
                    client
                        .delete(&format!("/api/v1/teams/{}", query_escape(id)))
                        .await?
                }
            };
            println!("team {} removed", team.id);
            Ok(())
        }
    }
}

pub(crate) async fn intake_token_command(
    access: Access,
    command: &IntakeTokenCommand,
) -> Result<()> {
    match command {
        IntakeTokenCommand::Create { name } => {
            let request = CreateIntakeToken { name: name.clone() };
            let created: NewIntakeToken = match &access {
                Access::Local { admin, .. } => admin.create_intake_token("admin", &request)?,
                Access::Remote(client) => client.post("/api/v1/intake-tokens", &request).await?,
            };
            println!(
                "intake token {} ({}); send it as `Authorization: Bearer <token>` to \
                 /api/v1/intake/alertmanager or /api/v1/intake/generic:",
                created.record.id, created.record.name
            );
            println!("{}", created.token);
            Ok(())
        }
    }
}

pub(crate) async fn notify_command(access: Access, command: &NotifyCommand) -> Result<()> {
    match command {
        NotifyCommand::List { limit, output } => {
            let entries: Vec<OutboxEntry> = access
                .read(
                    |admin| admin.notifications(*limit),
                    || format!("/api/v1/notifications?limit={limit}"),
                )
                .await
                .context("reading the notification outbox")?;
            print_rows(
                *output,
                &entries,
                &[
                    "id", "order", "team", "channel", "attempts", "state", "error",
                ],
                |entry| {
                    vec![
                        entry.id.to_string(),
                        entry.notification.work_order_id.clone(),
                        entry.team.clone(),
                        entry.channel.kind().to_string(),
                        entry.attempts.to_string(),
                        if entry.failed { "failed" } else { "pending" }.into(),
                        entry.last_error.clone().unwrap_or_default(),
                    ]
                },
            )
        }
    }
}

pub(crate) async fn incident_command(access: Access, command: &IncidentCommand) -> Result<()> {
    match command {
        IncidentCommand::List { output } => {
            let incidents: Vec<bagui_ops::incidents::Incident> = access
                .read(|admin| admin.incidents(), || "/api/v1/incidents".into())
                .await?;
            print_rows(
                *output,
                &incidents,
                &["id", "fingerprint", "severity", "phase", "opened", "title"],
                |incident| {
                    vec![
                        incident.id.to_string(),
                        incident.fingerprint.clone(),
                        format!("{:?}", incident.severity),
                        format!("{:?}", incident.phase),
                        time(incident.opened_at),
                        incident.title.clone(),
                    ]
                },
            )
        }
    }
}

#[derive(Subcommand)]
pub enum UserCommand {
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Create a user: roles (operator, security_analyst, viewer, system_admin,
    /// security_admin, audit_admin — the three administrators never combined) and the division
    /// subtree they see.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long, value_delimiter = ',', required = true)]
        role: Vec<String>,
        /// Division code of the user's scope.
        #[arg(long)]
        scope: String,
        /// Teams the user belongs to.
        #[arg(long, value_delimiter = ',')]
        team: Vec<String>,
        /// File whose first line is the password (else the user has none until `passwd`).
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
    },
    /// Set a user's password from the first line of a file.
    Passwd {
        name: String,
        #[arg(long)]
        password_file: std::path::PathBuf,
    },
    /// Enrol a TOTP second factor (required for administrators); prints the otpauth URI.
    Totp {
        name: String,
    },
    /// Issue an API token for a user (for scripts); the bare token is the last line printed.
    Token {
        name: String,
        #[arg(long, default_value = "script")]
        purpose: String,
        #[arg(long, default_value = "90d")]
        ttl: String,
    },
    Remove {
        name: String,
    },
}

fn read_password(path: &std::path::Path) -> Result<bagui_ops::access::Secret> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the password from {}", path.display()))?;
    let line = text.lines().next().unwrap_or("").to_owned();
    if line.is_empty() {
        bail!("{} has an empty first line", path.display());
    }
    Ok(bagui_ops::access::Secret::new(line))
}

pub(crate) async fn user_command(access: Access, command: &UserCommand) -> Result<()> {
    use crate::users::{CreateUser, IssuedToken, TotpEnrolment, UserView};
    match command {
        UserCommand::List { output } => {
            let users: Vec<UserView> = access
                .read(|admin| admin.users(), || "/api/v1/users".into())
                .await?;
            print_rows(
                *output,
                &users,
                &[
                    "name",
                    "roles",
                    "scope",
                    "teams",
                    "totp",
                    "locked",
                    "scope_path",
                ],
                |user| {
                    vec![
                        user.name.clone(),
                        user.roles
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        user.scope.clone(),
                        user.teams.join(","),
                        if user.totp_enrolled { "yes" } else { "no" }.into(),
                        user.locked_until.map(time).unwrap_or_default(),
                        user.scope_path.clone(),
                    ]
                },
            )
        }
        UserCommand::Add {
            name,
            role,
            scope,
            team,
            password_file,
        } => {
            let roles = role
                .iter()
                .map(|text| text.parse::<bagui_ops::access::Role>())
                .collect::<Result<Vec<_>, _>>()?;
            let request = CreateUser {
                name: name.clone(),
                roles,
                scope: scope.clone(),
                teams: team.clone(),
                password: password_file.as_deref().map(read_password).transpose()?,
            };
            let user: UserView = match &access {
                Access::Local { admin, .. } => admin.create_user("admin", &request)?,
                Access::Remote(client) => client.post("/api/v1/users", &request).await?,
            };
            println!(
                "user {} ({}) sees {}",
                user.name, user.scope, user.scope_path
            );
            Ok(())
        }
        UserCommand::Passwd {
            name,
            password_file,
        } => {
            let password = read_password(password_file)?;
            let _: UserView = match &access {
                Access::Local { admin, .. } => admin.set_password("admin", name, &password)?,
                Access::Remote(client) => {
                    client
                        .post(
                            &format!("/api/v1/users/{}/password", query_escape(name)),
                            &serde_json::json!({ "password": password.expose() }),
                        )
                        .await?
                }
            };
            println!("password of {name} set");
            Ok(())
        }
        UserCommand::Totp { name } => {
            let enrolment: TotpEnrolment = match &access {
                Access::Local { admin, .. } => admin.enroll_totp("admin", name)?,
                Access::Remote(client) => {
                    client
                        .post(
                            &format!("/api/v1/users/{}/totp", query_escape(name)),
                            &serde_json::json!({}),
                        )
                        .await?
                }
            };
            println!("add this to the user's authenticator app (shown once):");
            println!("{}", enrolment.otpauth_uri.expose());
            println!("{}", enrolment.secret.expose());
            Ok(())
        }
        UserCommand::Token { name, purpose, ttl } => {
            let issued: IssuedToken = match &access {
                Access::Local { admin, .. } => {
                    let ttl = bagui_protocol::units::parse_duration(ttl)
                        .map_err(|error| anyhow::anyhow!("--ttl: {error}"))?;
                    admin.issue_user_token("admin", name, purpose, ttl.as_millis() as u64)?
                }
                Access::Remote(client) => {
                    client
                        .post(
                            &format!("/api/v1/users/{}/tokens", query_escape(name)),
                            &serde_json::json!({ "purpose": purpose, "ttl": ttl }),
                        )
                        .await?
                }
            };
            println!(
                "token for {} until {} (send as `Authorization: Bearer`):",
                issued.user,
                time(issued.expires_ms)
            );
            println!("{}", issued.token.expose());
            Ok(())
        }
        UserCommand::Remove { name } => {
            let user: UserView = match &access {
                Access::Local { admin, .. } => admin.remove_user("admin", name)?,
                Access::Remote(client) => {
                    client
                        .delete(&format!("/api/v1/users/{}", query_escape(name)))
                        .await?
                }
            };
            println!("user {} removed", user.name);
            Ok(())
        }
    }
}
