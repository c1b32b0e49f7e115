//! Building and running the service: tools and capabilities, database, object store, signing
//! secret, first-start bootstrap, listener (port 0 in tests), workers.

use crate::{
    accounts,
    config::Config,
    http,
    outbound::{Network, Outbound, Policy, ProbeProxy, SystemNetwork},
    state::{AppState, RunningJobs},
};
use crate::{external::drive::DriveApi, secrets::SecretBox};
use anyhow::Context;
use convertrilo_core::Scope;
use convertrilo_db::Repos;
use convertrilo_media::{Capabilities, ScratchRoot, Tools};
use convertrilo_storage::{s3::S3Client, UrlSigner};
use rand::{distributions::Alphanumeric, Rng};
use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// The admin account and key created on first start; shown once.
#[derive(Debug, Clone)]
pub struct BootstrapCredentials {
    pub email: String,
    pub password: String,
    pub api_key: String,
}

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    router: axum::Router,
    drain: CancellationToken,
    shutdown: CancellationToken,
    slots: Vec<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    pub bootstrap: Option<BootstrapCredentials>,
    pub swept_scratch_dirs: usize,
}

/// ffmpeg/ffprobe from config, else from PATH.
pub fn tools(config: &Config) -> Tools {
    Tools {
        ffmpeg: config
            .ffmpeg
            .clone()
            .unwrap_or_else(|| PathBuf::from("ffmpeg")),
        ffprobe: config
            .ffprobe
            .clone()
            .unwrap_or_else(|| PathBuf::from("ffprobe")),
    }
}

/// Opens the configured database (used by the server and by the admin commands).
pub async fn open_repos(config: &Config) -> anyhow::Result<Repos> {
    // The default SQLite file lives in the data directory; a PostgreSQL admin command run
    // from any directory leaves no empty data directory behind.
    if config.database_url().starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    }
    convertrilo_db::connect(&config.database_url())
        .await
        .with_context(|| {
            format!(
                "opening the database {} (check CONVERTRILO_DATABASE_URL: host, port, user, password, database name)",
                crate::config::redact_url(&config.database_url())
            )
        })
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        Self::build_with_network(config, Arc::new(SystemNetwork)).await
    }

    /// As [`Application::build`], resolving customer-given host names with `network`. The
    /// service uses the system resolver; tests use this to make a loopback server stand in
    /// for a public host, so that the address checks run exactly as in service.
    pub async fn build_with_network(
        config: Config,
        network: Arc<dyn Network>,
    ) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let public_url = config.public_url.clone().unwrap_or_else(|| {
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                addr.ip().to_string()
            };
            let host = if addr.is_ipv6() && !addr.ip().is_unspecified() {
                format!("[{host}]")
            } else {
                host
            };
            format!("http://{host}:{}", addr.port())
        });
        let Process {
            state,
            drain,
            shutdown,
            mut tasks,
        } = Process::start(config, network, public_url).await?;
        let bootstrap = bootstrap(&state).await?;
        let mut state = state;
        if state.config.public_jobs_enabled {
            state.public_owner = Some(public_owner(&state.repos).await?);
            tracing::info!(
                max_duration_secs = state.config.public_max_duration_secs,
                max_source_bytes = state.config.public_max_source_bytes,
                "public jobs are enabled: anyone who can reach this server may encode short clips for free"
            );
        }

        let (mut slots, mut swept_scratch_dirs) = (Vec::new(), 0);
        if state.config.workers > 0 {
            let (workers, swept) =
                start_workers(&state, state.config.workers, &drain, &shutdown).await?;
            swept_scratch_dirs = swept;
            slots = workers.slots;
            tasks.extend(workers.support);
        } else {
            tracing::info!("API only: no in-process workers (run `convertrilo worker` processes on the same database and storage)");
        }
        tasks.push(crate::callbacks::spawn(state.clone(), shutdown.clone()));
        tasks.push(crate::webhooks::spawn(state.clone(), shutdown.clone()));
        tasks.push(crate::housekeeping::spawn(state.clone(), shutdown.clone()));
        tasks.push(crate::queue_watch::spawn(state.clone(), shutdown.clone()));
        let router = http::router(state.clone());
        Ok(Application {
            listener,
            addr,
            state,
            router,
            drain,
            shutdown,
            slots,
            tasks,
            bootstrap,
            swept_scratch_dirs,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn public_url(&self) -> &str {
        self.state.signer.base_url()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A switch that cuts a stop's drain short: running jobs are handed back to the queue
    /// at once (for an operator who sends a second stop signal rather than wait).
    pub fn hand_back_now(&self) -> impl Fn() + Send + Sync + 'static {
        let shutdown = self.shutdown.clone();
        move || {
            tracing::warn!("stop hurried: handing running jobs back to the queue now");
            shutdown.cancel()
        }
    }

    /// Serves until `signal` completes, then drains: no new requests or jobs, running jobs
    /// get `drain_timeout_secs` to finish, and the rest go back to the queue.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let drain = self.drain.clone();
        let serve_drain = drain.clone();
        tokio::spawn(async move {
            signal.await;
            serve_drain.cancel();
        });
        // Client addresses feed the per-IP limits of the login route.
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, service)
            .with_graceful_shutdown(async move { drain.cancelled().await })
            .await?;
        stop(
            &self.state,
            self.drain,
            self.shutdown,
            self.slots,
            self.tasks,
        )
        .await;
        Ok(())
    }
}

/// A `convertrilo worker` process: workers only, on the database and storage in `config`.
pub struct WorkerProcess {
    state: AppState,
    drain: CancellationToken,
    shutdown: CancellationToken,
    slots: Vec<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    pub id: String,
    pub swept_scratch_dirs: usize,
}

impl WorkerProcess {
    pub async fn start(config: Config) -> anyhow::Result<WorkerProcess> {
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.listen));
        let slots_wanted = config.workers.max(1);
        let Process {
            state,
            drain,
            shutdown,
            mut tasks,
        } = Process::start(config, Arc::new(SystemNetwork), public_url).await?;
        let (workers, swept) = start_workers(&state, slots_wanted, &drain, &shutdown).await?;
        tasks.extend(workers.support);
        Ok(WorkerProcess {
            id: state.worker_id.clone(),
            state,
            drain,
            shutdown,
            slots: workers.slots,
            tasks,
            swept_scratch_dirs: swept,
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A switch that cuts a stop's drain short: running jobs are handed back to the queue
    /// at once (for an operator who sends a second stop signal rather than wait).
    pub fn hand_back_now(&self) -> impl Fn() + Send + Sync + 'static {
        let shutdown = self.shutdown.clone();
        move || {
            tracing::warn!("stop hurried: handing running jobs back to the queue now");
            shutdown.cancel()
        }
    }

    /// Works until `signal` completes, then drains as [`Application::run_until`] does.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        signal.await;
        stop(
            &self.state,
            self.drain,
            self.shutdown,
            self.slots,
            self.tasks,
        )
        .await;
        Ok(())
    }
}

/// What both kinds of process share once started.
struct Process {
    state: AppState,
    drain: CancellationToken,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

async fn start_workers(
    state: &AppState,
    count: usize,
    drain: &CancellationToken,
    shutdown: &CancellationToken,
) -> anyhow::Result<(crate::worker::Workers, usize)> {
    let owner = format!("p{}-{}", std::process::id(), state.worker_id);
    let (scratch, swept) = ScratchRoot::create(&state.config.scratch_dir(), &owner)
        .context("creating the scratch directory")?;
    if swept > 0 {
        tracing::info!(
            swept,
            "removed scratch directories left by a stopped process"
        );
    }
    let workers = crate::worker::spawn(
        state.clone(),
        Arc::new(scratch),
        state.worker_id.clone(),
        count,
        drain.clone(),
        shutdown.clone(),
    )
    .await;
    Ok((workers, swept))
}

/// The two-step stop: wait up to `drain_timeout_secs` for the slots to finish their jobs
/// (they take no new ones once `drain` fired), then shut down: unfinished jobs are handed
/// back, background tasks end, the worker leaves the registry.
async fn stop(
    state: &AppState,
    drain: CancellationToken,
    shutdown: CancellationToken,
    slots: Vec<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
) {
    drain.cancel();
    tracing::info!(
        drain_timeout_secs = state.config.drain_timeout_secs,
        "stopping: no new jobs; running jobs may finish"
    );
    let mut slots = futures::future::join_all(slots);
    let grace = Duration::from_secs(state.config.drain_timeout_secs);
    if tokio::time::timeout(grace, &mut slots).await.is_err() {
        tracing::info!("drain timeout passed: handing running jobs back to the queue");
        shutdown.cancel();
        slots.await;
    }
    shutdown.cancel();
    futures::future::join_all(tasks).await;
    tracing::info!("stopped");
}

impl Process {
    async fn start(
        config: Config,
        network: Arc<dyn Network>,
        public_url: String,
    ) -> anyhow::Result<Process> {
        let policy = Policy::from_config(&config).map_err(|m| anyhow::anyhow!(m))?;
        if policy.allow_private {
            tracing::warn!(
                "ingest_allow_private_networks is ON: source URLs and webhooks may reach loopback, private and link-local addresses (including cloud metadata services); never enable this on a server that untrusted clients can use"
            );
        }
        if !policy.ingest_enabled {
            tracing::info!("URL ingest is off: sources must be uploaded");
        }
        let repos = open_repos(&config).await?;
        let tools = tools(&config);
        let caps = Capabilities::detect(&tools).await.map_err(|e| {
            anyhow::anyhow!("{e}\nffmpeg and ffprobe are required: run scripts/setup, or set CONVERTRILO_FFMPEG and CONVERTRILO_FFPROBE")
        })?;
        tracing::info!("media toolchain: {}", caps.summary());
        let random_secret: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(48)
            .map(char::from)
            .collect();
        // Shared through the database so every API process signs and checks links alike.
        let secret = repos
            .accounts
            .setting_or_insert("url_signing_secret", &random_secret)
            .await?;
        let random_jwt: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(48)
            .map(char::from)
            .collect();
        let jwt_secret = repos
            .accounts
            .setting_or_insert("jwt_signing_secret", &random_jwt)
            .await?;
        let http_client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.download_timeout_secs))
            .read_timeout(Duration::from_secs(config.download_timeout_secs))
            .user_agent(concat!("convertrilo/", env!("CARGO_PKG_VERSION")))
            .build()?;
        // S3 answers a wrong region or endpoint with a redirect: report it, never follow it
        // (a followed redirect would also leave the endpoint that was checked).
        let s3_http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.download_timeout_secs))
            .read_timeout(Duration::from_secs(config.download_timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("convertrilo/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let secrets_key = match &config.job_secrets_key {
            Some(key) => key.clone(),
            None => {
                repos
                    .accounts
                    .setting_or_insert("job_secrets_key", &SecretBox::generate_hex())
                    .await?
            }
        };
        let secrets = SecretBox::from_hex(&secrets_key)?;
        let s3 = S3Client::new(
            s3_http,
            config.s3_multipart_threshold_bytes,
            config.s3_part_size_bytes,
        );
        let store = crate::ownstore::build(&config, &s3)?;
        let store_id =
            crate::ownstore::check_store_identity(&config, store.as_ref(), &repos).await?;
        let drive = DriveApi {
            http: http_client.clone(),
            api_base: config.google_drive_api_base.clone(),
            token_url: config.google_oauth_token_url.clone(),
            oauth_client: config
                .google_oauth_client_id
                .clone()
                .zip(config.google_oauth_client_secret.clone()),
            chunk_bytes: config.google_drive_chunk_bytes,
        };
        let outbound = Outbound::new(policy, network);
        let shutdown = CancellationToken::new();
        let (probe_proxy, proxy_task) = ProbeProxy::start(outbound.clone(), shutdown.clone())
            .await
            .context("starting the probe proxy on 127.0.0.1")?;

        let state = AppState {
            config: Arc::new(config),
            repos,
            store,
            store_id,
            signer: UrlSigner::new(secret.into_bytes(), &public_url),
            tools: Arc::new(tools),
            caps: Arc::new(caps),
            worker_id: crate::worker::new_worker_id(),
            running: RunningJobs::default(),
            outbound,
            probe_proxy,
            sessions: crate::session::SessionKeys::new(jwt_secret.into_bytes()),
            limits: crate::ratelimit::RateLimiter::default(),
            public_owner: None,
            secrets: Arc::new(secrets),
            s3,
            drive,
        };
        Ok(Process {
            state,
            drain: CancellationToken::new(),
            shutdown,
            tasks: vec![proxy_task],
        })
    }
}
/// The system account public jobs belong to: no tokens, no keys, a password nobody knows.
const PUBLIC_OWNER_EMAIL: &str = "public-jobs@convertrilo.invalid";

async fn public_owner(repos: &Repos) -> anyhow::Result<convertrilo_core::UserId> {
    if let Some(u) = repos.accounts.user_by_email(PUBLIC_OWNER_EMAIL).await? {
        return Ok(u.id);
    }
    let password: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    match accounts::create_user(repos, PUBLIC_OWNER_EMAIL, &password, false, None, None).await {
        Ok(u) => Ok(u.id),
        // Another process created it at the same moment.
        Err(accounts::AccountError::Exists(_)) => repos
            .accounts
            .user_by_email(PUBLIC_OWNER_EMAIL)
            .await?
            .map(|u| u.id)
            .ok_or_else(|| anyhow::anyhow!("the public jobs account vanished")),
        Err(e) => Err(e.into()),
    }
}

/// On an empty database: an admin account and an all-scopes API key.
async fn bootstrap(state: &AppState) -> anyhow::Result<Option<BootstrapCredentials>> {
    if state.repos.accounts.count_users().await? > 0 {
        return Ok(None);
    }
    let email = state.config.bootstrap_admin_email.clone();
    let password: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    let grant = Some(state.config.bootstrap_grant_neu);
    match accounts::create_user(
        &state.repos,
        &email,
        &password,
        true,
        grant,
        state.config.trial(),
    )
    .await
    {
        Ok(_) => {}
        // Another process bootstrapped at the same moment; it prints the credentials.
        Err(accounts::AccountError::Exists(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let (_, api_key) = accounts::create_api_key(
        &state.repos,
        &email,
        "bootstrap",
        <Scope as convertrilo_core::WireEnum>::ALL.to_vec(),
        None,
    )
    .await?;
    Ok(Some(BootstrapCredentials {
        email,
        password,
        api_key,
    }))
}
