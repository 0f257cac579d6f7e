//! What the benchmarks share: the machine line that goes with every figure, and units.

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
