//! Real `scim-sync run` processes sharing one store, for the failover and fencing tests and
//! the HA benchmark: a [`Cluster`] of [`Replica`]s on a scratch PostgreSQL database (or one
//! SQLite file), each writing to the sandbox app through its own [`Proxy`], which records
//! every request, so that a test can tell which replica sent what, and when.
//!
//! Processes are signalled for real (`kill -KILL`, `-STOP`, `-CONT`, `-TERM`); each one's
//! output goes to a log file in the cluster's folder, read back with [`Replica::log`].

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use scim_sync::activation::{Accepted, ActivationRequest};
use scim_sync::model::SourceId;
use scim_sync::sandbox::{SandboxHandle, SandboxState};
use scim_sync::status::Status;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::postgres::ScratchDb;

/// The app's bearer token in every replica's environment.
pub const APP_TOKEN: &str = "replicas-app-token-value";
/// The webhook token in every replica's environment.
pub const WEBHOOK_TOKEN: &str = "replicas-webhook-token-value";
/// The app's name in the cluster's config.
pub const APP: &str = "crm";

/// One request a replica sent to the app.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The HTTP method.
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// When the proxy received it.
    pub at: Instant,
}

impl Seen {
    /// POST, PUT, PATCH or DELETE.
    pub fn is_write(&self) -> bool {
        !matches!(self.method, Method::GET | Method::HEAD | Method::OPTIONS)
    }
}

/// A reverse proxy in front of the sandbox that records every request it forwards.
#[derive(Clone)]
pub struct Proxy {
    base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

#[derive(Clone)]
struct Upstream {
    origin: String,
    http: reqwest::Client,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Proxy {
    /// Starts a proxy on loopback forwarding to `origin` (`http://host:port`).
    ///
    /// # Errors
    /// The listener cannot be bound.
    pub async fn start(origin: &str) -> std::io::Result<Proxy> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let upstream = Upstream {
            origin: origin.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            seen: Arc::clone(&seen),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(forward).with_state(upstream);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Proxy {
            base_url: format!("http://{addr}"),
            seen,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Every request forwarded so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The writes (POST, PUT, PATCH, DELETE) forwarded so far.
    pub fn writes(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(Seen::is_write).collect()
    }

    /// The writes forwarded at or after `since`.
    pub fn writes_since(&self, since: Instant) -> Vec<Seen> {
        self.writes()
            .into_iter()
            .filter(|s| s.at >= since)
            .collect()
    }
}

async fn forward(
    State(up): State<Upstream>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    if let Ok(mut seen) = up.seen.lock() {
        seen.push(Seen {
            method: method.clone(),
            uri: path.clone(),
            at: Instant::now(),
        });
    }
    let mut req = up.http.request(method, format!("{}{path}", up.origin));
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            req = req.header(name, value);
        }
    }
    match req.body(body).send().await {
        Ok(r) => {
            let status = r.status();
            let headers = r.headers().clone();
            let bytes = r.bytes().await.unwrap_or_default();
            let mut out = Response::new(Body::from(bytes));
            *out.status_mut() = status;
            for (name, value) in &headers {
                if name != "content-length" && name != "transfer-encoding" {
                    out.headers_mut().insert(name, value.clone());
                }
            }
            out
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// Where the replicas keep their state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A scratch PostgreSQL database.
    Postgres,
    /// One SQLite file in the cluster's folder (one host).
    Sqlite,
}

/// What a [`Cluster`] is made of.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The `scim-sync` binary.
    pub bin: PathBuf,
    /// How many replicas.
    pub replicas: usize,
    /// The store they share.
    pub backend: Backend,
    /// The directory file (source `kind = "file"`).
    pub directory: PathBuf,
    /// The groups assigned to the app.
    pub groups: Vec<String>,
    /// `service.lease_ttl` (as the config writes it, say `"3s"`).
    pub lease_ttl: String,
    /// More `[[apps]]` lines (say, `push_limit = …`).
    pub app_extra: String,
}

/// Replicas of `scim-sync run` on one store, writing to one sandbox app.
pub struct Cluster {
    /// The replicas, in start order.
    pub replicas: Vec<Replica>,
    sandbox: SandboxHandle,
    _db: Option<ScratchDb>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Writes one config per replica (they differ only in `service.listen` and the app's
    /// `base_url`, their own proxy), starts the sandbox and the replicas in order, and waits
    /// until each is ready.
    ///
    /// # Errors
    /// What failed to start, with the replica's log.
    pub async fn start(spec: Spec) -> Result<Cluster, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let sandbox = SandboxHandle::start(
            ([127, 0, 0, 1], 0).into(),
            SandboxState::with_token(APP_TOKEN),
        )
        .await
        .map_err(|e| format!("sandbox: {e}"))?;
        let (db, state) = match spec.backend {
            Backend::Postgres => {
                let db = ScratchDb::create().await?;
                let url = db.url();
                (Some(db), url)
            }
            Backend::Sqlite => (
                None,
                format!("sqlite://{}", dir.path().join("state.db").display()),
            ),
        };
        let origin = format!("http://{}", sandbox.addr());
        let mut replicas = Vec::new();
        for index in 0..spec.replicas {
            let proxy = Proxy::start(&origin)
                .await
                .map_err(|e| format!("proxy: {e}"))?;
            let port = free_port()?;
            let config = dir.path().join(format!("replica-{index}.toml"));
            let groups = spec
                .groups
                .iter()
                .map(|g| format!("{g:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            let text = format!(
                "[service]\nlisten = \"127.0.0.1:{port}\"\nstate = \"{state}\"\n\
                 lease_ttl = \"{ttl}\"\n\n[source]\nkind = \"file\"\npath = \"{directory}\"\n\n\
                 [[apps]]\nname = \"{APP}\"\nbase_url = \"{base}/scim/v2\"\n\
                 token_env = \"REPLICAS_APP_TOKEN\"\ngroups = [{groups}]\n{extra}\n",
                ttl = spec.lease_ttl,
                directory = spec.directory.display(),
                base = proxy.base_url(),
                extra = spec.app_extra,
            );
            std::fs::write(&config, text).map_err(|e| e.to_string())?;
            let mut replica = Replica {
                index,
                port,
                bin: spec.bin.clone(),
                config,
                log: dir.path().join(format!("replica-{index}.log")),
                proxy,
                child: None,
                frozen: false,
                http: reqwest::Client::new(),
            };
            replica.start()?;
            replica.await_ready(Duration::from_secs(30)).await?;
            replicas.push(replica);
        }
        Ok(Cluster {
            replicas,
            sandbox,
            _db: db,
            _dir: dir,
        })
    }

    /// The app.
    pub fn app(&self) -> &SandboxState {
        self.sandbox.state()
    }

    /// The replica whose pid the app's lease names, waiting up to `within` for one to hold
    /// it.
    ///
    /// # Errors
    /// Nobody held the app within `within`.
    pub async fn holder(&self, within: Duration) -> Result<usize, String> {
        let started = Instant::now();
        loop {
            if let Some(i) = self.current_holder().await {
                return Ok(i);
            }
            if started.elapsed() > within {
                return Err(format!("no replica held {APP} within {within:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits up to `within` until replica `index` holds the app; how long that took.
    ///
    /// # Errors
    /// It did not, naming who held it last.
    pub async fn await_holder(&self, index: usize, within: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            let now = self.current_holder().await;
            if now == Some(index) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > within {
                return Err(format!(
                    "replica {index} did not hold {APP} within {within:?} (holder: {now:?})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The replica whose pid the app's lease names now, asked of any running replica that is
    /// not frozen.
    pub async fn current_holder(&self) -> Option<usize> {
        for r in self
            .replicas
            .iter()
            .filter(|r| r.pid().is_some() && !r.frozen)
        {
            if let Ok(status) = r.status().await {
                let pid = status
                    .apps
                    .iter()
                    .find(|a| a.name == APP)?
                    .lease
                    .as_ref()?
                    .pid;
                return self.replicas.iter().position(|r| r.pid() == Some(pid));
            }
        }
        None
    }

    /// The user ids (source ids) that are members of the app group named `display_name`.
    pub fn members_of(&self, display_name: &str) -> Vec<String> {
        let app = self.sandbox.state();
        let Some(group) = app
            .groups()
            .into_iter()
            .find(|g| g["displayName"] == display_name)
        else {
            return Vec::new();
        };
        let users = app.users();
        let mut out: Vec<String> = group["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                users
                    .iter()
                    .find(|u| u["id"] == m["value"])
                    .and_then(|u| u["externalId"].as_str().map(str::to_owned))
            })
            .collect();
        out.sort();
        out
    }
}

/// One `scim-sync run` process (restartable on the same config).
pub struct Replica {
    /// Its position in the cluster.
    pub index: usize,
    port: u16,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    /// The proxy its app requests go through.
    pub proxy: Proxy,
    child: Option<Child>,
    /// Frozen by SIGSTOP (and not resumed since): asked nothing, as it would not answer.
    frozen: bool,
    http: reqwest::Client,
}

impl Replica {
    /// Starts `scim-sync run` (again, after an exit or a kill), appending to its log.
    ///
    /// # Errors
    /// The process could not be spawned.
    pub fn start(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .env("REPLICAS_APP_TOKEN", APP_TOKEN)
            .env("SCIM_SYNC_WEBHOOK_TOKEN", WEBHOOK_TOKEN)
            .env_remove("SCIM_SYNC_CONFIG")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// The running process's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// `kill -<signal> <pid>` (`KILL`, `STOP`, `CONT`, `TERM`).
    ///
    /// # Errors
    /// No process runs, or `kill` failed.
    pub fn signal(&mut self, signal: &str) -> Result<(), String> {
        let pid = self.pid().ok_or("the replica is not running")?;
        let ok = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .map_err(|e| e.to_string())?
            .success();
        if ok {
            match signal {
                "STOP" => self.frozen = true,
                "CONT" => self.frozen = false,
                _ => {}
            }
            Ok(())
        } else {
            Err(format!("kill -{signal} {pid} failed"))
        }
    }

    /// Waits up to `within` for the process to exit, and reaps it.
    ///
    /// # Errors
    /// It had not exited by then.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus, String> {
        let child = self.child.as_mut().ok_or("the replica is not running")?;
        let status = tokio::time::timeout(within, child.wait())
            .await
            .map_err(|_| format!("replica {} did not exit within {within:?}", self.index))?
            .map_err(|e| e.to_string())?;
        self.child = None;
        self.frozen = false;
        Ok(status)
    }

    /// SIGKILL, then reap.
    ///
    /// # Errors
    /// As [`Replica::signal`].
    pub async fn kill(&mut self) -> Result<(), String> {
        self.signal("KILL")?;
        self.wait_exit(Duration::from_secs(10)).await.map(drop)
    }

    /// Waits until `/readyz` answers 200.
    ///
    /// # Errors
    /// Not ready within `within`, with the log.
    pub async fn await_ready(&self, within: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await
                && r.status() == 200
            {
                return Ok(());
            }
            if started.elapsed() > within {
                return Err(format!(
                    "replica {} was not ready within {within:?}:\n{}",
                    self.index,
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// What the process printed so far (all its runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `GET /v1/status`.
    ///
    /// # Errors
    /// Not answered, or not a status.
    pub async fn status(&self) -> Result<Status, String> {
        let r = self
            .http
            .get(self.url("/v1/status"))
            .bearer_auth(WEBHOOK_TOKEN)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        r.json::<Status>().await.map_err(|e| e.to_string())
    }

    /// `POST /v1/sync?wait=true`: a cycle of every app, answered when it ended.
    ///
    /// # Errors
    /// Not answered, or not with 200.
    pub async fn sync(&self) -> Result<(), String> {
        let r = self
            .http
            .post(self.url("/v1/sync?wait=true"))
            .bearer_auth(WEBHOOK_TOKEN)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match r.status().as_u16() {
            200 => Ok(()),
            other => Err(format!(
                "POST /v1/sync: {other} {}",
                r.text().await.unwrap_or_default()
            )),
        }
    }

    /// `POST /v1/activations` for `user` in `group` until `expires_at`: the HTTP status,
    /// the answer when it was a `202`, and the time to the answer.
    ///
    /// # Errors
    /// No answer at all.
    pub async fn activate(
        &self,
        group: &str,
        user: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<Answer, String> {
        let body = ActivationRequest {
            group_id: SourceId::from(group),
            user_id: SourceId::from(user),
            expires_at: Some(expires_at),
            justification: Some("failover test".into()),
            ticket_number: None,
            ticket_system: None,
        };
        let started = Instant::now();
        let r = self
            .http
            .post(self.url("/v1/activations"))
            .bearer_auth(WEBHOOK_TOKEN)
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| format!("replica {}: {e}", self.index))?;
        let status = r.status().as_u16();
        let text = r.text().await.map_err(|e| e.to_string())?;
        Ok(Answer {
            status,
            accepted: serde_json::from_str(&text).ok(),
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            took: started.elapsed(),
        })
    }
}

/// A replica's answer to an activation.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `202` body.
    pub accepted: Option<Accepted>,
    /// The raw body.
    pub body: Value,
    /// Sent → answered.
    pub took: Duration,
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// The repository's sample directory (`config/directory.json`), from the crate's folder.
pub fn sample_directory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/directory.json")
}
