//! The `convertrilo` binary: `serve` (API plus in-process workers), `worker` (workers only,
//! for other machines on the same database and object store), `workers` (the worker
//! registry), `migrate`, `config`, and `admin` commands that scripts use to create accounts
//! and keys against the same database while the server runs.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use convertrilo_core::Neu;
use convertrilo_server::{
    accounts, startup, startup::WorkerProcess, telemetry, Application, Config,
};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "convertrilo",
    version,
    about = "Self-hostable video encoding service (Convertrilo Encode API)"
)]
struct Cli {
    /// Configuration file (default: ./convertrilo.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory: database, stored files, scratch space [env: CONVERTRILO_DATA_DIR].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and in-process workers.
    Serve(ServeArgs),
    /// Run encode workers only, on the database and object store of the configuration
    /// (CONVERTRILO_DATABASE_URL, CONVERTRILO_STORAGE_URL, …); stops on SIGTERM after its
    /// jobs finish (or hands them back after drain_timeout_secs, or at a second SIGTERM).
    Worker(WorkerArgs),
    /// List registered worker processes: state, capabilities, current jobs, last heartbeat.
    Workers {
        #[arg(long)]
        json: bool,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Print the merged configuration (secrets redacted).
    Config,
    /// Manage accounts and API keys.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on [env: CONVERTRILO_LISTEN] [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<String>,
    /// In-process encode workers; 0 runs the API only [env: CONVERTRILO_WORKERS] [default: 1].
    #[arg(long)]
    workers: Option<usize>,
}

#[derive(Args)]
struct WorkerArgs {
    /// Jobs this process runs at once [env: CONVERTRILO_WORKERS] [default: 1].
    #[arg(long)]
    slots: Option<usize>,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a user account.
    CreateUser {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
        /// Tokens (NEU) to grant the new account, e.g. 100 or 12.5.
        #[arg(long, value_name = "NEU", allow_hyphen_values = true)]
        grant: Option<String>,
        /// Make the account an administrator.
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        json: bool,
    },
    /// Add paid tokens (NEU) to an account.
    Grant {
        #[arg(long)]
        email: String,
        /// Amount, e.g. 100 or 12.5.
        #[arg(long, value_name = "NEU", allow_hyphen_values = true)]
        amount: String,
        #[arg(long)]
        json: bool,
    },
    /// Ban an account: its keys and logins stop working at once (jobs and data are kept).
    Ban {
        #[arg(long)]
        email: String,
    },
    /// Lift a ban.
    Unban {
        #[arg(long)]
        email: String,
    },
    /// Forget which object store the fleet uses, so the next process to start names its
    /// own: only after a first start that was cut off, or when moving to a new, empty store
    /// on purpose (jobs whose objects stay behind in the old store will not find them).
    ForgetStore {
        /// Go ahead although jobs or live workers use the store the database names.
        #[arg(long)]
        force: bool,
    },
    /// Create an API key for a user; the raw key is printed once.
    CreateApiKey {
        #[arg(long)]
        email: String,
        /// Comma-separated scopes (default: all): jobs:create,jobs:read,jobs:cancel,tokens:read,tokens:write,webhooks:manage,credentials:manage
        #[arg(long)]
        scopes: Option<String>,
        #[arg(long, value_name = "N")]
        expires_in_days: Option<u32>,
        #[arg(long, default_value = "cli")]
        name: String,
        #[arg(long)]
        json: bool,
    },
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    if let Command::Serve(args) = &cli.command {
        if let Some(listen) = &args.listen {
            config.listen = listen.clone();
        }
        if let Some(workers) = args.workers {
            config.workers = workers;
        }
    }
    if let Command::Worker(WorkerArgs { slots: Some(n) }) = &cli.command {
        config.workers = *n;
    }
    Ok(config)
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("error: {}", describe(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, each said once: a cause's text is often already part of its
/// parent's (the database driver's errors repeat their source).
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(&cli)?;
    match cli.command {
        Command::Serve(_) => serve(config).await,
        Command::Worker(_) => worker(config).await,
        Command::Workers { json } => {
            let repos = open_existing(&config).await?;
            list_workers(&config, &repos, json).await
        }
        Command::Migrate => {
            startup::open_repos(&config).await?;
            println!("database at {} is up to date", config.database_url());
            Ok(())
        }
        Command::Config => {
            print!("{}", config.redacted_toml());
            Ok(())
        }
        Command::Admin(cmd) => admin(config, cmd).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    telemetry::init(&config.log);
    let (data_dir, workers, admin_email) = (
        config.data_dir.clone(),
        config.workers,
        config.bootstrap_admin_email.clone(),
    );
    let app = Application::build(config).await?;
    let url = app.public_url().to_string();
    println!(
        "Convertrilo is listening on {url} (data in {}, {workers} in-process worker(s))",
        data_dir.display()
    );
    let key_ref = match &app.bootstrap {
        Some(b) => {
            println!("\nFirst start: created the admin account {} (password: {}) and an API key with every scope.", b.email, b.password);
            println!(
                "The key is shown only this once; keep it:\n\n  export CONVERTRILO_API_KEY={}\n",
                b.api_key
            );
            "$CONVERTRILO_API_KEY".to_string()
        }
        None => {
            println!(
                "\nNeed an API key? convertrilo admin create-api-key --data-dir {} --email {}",
                data_dir.display(),
                admin_email
            );
            "$CONVERTRILO_API_KEY".to_string()
        }
    };
    println!("Send a first job (replace the sourceUrl with any http(s) URL of a video):\n");
    println!(
        "  curl -s {url}/jobs -H \"X-API-Key: {key_ref}\" -H 'Content-Type: application/json' \\"
    );
    println!("    -d '{{\"codec\":\"h264\",\"resolution\":\"720p\",\"fps\":30,\"sourceUrl\":\"https://example.com/video.mp4\",\"confirm\":true}}'");
    println!("  curl -s {url}/jobs/JOB_ID/status -H \"X-API-Key: {key_ref}\"\n");
    let hurry = app.hand_back_now();
    app.run_until(stop_signals(hurry)).await
}

async fn worker(config: Config) -> anyhow::Result<()> {
    telemetry::init(&config.log);
    if config.workers == 0 {
        anyhow::bail!("a worker needs at least one slot: pass --slots 1 or more");
    }
    let database = convertrilo_server::config::redact_url(&config.database_url());
    let storage = config.storage_url.clone();
    let process = WorkerProcess::start(config).await?;
    let caps = process
        .state()
        .caps
        .worker_caps(process.state().config.workers as u32);
    println!(
        "Convertrilo worker {} running {} slot(s) on {database} (storage: {})",
        process.id,
        caps.slots,
        storage.as_deref().unwrap_or("the local data directory"),
    );
    println!(
        "encoders: {}; GPU encoders: {}; libvmaf: {}",
        caps.encoders.join(", "),
        if caps.gpu_encoders.is_empty() {
            "none".into()
        } else {
            caps.gpu_encoders.join(", ")
        },
        if caps.libvmaf { "yes" } else { "no" }
    );
    let hurry = process.hand_back_now();
    process.run_until(stop_signals(hurry)).await
}

async fn list_workers(
    config: &Config,
    repos: &convertrilo_db::Repos,
    json: bool,
) -> anyhow::Result<()> {
    let now = convertrilo_core::time::now_ms();
    let live_since = config.worker_live_since(now);
    let workers = repos.workers.workers().await?;
    let state = |w: &convertrilo_db::WorkerRecord| {
        if w.last_seen < live_since {
            "lost"
        } else if w.stopping {
            "draining"
        } else {
            "live"
        }
    };
    if json {
        let out: Vec<_> = workers
            .iter()
            .map(|w| {
                serde_json::json!({
                    "id": w.worker.id, "host": w.worker.host, "version": w.worker.version,
                    "state": state(&w.worker), "slots": w.worker.caps.slots,
                    "capabilities": w.worker.caps,
                    "secondsSinceHeartbeat": (now - w.worker.last_seen).max(0) as f64 / 1000.0,
                    "currentJobs": w.jobs.iter().map(|j| j.to_string()).collect::<Vec<_>>(),
                    "startedAt": convertrilo_core::time::rfc3339(w.worker.started_at),
                    "lastHeartbeat": convertrilo_core::time::rfc3339(w.worker.last_seen),
                })
            })
            .collect();
        return print_out(&format!("{}\n", serde_json::json!({ "workers": out })));
    }
    if workers.is_empty() {
        return print_out("no workers registered\n");
    }
    let mut rows = vec![[
        "ID".to_string(),
        "HOST".into(),
        "STATE".into(),
        "SLOTS".into(),
        "ENCODERS (GPU) VMAF".into(),
        "HEARTBEAT".into(),
        "JOBS".into(),
    ]];
    for w in &workers {
        let r = &w.worker;
        let mut encoders = r.caps.encoders.join(",");
        if !r.caps.gpu_encoders.is_empty() {
            encoders.push_str(&format!(" ({})", r.caps.gpu_encoders.join(",")));
        }
        if r.caps.libvmaf {
            encoders.push_str(" vmaf");
        }
        let jobs: Vec<String> = w.jobs.iter().map(|j| j.to_string()).collect();
        rows.push([
            r.id.clone(),
            r.host.clone(),
            state(r).into(),
            r.caps.slots.to_string(),
            encoders,
            format!("{}s", (now - r.last_seen).max(0) / 1000),
            if jobs.is_empty() {
                "-".into()
            } else {
                jobs.join(",")
            },
        ]);
    }
    print_out(&table(&rows))
}

/// Rows as columns two spaces apart, each as wide as its widest cell (ids and host names
/// vary in length); numbers right-aligned, the last column left ragged.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let width = |c: usize| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..N).map(width).collect();
    let numeric: Vec<bool> = (0..N)
        .map(|c| {
            rows[1..]
                .iter()
                .all(|r| r[c].trim_end_matches('s').parse::<u64>().is_ok())
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| match c {
                _ if c + 1 == N => cell.clone(),
                _ if numeric[c] => format!("{cell:>w$}", w = widths[c]),
                _ => format!("{cell:<w$}", w = widths[c]),
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Writes to stdout; a reader that went away (`convertrilo workers | head`) is not an error.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Resolves at the first stop signal, which starts a graceful stop (running jobs get
/// `drain_timeout_secs` to finish); a second signal then hands them back at once.
async fn stop_signals(hurry: impl Fn() + Send + 'static) {
    shutdown_signal().await;
    tokio::spawn(async move {
        shutdown_signal().await;
        hurry();
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn admin(config: Config, cmd: AdminCommand) -> anyhow::Result<()> {
    let repos = open_existing(&config).await?;
    match cmd {
        AdminCommand::CreateUser {
            email,
            password,
            grant,
            admin,
            json,
        } => {
            let grant = grant
                .map(|g| {
                    Neu::parse(&g)
                        .with_context(|| format!("--grant {g:?} is not an amount like 100 or 12.5"))
                })
                .transpose()?;
            let trial = config.trial();
            let user =
                accounts::create_user(&repos, &email, &password, admin, grant, trial).await?;
            if json {
                let out = serde_json::json!({
                    "id": user.id, "email": user.email, "isAdmin": user.is_admin,
                    "granted": grant.unwrap_or(Neu::ZERO),
                    "trial": trial.map(|t| t.amount).unwrap_or(Neu::ZERO),
                    "trialExpiresAt": trial.map(|t| convertrilo_core::time::rfc3339(t.expires_at)),
                });
                println!("{out}");
            } else {
                println!("created user {} ({})", user.email, user.id);
            }
        }
        AdminCommand::Grant {
            email,
            amount,
            json,
        } => {
            let amount = Neu::parse(&amount)
                .filter(|a| *a > Neu::ZERO)
                .with_context(|| {
                    format!("--amount {amount:?} is not a positive amount like 100 or 12.5")
                })?;
            let (email, user) = find_user(&repos, &email).await?;
            let b = repos.ledger.grant(user.id, amount).await?;
            if json {
                let out = serde_json::json!({
                    "email": email, "granted": amount, "available": b.available, "reserved": b.reserved,
                    "spent": b.spent, "expired": b.expired, "totalGranted": b.granted,
                });
                println!("{out}");
            } else {
                println!(
                    "granted {amount} NEU to {email}; available now {}",
                    b.available
                );
            }
        }
        AdminCommand::ForgetStore { force } => {
            if convertrilo_server::ownstore::forget_store(&config, &repos, force).await? {
                println!("the database no longer names an object store; the next process to start names its own");
            } else {
                println!("the database named no object store; nothing to do");
            }
        }
        AdminCommand::Ban { email } => set_banned(&repos, &email, true).await?,
        AdminCommand::Unban { email } => set_banned(&repos, &email, false).await?,
        AdminCommand::CreateApiKey {
            email,
            scopes,
            expires_in_days,
            name,
            json,
        } => {
            let scopes = accounts::parse_scopes(scopes.as_deref())?;
            let (key, raw) =
                accounts::create_api_key(&repos, &email, &name, scopes, expires_in_days).await?;
            if json {
                let out = serde_json::json!({
                    "id": key.id, "name": key.name, "key": raw, "prefix": key.prefix, "scopes": key.scopes,
                    "expiresAt": key.expires_at.map(convertrilo_core::time::rfc3339),
                    "createdAt": convertrilo_core::time::rfc3339(key.created_at),
                });
                println!("{out}");
            } else {
                println!("{raw}");
            }
        }
    }
    Ok(())
}

async fn set_banned(
    repos: &convertrilo_db::Repos,
    email: &str,
    banned: bool,
) -> anyhow::Result<()> {
    let (email, user) = find_user(repos, email).await?;
    repos.auth.set_banned(user.id, banned).await?;
    println!("{} {email}", if banned { "banned" } else { "unbanned" });
    Ok(())
}

/// Opens the database of a server that has run before.
async fn open_existing(config: &Config) -> anyhow::Result<convertrilo_db::Repos> {
    // A mistyped --data-dir must not quietly create an empty database beside the real one.
    let db_file = config.data_dir.join("convertrilo.db");
    if config.database_url.is_none() && !db_file.is_file() {
        anyhow::bail!(
            "no Convertrilo database at {}: pass the --data-dir the server uses (start the server once to create one)",
            db_file.display()
        );
    }
    startup::open_repos(config).await
}

/// The account with this email (normalised as accounts store it).
async fn find_user(
    repos: &convertrilo_db::Repos,
    email: &str,
) -> anyhow::Result<(String, convertrilo_db::User)> {
    let email = email.trim().to_ascii_lowercase();
    let user = repos
        .accounts
        .user_by_email(&email)
        .await?
        .with_context(|| format!("no user with email {email}"))?;
    Ok((email, user))
}
