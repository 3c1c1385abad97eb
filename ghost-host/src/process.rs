//! CPU time and resident memory of a process, from Linux's `/proc`: what a node exports
//! as `process_cpu_seconds_total` and `process_resident_memory_bytes` (the names every
//! Prometheus process collector uses), and what `ghost bench` reads for the nodes it
//! started and for itself.
//!
//! On other systems, or when `/proc` is not mounted, there is no figure (`None`), never a
//! made-up zero.

/// Clock ticks per second of the times in `/proc/PID/stat`: Linux reports them in
/// `USER_HZ`, fixed at 100 by its ABI on x86 and ARM (what `sysconf(_SC_CLK_TCK)` returns).
const USER_HZ: f64 = 100.0;

/// One reading of a process's resources.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessUsage {
    /// CPU time used so far, user plus system, seconds.
    pub cpu_seconds: f64,
    /// Resident memory now, bytes.
    pub rss_bytes: u64,
}

/// The resources of process `pid`, or of this process with `None`.
#[must_use]
pub fn usage(pid: Option<u32>) -> Option<ProcessUsage> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_owned(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    Some(ProcessUsage {
        cpu_seconds: cpu_seconds_of_stat(&stat)?,
        rss_bytes: rss_bytes_of_status(&status)?,
    })
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name in
/// field 2 may hold spaces and parentheses, so fields are counted after its last `)`.
fn cpu_seconds_of_stat(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // after_name starts at field 3 (state): utime is field 14, the 12th from here.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    #[allow(clippy::cast_precision_loss)] // ticks stay far below 2^52
    Some((utime + stime) as f64 / USER_HZ)
}

/// `VmRSS` of a `/proc/PID/status` file, which the kernel gives in kB.
fn rss_bytes_of_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_counted_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (ghost (bench) x) S 1 4242 4242 0 -1 4194304 500 0 0 0 250 75 0 0 20 0 9 0 100 1000 200";
        assert_eq!(cpu_seconds_of_stat(stat), Some(3.25));
        assert_eq!(cpu_seconds_of_stat("4242 (cut"), None);
        assert_eq!(cpu_seconds_of_stat("4242 (x) S 1 2"), None);
    }

    #[test]
    fn rss_comes_from_the_vmrss_line_in_bytes() {
        let status = "Name:\tghostnode\nVmPeak:\t  90000 kB\nVmRSS:\t   12345 kB\nThreads:\t9\n";
        assert_eq!(rss_bytes_of_status(status), Some(12_345 * 1024));
        assert_eq!(rss_bytes_of_status("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_has_a_reading_that_grows_with_work() {
        let before = usage(None).expect("Linux has /proc/self");
        assert!(before.rss_bytes > 0);
        let mut x = 0u64;
        let start = std::time::Instant::now();
        // Busy for long enough that a 10 ms tick must land.
        while start.elapsed() < std::time::Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = usage(None).expect("Linux has /proc/self");
        assert!(
            after.cpu_seconds > before.cpu_seconds,
            "{before:?} -> {after:?}"
        );
        assert_eq!(usage(Some(u32::MAX)), None, "no such process");
    }
}
