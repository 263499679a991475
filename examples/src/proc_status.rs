//! A process's memory as Linux reports it, for the load and soak programs.

/// A `kB` field of `/proc/<pid>/status`, such as `"VmRSS:"` or `"VmHWM:"` (Linux only; `None`
/// elsewhere, or when the process is gone).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
