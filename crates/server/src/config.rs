//! Configuration: code defaults → optional `convertrilo.toml` → `CONVERTRILO_*` environment
//! variables → command-line flags (applied by the CLI). Every field has an environment
//! variable named after it: `max_upload_bytes` ↔ `CONVERTRILO_MAX_UPLOAD_BYTES`.

use convertrilo_core::{
    pricing::{neu_decimal, PricingTable},
    time::now_ms,
    Neu,
};
use convertrilo_db::Trial;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the API listens on.
    pub listen: String,
    /// Holds the SQLite database, stored objects and scratch space.
    pub data_dir: PathBuf,
    /// In-process encode workers (0 = API only).
    pub workers: usize,
    /// Base of signed upload/download links; defaults to `http://<listen address>`.
    pub public_url: Option<String>,
    /// Defaults to `sqlite://<data_dir>/convertrilo.db`.
    pub database_url: Option<String>,
    /// ffmpeg and ffprobe binaries; found on PATH when unset.
    pub ffmpeg: Option<PathBuf>,
    pub ffprobe: Option<PathBuf>,
    /// Largest accepted upload or URL download, in bytes.
    pub max_upload_bytes: u64,
    pub upload_url_ttl_secs: u64,
    pub download_url_ttl_secs: u64,
    /// A worker that stops heartbeating loses its job after this long.
    pub lease_secs: u64,
    /// Times a job may be started before it is failed (protects against poison inputs).
    pub max_attempts: i32,
    /// How often a worker process tells the registry it is alive.
    pub worker_heartbeat_secs: u64,
    /// A worker not heard from for this long counts as gone (its jobs come back when their
    /// leases expire).
    pub worker_timeout_secs: u64,
    /// A queued job that no live worker can run (e.g. `policy: gpu_only` and no GPU worker)
    /// fails after waiting this long, instead of waiting forever.
    pub unrunnable_grace_secs: u64,
    /// On SIGTERM, running jobs get this long to finish before they are handed back to the
    /// queue (keep it below the supervisor's kill timeout).
    pub drain_timeout_secs: u64,
    /// Upper bound for one encode (all passes).
    pub encode_timeout_secs: u64,
    pub probe_timeout_secs: u64,
    /// Connect and idle-read timeout for URL ingest downloads (and for resolving their host).
    pub download_timeout_secs: u64,
    /// Accept `sourceUrl` jobs at all; when off, sources must be uploaded.
    pub url_ingest_enabled: bool,
    /// Let source URLs and webhooks reach loopback, private, link-local and other
    /// non-public addresses. Only for trusted deployments (and tests): it opens SSRF.
    pub ingest_allow_private_networks: bool,
    /// Hosts never fetched from or called (a name covers its subdomains; IPs match exactly,
    /// also as what a name resolves to).
    pub url_host_blocklist: Vec<String>,
    /// When not empty, the only hosts fetched from or called (names cover subdomains).
    pub url_host_allowlist: Vec<String>,
    /// Refuse sources whose host does not declare their size up front.
    pub require_content_length: bool,
    /// Encode smaller sources up to the requested box instead of keeping their size.
    pub allow_upscale: bool,
    /// Lifetime of a login's access token (JWT).
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token; each use rotates it.
    pub refresh_token_ttl_days: u64,
    /// Requests per minute per account, across authenticated routes.
    pub rate_limit_per_minute: u32,
    /// Login attempts per minute per client IP.
    pub login_rate_limit_per_minute: u32,
    /// Largest JSON request body.
    pub json_body_limit_bytes: usize,
    /// Per-minute prices: base by resolution × codec × fps band × preset × passes × optimize.
    pub pricing: PricingTable,
    /// Tokens every new account starts with; spent before paid tokens, until they expire.
    #[serde(deserialize_with = "neu_decimal")]
    pub trial_grant_neu: Neu,
    pub trial_days: u32,
    /// Paid tokens granted to the admin account created on first start.
    #[serde(deserialize_with = "neu_decimal")]
    pub bootstrap_grant_neu: Neu,
    /// Email of the admin account created on first start.
    pub bootstrap_admin_email: String,
    /// Log filter (`info`, `convertrilo=debug`, …).
    pub log: String,
    /// Serve the unauthenticated `/public/jobs…` endpoints (free, capped encodes).
    pub public_jobs_enabled: bool,
    /// Longest source a public job may encode.
    pub public_max_duration_secs: u64,
    /// Largest source a public job may upload or fetch.
    pub public_max_source_bytes: u64,
    /// Requests per minute per client IP across the public endpoints.
    pub public_rate_limit_per_minute: u32,
    /// How long one bulk request may spend probing its URL sources; items not probed by then
    /// are reported as such (send them again).
    pub bulk_probe_budget_secs: u64,
    /// How long an `Idempotency-Key` and its response are kept.
    pub idempotency_retention_hours: u64,
    /// Attempts at a job's one-off `webhook` callback before giving up.
    pub callback_max_attempts: i32,
    /// Wait before the first callback retry; later ones wait 6, 24 and 120 times as long.
    pub callback_retry_secs: u64,
    /// Managed webhooks an account may have.
    pub webhook_limit_per_account: u32,
    /// Webhook deliveries in flight at once (a receiver that never answers holds one).
    pub webhook_delivery_slots: usize,
    /// A receiver gets this long to answer.
    pub webhook_timeout_secs: u64,
    /// First retry wait; each later one doubles, up to 12 h.
    pub webhook_retry_base_secs: u64,
    /// Attempts per event before it is given up (19 at 5 s doubling span about three days).
    pub webhook_max_attempts: i32,
    /// Consecutive failed attempts that disable a webhook.
    pub webhook_max_failures: i32,
    /// Outputs larger than this go to a customer's S3 bucket as a multipart upload.
    pub s3_multipart_threshold_bytes: u64,
    /// Part size of multipart uploads (S3 wants at least 5 MiB for all parts but the last).
    pub s3_part_size_bytes: u64,
    /// Entries asked for per page when listing an S3 prefix or a Drive folder (1–1000).
    pub folder_list_page_size: usize,
    /// Base of the Google Drive v3 API.
    pub google_drive_api_base: String,
    /// Google's OAuth token endpoint, for refreshing customers' Drive access tokens.
    pub google_oauth_token_url: String,
    /// The OAuth client customers' refresh tokens belong to; without both id and secret an
    /// expired access token cannot be renewed and the job fails saying so.
    pub google_oauth_client_id: Option<String>,
    pub google_oauth_client_secret: Option<String>,
    /// Chunk size of resumable Drive uploads (a multiple of 256 KiB).
    pub google_drive_chunk_bytes: u64,
    /// Key (64 hex characters) sealing customers' credentials at rest; a random key kept in
    /// the database is used when unset.
    pub job_secrets_key: Option<String>,
    /// Where the service keeps its own objects (uploads, outputs, stream parts): unset for
    /// `<data_dir>/objects`, or `s3://bucket/prefix` for an S3-compatible bucket.
    pub storage_url: Option<String>,
    /// Endpoint of that bucket's S3 service; AWS's regional endpoint when unset.
    pub storage_s3_endpoint: Option<String>,
    pub storage_s3_region: String,
    pub storage_s3_access_key_id: Option<String>,
    pub storage_s3_secret_access_key: Option<String>,
    /// Address the bucket as `endpoint/bucket/key` (MinIO and most self-hosted servers).
    pub storage_s3_force_path_style: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("data"),
            workers: 1,
            public_url: None,
            database_url: None,
            ffmpeg: None,
            ffprobe: None,
            max_upload_bytes: 20 * 1024 * 1024 * 1024,
            upload_url_ttl_secs: 24 * 3600,
            download_url_ttl_secs: 24 * 3600,
            lease_secs: 30,
            max_attempts: 3,
            worker_heartbeat_secs: 5,
            worker_timeout_secs: 20,
            unrunnable_grace_secs: 10,
            drain_timeout_secs: 25,
            encode_timeout_secs: 6 * 3600,
            probe_timeout_secs: 30,
            download_timeout_secs: 30,
            url_ingest_enabled: true,
            ingest_allow_private_networks: false,
            url_host_blocklist: Vec::new(),
            url_host_allowlist: Vec::new(),
            require_content_length: false,
            allow_upscale: false,
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_days: 30,
            rate_limit_per_minute: 100,
            login_rate_limit_per_minute: 10,
            json_body_limit_bytes: 1024 * 1024,
            pricing: PricingTable::default(),
            trial_grant_neu: Neu::from_whole(10),
            trial_days: 14,
            bootstrap_grant_neu: Neu::from_whole(1000),
            bootstrap_admin_email: "admin@localhost".into(),
            log: "info".into(),
            public_jobs_enabled: false,
            public_max_duration_secs: 120,
            public_max_source_bytes: 200 * 1024 * 1024,
            public_rate_limit_per_minute: 20,
            bulk_probe_budget_secs: 120,
            idempotency_retention_hours: 24,
            callback_max_attempts: 4,
            callback_retry_secs: 5,
            webhook_limit_per_account: 10,
            webhook_delivery_slots: 16,
            webhook_timeout_secs: 15,
            webhook_retry_base_secs: 5,
            webhook_max_attempts: 19,
            webhook_max_failures: 10,
            s3_multipart_threshold_bytes: 64 * 1024 * 1024,
            s3_part_size_bytes: 16 * 1024 * 1024,
            folder_list_page_size: 1000,
            google_drive_api_base: "https://www.googleapis.com".into(),
            google_oauth_token_url: "https://oauth2.googleapis.com/token".into(),
            google_oauth_client_id: None,
            google_oauth_client_secret: None,
            google_drive_chunk_bytes: 8 * 1024 * 1024,
            job_secrets_key: None,
            storage_url: None,
            storage_s3_endpoint: None,
            storage_s3_region: "us-east-1".into(),
            storage_s3_access_key_id: None,
            storage_s3_secret_access_key: None,
            storage_s3_force_path_style: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("[pricing]: {message}")]
    Pricing { message: String },
    #[error("{message}")]
    Ingest { message: String },
    /// Names the setting both ways it can be given (file key and environment variable).
    #[error("{field} (CONVERTRILO_{env}): {message}", env = field.to_ascii_uppercase())]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

impl Config {
    /// Defaults, then the file (explicit path, or `./convertrilo.toml` when present), then env.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut table = toml::Table::try_from(Config::default()).expect("defaults serialize");
        let path = file.map(Path::to_path_buf).or_else(|| {
            let p = PathBuf::from("convertrilo.toml");
            p.exists().then_some(p)
        });
        if let Some(path) = path {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let file: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::File {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
            table.extend(file);
            Config::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
                ConfigError::File {
                    path: path.clone(),
                    message: e.to_string(),
                }
            })?;
        }
        for field in Config::field_names() {
            let var = format!("CONVERTRILO_{}", field.to_ascii_uppercase());
            if let Ok(raw) = std::env::var(&var) {
                let value = env_value(&raw, table.get(&field));
                table.insert(field.clone(), value);
                Config::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
                    ConfigError::Env {
                        var: var.clone(),
                        message: e.message().to_string(),
                    }
                })?;
            }
        }
        let config =
            Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Env {
                var: "CONVERTRILO_*".into(),
                message: e.to_string(),
            })?;
        config
            .pricing
            .validate()
            .map_err(|message| ConfigError::Pricing { message })?;
        crate::outbound::Policy::from_config(&config)
            .map_err(|message| ConfigError::Ingest { message })?;
        config.validate()?;
        Ok(config)
    }

    fn field_names() -> Vec<String> {
        // Optional fields are absent from the serialized defaults; list them from a filled copy.
        let filled = Config {
            public_url: Some(String::new()),
            database_url: Some(String::new()),
            ffmpeg: Some(PathBuf::new()),
            ffprobe: Some(PathBuf::new()),
            google_oauth_client_id: Some(String::new()),
            google_oauth_client_secret: Some(String::new()),
            job_secrets_key: Some(String::new()),
            storage_url: Some(String::new()),
            storage_s3_endpoint: Some(String::new()),
            storage_s3_access_key_id: Some(String::new()),
            storage_s3_secret_access_key: Some(String::new()),
            ..Config::default()
        };
        toml::Table::try_from(filled)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The trial a new account gets now, if any.
    pub fn trial(&self) -> Option<Trial> {
        (self.trial_grant_neu > Neu::ZERO).then(|| Trial {
            amount: self.trial_grant_neu,
            expires_at: now_ms() + self.trial_days as i64 * 86_400_000,
        })
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.data_dir.join("convertrilo.db").display()
            )
        })
    }

    /// Workers heard from at or after this moment (ms) count as live at `now` (ms).
    pub fn worker_live_since(&self, now: i64) -> i64 {
        now - (self.worker_timeout_secs * 1000) as i64
    }

    pub fn objects_dir(&self) -> PathBuf {
        self.data_dir.join("objects")
    }

    pub fn scratch_dir(&self) -> PathBuf {
        self.data_dir.join("tmp")
    }

    /// Limits that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const QUANTUM: u64 = 256 * 1024;
        if self.google_drive_chunk_bytes == 0
            || !self.google_drive_chunk_bytes.is_multiple_of(QUANTUM)
        {
            return Err(ConfigError::Invalid {
                field: "google_drive_chunk_bytes",
                message: format!(
                    "{} is not a positive multiple of 256 KiB ({QUANTUM} bytes), as Google requires",
                    self.google_drive_chunk_bytes
                ),
            });
        }
        if !(1..=1000).contains(&self.folder_list_page_size) {
            return Err(ConfigError::Invalid {
                field: "folder_list_page_size",
                message: "must be from 1 to 1000".into(),
            });
        }
        self.validate_timing()?;
        crate::ownstore::s3_location(self)?;
        if self.s3_part_size_bytes == 0 {
            return Err(ConfigError::Invalid {
                field: "s3_part_size_bytes",
                message: "must be positive (S3 wants at least 5 MiB)".into(),
            });
        }
        Ok(())
    }

    /// The queue's and the worker registry's clocks must fit together: a setting that passes
    /// alone but contradicts another would lose healthy jobs or workers, or never run a job.
    fn validate_timing(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: String| Err(ConfigError::Invalid { field, message });
        // A job's heartbeat renews the lease three times per lease at least (worker::run);
        // under 3 s one slow database write would lose a healthy job.
        if self.lease_secs < 3 {
            return invalid(
                "lease_secs",
                format!(
                    "{} is too short: a lease must be at least 3 seconds",
                    self.lease_secs
                ),
            );
        }
        // Upper bounds keep the millisecond arithmetic far from overflow, and catch a unit
        // mistake (milliseconds where seconds are meant).
        const DAY: u64 = 86_400;
        const HOUR: u64 = 3_600;
        for (field, value, most) in [
            ("lease_secs", self.lease_secs, DAY),
            // An hour at most, so that twice it (the least worker timeout) stays under a day.
            ("worker_heartbeat_secs", self.worker_heartbeat_secs, HOUR),
            ("worker_timeout_secs", self.worker_timeout_secs, DAY),
            ("unrunnable_grace_secs", self.unrunnable_grace_secs, DAY),
            ("drain_timeout_secs", self.drain_timeout_secs, DAY),
            ("webhook_timeout_secs", self.webhook_timeout_secs, HOUR),
        ] {
            if value > most {
                return invalid(
                    field,
                    format!("{value} is over the limit of {most} s: give the time in seconds"),
                );
            }
        }
        if !(1..=100).contains(&self.max_attempts) {
            return invalid(
                "max_attempts",
                format!(
                    "{} is out of range: allow 1 to 100 attempts",
                    self.max_attempts
                ),
            );
        }
        if self.worker_heartbeat_secs == 0 {
            return invalid(
                "worker_heartbeat_secs",
                "must be at least 1 second".to_string(),
            );
        }
        // Two beats per timeout, so one late beat does not make a live worker look lost.
        if self.worker_timeout_secs < 2 * self.worker_heartbeat_secs {
            return invalid(
                "worker_timeout_secs",
                format!(
                    "{} is shorter than two worker heartbeats ({} s each): a live worker would \
                     look lost; set it to at least {}",
                    self.worker_timeout_secs,
                    self.worker_heartbeat_secs,
                    2 * self.worker_heartbeat_secs
                ),
            );
        }
        Ok(())
    }

    /// The merged configuration as TOML, with secrets (database passwords, the OAuth client
    /// secret, the credentials key, the object store's secret key) redacted.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database_url = Some(redact_url(&self.database_url()));
        let hide = |v: &Option<String>| v.as_ref().map(|_| "***".to_string());
        shown.google_oauth_client_secret = hide(&self.google_oauth_client_secret);
        shown.job_secrets_key = hide(&self.job_secrets_key);
        shown.storage_s3_secret_access_key = hide(&self.storage_s3_secret_access_key);
        toml::to_string_pretty(&shown).unwrap_or_default()
    }
}

/// Environment values are strings; numbers, booleans and lists (comma-separated) are typed
/// after the default they replace.
fn env_value(raw: &str, current: Option<&toml::Value>) -> toml::Value {
    match current {
        Some(toml::Value::Array(_)) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        Some(toml::Value::Integer(_)) => raw
            .trim()
            .parse()
            .map(toml::Value::Integer)
            .unwrap_or_else(|_| raw.into()),
        Some(toml::Value::Boolean(_)) => match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true.into(),
            "0" | "false" | "no" | "off" => false.into(),
            _ => raw.into(),
        },
        _ => raw.into(),
    }
}

/// `url` with any password replaced by `***`, for logs and messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_are_typed_and_urls_redacted() {
        assert_eq!(
            env_value("3", Some(&toml::Value::Integer(1))),
            toml::Value::Integer(3)
        );
        assert_eq!(
            env_value("true", Some(&toml::Value::Boolean(false))),
            toml::Value::Boolean(true)
        );
        assert_eq!(env_value("x", None), toml::Value::String("x".into()));
        assert_eq!(
            env_value(" a.example, ,b.example ", Some(&toml::Value::Array(vec![]))),
            toml::Value::Array(vec!["a.example".into(), "b.example".into()])
        );
        assert!(Config::field_names().contains(&"url_host_blocklist".to_string()));
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
        assert!(Config::field_names().contains(&"public_url".to_string()));
        assert!(Config::field_names().contains(&"max_upload_bytes".to_string()));
        assert!(Config::field_names().contains(&"google_oauth_client_secret".to_string()));
        let c = Config {
            google_oauth_client_secret: Some("GOCSPX-secret".into()),
            storage_s3_secret_access_key: Some("store-secret-xyz".into()),
            job_secrets_key: Some("ab".repeat(32)),
            ..Config::default()
        };
        let shown = c.redacted_toml();
        assert!(!shown.contains("GOCSPX-secret") && !shown.contains(&"ab".repeat(32)));
        assert!(!shown.contains("store-secret-xyz"));
        assert!(shown.contains("google_oauth_client_secret = \"***\""));
        let bad = Config {
            google_drive_chunk_bytes: 1000,
            ..Config::default()
        };
        assert!(bad.validate().is_err());
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn storage_errors_name_the_setting_to_change() {
        let refused = |url: &str, endpoint: Option<&str>| {
            Config {
                storage_url: Some(url.into()),
                storage_s3_endpoint: endpoint.map(Into::into),
                ..Config::default()
            }
            .validate()
            .unwrap_err()
            .to_string()
        };
        let e = refused("s3://media/p", Some("ftp://x"));
        assert!(
            e.starts_with("storage_s3_endpoint (CONVERTRILO_STORAGE_S3_ENDPOINT):"),
            "{e}"
        );
        let e = refused("s3://Bad_Bucket/p", None);
        assert!(
            e.starts_with("storage_url") && e.contains("storage_s3_force_path_style = true"),
            "{e}"
        );
        let e = refused("s3://media/../p", None);
        assert!(e.contains("`..`"), "{e}");
    }

    #[test]
    fn contradictory_queue_timings_are_refused_with_the_setting_to_change() {
        let refused = |c: Config| match c.validate() {
            Err(e @ ConfigError::Invalid { .. }) => {
                let text = e.to_string();
                // Named both ways a user may have set it.
                let ConfigError::Invalid { field, .. } = e else {
                    unreachable!()
                };
                let env = format!("(CONVERTRILO_{})", field.to_ascii_uppercase());
                assert!(text.contains(&env), "{text}");
                text.replacen(&format!(" {env}"), "", 1)
            }
            other => panic!("accepted: {other:?}"),
        };
        let base = Config::default;
        let e = refused(Config {
            lease_secs: 1,
            ..base()
        });
        assert!(
            e.starts_with("lease_secs:") && e.contains("at least 3"),
            "{e}"
        );
        let e = refused(Config {
            max_attempts: 0,
            ..base()
        });
        assert!(e.starts_with("max_attempts:"), "{e}");
        let e = refused(Config {
            worker_heartbeat_secs: 0,
            ..base()
        });
        assert!(e.starts_with("worker_heartbeat_secs:"), "{e}");
        let e = refused(Config {
            worker_heartbeat_secs: 10,
            worker_timeout_secs: 15,
            ..base()
        });
        assert!(
            e.starts_with("worker_timeout_secs:") && e.contains("at least 20"),
            "{e}"
        );
        // A unit mistake, and a value that would overflow the millisecond arithmetic.
        let e = refused(Config {
            worker_timeout_secs: u64::MAX / 2,
            ..base()
        });
        assert!(
            e.starts_with("worker_timeout_secs:") && e.contains("over the limit of 86400"),
            "{e}"
        );
        let e = refused(Config {
            unrunnable_grace_secs: 10_000_000_000_000_000,
            ..base()
        });
        assert!(e.starts_with("unrunnable_grace_secs:"), "{e}");
        // A heartbeat whose least worker timeout would be refused is refused itself.
        let e = refused(Config {
            worker_heartbeat_secs: 50_000,
            worker_timeout_secs: 86_400,
            ..base()
        });
        assert!(e.starts_with("worker_heartbeat_secs:"), "{e}");
        let e = refused(Config {
            lease_secs: 100_000,
            ..base()
        });
        assert!(e.starts_with("lease_secs:"), "{e}");
        // The tightest accepted settings.
        let tight = Config {
            lease_secs: 3,
            max_attempts: 1,
            worker_heartbeat_secs: 1,
            worker_timeout_secs: 2,
            ..base()
        };
        assert!(tight.validate().is_ok());
    }
}
