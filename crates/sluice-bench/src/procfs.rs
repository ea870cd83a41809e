//! What the harness reads from `/proc`: a process's CPU time and memory, and the TCP
//! connections to a port. Parsers are pure functions of the file text so they can be tested.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// CPU time and memory of one process at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcSample {
    /// User plus system CPU time of all its threads, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size now, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size, KiB (`VmHWM`).
    pub hwm_kib: u64,
}

/// Clock ticks per second (`getconf CLK_TCK`), 100 when it cannot be read.
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100)
}

/// Converts clock ticks to a duration.
pub fn ticks_to_duration(ticks: u64, per_second: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / per_second.max(1) as f64)
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let dir = Path::new("/proc").join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(dir.join("status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    Ok(ProcSample {
        cpu_ticks: parse_stat_cpu_ticks(&stat)?,
        rss_kib: parse_status_kib(&status, "VmRSS").unwrap_or(0),
        hwm_kib: parse_status_kib(&status, "VmHWM").unwrap_or(0),
    })
}

/// CPU time (clock ticks) of each thread of a process, by thread name (`comm`, at most 15
/// bytes; threads of the same name are added up), from `/proc/<pid>/task/*/stat`.
pub fn thread_cpu_ticks(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut threads = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let (Some(name), Ok(ticks)) = (parse_stat_name(&stat), parse_stat_cpu_ticks(&stat)) {
            *threads.entry(name.to_owned()).or_insert(0) += ticks;
        }
    }
    threads
}

/// The command name (field 2, between the first `(` and the last `)`) of a `stat` line.
pub fn parse_stat_name(stat: &str) -> Option<&str> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    (open < close).then(|| &stat[open + 1..close])
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line.
///
/// The command name (field 2) is in parentheses and may contain spaces, so fields are counted
/// after the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("no ')' in /proc stat")?;
    // After the name: field 3 (state) is index 0, so utime (14) is index 11, stime (15) is 12.
    let fields: Vec<&str> = after.split_whitespace().collect();
    if fields.len() < 13 {
        bail!("/proc stat has {} fields after the name", fields.len());
    }
    let utime: u64 = fields[11].parse().context("utime is not a number")?;
    let stime: u64 = fields[12].parse().context("stime is not a number")?;
    Ok(utime + stime)
}

/// The value in KiB of a `Name:   123 kB` line of `/proc/<pid>/status`.
pub fn parse_status_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// How many established TCP connections (IPv4 and IPv6) have `port` as their remote port: the
/// client ends of connections to a local server on that port.
pub fn established_to_port(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| count_established_to_port(&text, port))
        .sum()
}

/// Counts the lines of a `/proc/net/tcp` table whose remote port is `port` and whose state is
/// `01` (established).
pub fn count_established_to_port(table: &str, port: u16) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let mut fields = line.split_whitespace();
            let remote = fields.nth(2);
            let state = fields.next();
            let remote_port = remote
                .and_then(|r| r.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            remote_port == Some(port) && state == Some("01")
        })
        .count()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn stat_cpu_ticks_are_utime_plus_stime_even_with_spaces_in_the_name() {
        let stat = "4242 (my prog) S 1 4242 4242 0 -1 4194560 1234 0 0 0 731 269 0 0 20 0 \
                    9 0 12345 1000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1";
        assert_eq!(parse_stat_cpu_ticks(stat).unwrap(), 1000);
        assert_eq!(parse_stat_name(stat), Some("my prog"));
        assert!(parse_stat_cpu_ticks("12 (x) S 1 2").is_err());
    }

    #[test]
    fn status_values_in_kib() {
        let status = "Name:\tsluice\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t5\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(10240));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn counts_only_established_connections_to_the_port() {
        // 0x1F90 = 8080.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
           0: 0100007F:1F90 00000000:0000 0A 00000000:00000000\n\
           1: 0100007F:C350 0100007F:1F90 01 00000000:00000000\n\
           2: 0100007F:C351 0100007F:1F90 06 00000000:00000000\n\
           3: 0100007F:1F90 0100007F:C350 01 00000000:00000000\n\
           4: 0100007F:C352 0100007F:1F90 01 00000000:00000000\n";
        assert_eq!(count_established_to_port(table, 8080), 2);
        assert_eq!(count_established_to_port(table, 9090), 0);
    }

    #[test]
    fn ticks_convert_to_seconds() {
        assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
    }
}
