//! Talking to a shipped `etcd-sync` daemon from outside, as an operator's tooling does: its
//! monitor over plain HTTP/1.1, a free loopback port for it, and its peak memory. Used by the
//! daemon tests and `drlab bench` (real processes, real time: never inside the simulator).

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// One request to the monitor at `addr`: the status code and the body, or None when it does
/// not answer (yet).
pub async fn http(addr: &str, method: &str, path: &str) -> Option<(u16, String)> {
    sync::remote::request(addr, method, path, std::time::Duration::from_secs(120)).await.ok()
}

/// The daemon's `/status`, when it answers with one.
pub async fn status(addr: &str) -> Option<serde_json::Value> {
    let (code, body) = http(addr, "GET", "/status").await?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

/// A live process's peak resident set (`VmHWM` in /proc/<pid>/status), in KiB.
pub fn high_water_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
