//! What the benchmarks share: the machine line that goes with every figure, units, peak RSS,
//! and an engine with one app in process (`AppWorld`, `SandboxWorld`).

/// The machine the figures come from.
pub struct Machine {
    /// Logical cores.
    pub cores: usize,
    /// CPU model.
    pub cpu: String,
    /// Total RAM.
    pub memory: String,
    /// Build profile.
    pub profile: &'static str,
}

impl Machine {
    /// Reads /proc.
    pub fn detect() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown CPU".to_owned(), |(_, v)| v.trim().to_owned());
        let meminfo = read("/proc/meminfo");
        let memory = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or_else(
                || "unknown".to_owned(),
                |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0),
            );
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            memory,
            profile: if cfg!(debug_assertions) {
                "debug (unoptimised: figures are not representative)"
            } else {
                "release (optimised)"
            },
        }
    }

    /// One line for the report.
    pub fn line(&self) -> String {
        format!(
            "machine: {} cores ({}), {} RAM; build: {}",
            self.cores, self.cpu, self.memory, self.profile
        )
    }
}

/// Bytes as megabytes, for tables.
pub fn mb(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / (1 << 20) as f64)
}

/// `BENCH_LOG=scim_sync=debug` (an `EnvFilter`) logs to stderr with timestamps, to see where
/// the time of a scenario goes.
pub fn log_from_env() {
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
}

/// An engine over a memory source holding `dir`, a SQLite store in a temporary folder, and
/// one app at `base_url` with every group of `dir` assigned: what `sync-now` runs, in process.
pub struct AppWorld {
    /// The engine.
    pub engine: scim_sync::engine::Engine,
    /// The app.
    pub app: scim_sync::engine::App,
    _tmp: tempfile::TempDir,
}

impl AppWorld {
    /// Builds the engine and the app `bench` (bearer `token`, `concurrency` in flight);
    /// `extra` is more `[[apps]]` lines, e.g. `profile = "aws-identity-center"\n`.
    pub async fn new(
        dir: &scim_sync::model::Directory,
        base_url: &str,
        token: &str,
        concurrency: usize,
        extra: &str,
    ) -> anyhow::Result<AppWorld> {
        use scim_sync::config::{Config, Secret};
        let tmp = tempfile::tempdir()?;
        let store = scim_sync::store::Store::open(&format!(
            "sqlite://{}",
            tmp.path().join("state.db").display()
        ))
        .await?;
        let engine = scim_sync::engine::Engine::new(
            std::sync::Arc::new(scim_sync::source::MemorySource::new(dir.clone())),
            store,
        );
        let assigned: Vec<&str> = dir.groups.keys().map(|g| g.as_str()).collect();
        let text = format!(
            "[source]\nkind = \"file\"\npath = \"unused.json\"\n\n[[apps]]\nname = \"bench\"\n\
             base_url = \"{base_url}\"\ntoken_env = \"BENCH_TOKEN\"\ngroups = {assigned:?}\n\
             concurrency = {concurrency}\nmax_deprovisions = 100000\n{extra}"
        );
        let mut cfg = Config::parse(std::path::Path::new("bench.toml"), &text)?;
        anyhow::ensure!(!cfg.apps.is_empty(), "the benchmark config has no app");
        let app = scim_sync::engine::App::new(cfg.apps.remove(0), &Secret::new(token))?;
        Ok(AppWorld {
            engine,
            app,
            _tmp: tmp,
        })
    }

    /// One cycle of the app (verifying when `verify`); its report and wall time. A cycle
    /// with a failed operation is an error.
    pub async fn cycle(
        &self,
        verify: bool,
    ) -> anyhow::Result<(scim_sync::engine::AppCycle, std::time::Duration)> {
        let t = std::time::Instant::now();
        let opts = scim_sync::engine::CycleOptions {
            reason: scim_sync::report::Reason::SyncNow,
            dry_run: false,
            progress: false,
            verify,
        };
        let mut run = self
            .engine
            .cycle(std::slice::from_ref(&self.app), opts)
            .await;
        let c = run.apps.pop().ok_or_else(|| anyhow::anyhow!("no report"))?;
        anyhow::ensure!(
            c.report.failed == 0 && c.report.error.is_none(),
            "the cycle failed: {}",
            c.report
        );
        Ok((c, t.elapsed()))
    }
}

/// An [`AppWorld`] whose app is `state` (the built-in sandbox), served on loopback.
pub struct SandboxWorld {
    /// The app's server.
    pub sandbox: scim_sync::sandbox::SandboxHandle,
    /// The engine and the app.
    pub world: AppWorld,
}

/// The bearer token of [`SandboxWorld`]'s app.
pub const SANDBOX_TOKEN: &str = "bench-app-token";

impl SandboxWorld {
    /// Serves `state` (made with [`SANDBOX_TOKEN`]) and builds the rest.
    pub async fn new(
        dir: &scim_sync::model::Directory,
        state: scim_sync::sandbox::SandboxState,
        concurrency: usize,
    ) -> anyhow::Result<SandboxWorld> {
        let sandbox =
            scim_sync::sandbox::SandboxHandle::start(([127, 0, 0, 1], 0).into(), state).await?;
        let world = AppWorld::new(dir, sandbox.base_url(), SANDBOX_TOKEN, concurrency, "").await?;
        Ok(SandboxWorld { sandbox, world })
    }

    /// [`AppWorld::cycle`].
    pub async fn cycle(
        &self,
        verify: bool,
    ) -> anyhow::Result<(scim_sync::engine::AppCycle, std::time::Duration)> {
        self.world.cycle(verify).await
    }
}

/// The process's peak resident set (`VmHWM` of /proc/self/status), in bytes; `None` where
/// /proc is not there.
pub fn peak_rss() -> Option<usize> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse::<usize>()
        .ok()
        .map(|kb| kb * 1024)
}

/// A duration for tables: milliseconds under a second, else seconds.
pub fn secs(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}
