//! Process limits pycomd raises at start.
//!
//! Every client connection and every probe connection is a file
//! descriptor, and so is each ZeroMQ socket's signalling pipe. The usual
//! soft limit (1024) is far below what a busy nameserver needs, while the
//! hard limit is usually generous (systemd: 524288): pycomd takes it.

use tracing::{debug, warn};

/// Below this many descriptors pycomd warns: a few thousand clients and
/// the prober's connections need more.
const NOFILE_WANTED: u64 = 4096;
/// What Linux allows when the hard limit says unlimited and
/// `/proc/sys/fs/nr_open` cannot be read (its default).
const NR_OPEN_DEFAULT: u64 = 1 << 20;

/// Raise the soft limit on open files to the hard limit; log what was done.
pub fn raise_nofile() {
    let (soft, hard) = match get_nofile() {
        Ok(limits) => limits,
        Err(e) => {
            warn!("cannot read the open-files limit (RLIMIT_NOFILE): {e}");
            return;
        }
    };
    // An unlimited hard limit is capped by the kernel at fs.nr_open.
    let target = if hard == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(NR_OPEN_DEFAULT)
    } else {
        hard
    };
    let now = if soft < target {
        match set_nofile(target, hard) {
            Ok(()) => {
                debug!(
                    from = soft,
                    to = target,
                    "raised the open-files limit (RLIMIT_NOFILE) to the hard limit"
                );
                target
            }
            Err(e) => {
                warn!(
                    soft,
                    hard, "cannot raise the open-files limit (RLIMIT_NOFILE): {e}"
                );
                soft
            }
        }
    } else {
        debug!(
            soft,
            "the open-files limit (RLIMIT_NOFILE) is already the hard limit"
        );
        soft
    };
    if now < NOFILE_WANTED {
        warn!(
            limit = now,
            "the open-files limit is low: every client and probe connection takes a file descriptor; \
             raise the hard limit to at least {NOFILE_WANTED} (ulimit -Hn, systemd LimitNOFILE=)"
        );
    }
}

/// The soft limit on open files, if it can be read.
pub fn nofile() -> Option<u64> {
    get_nofile().ok().map(|(soft, _)| soft)
}

// rlim_t is u64 here but not on every target.
#[allow(clippy::unnecessary_cast)]
fn get_nofile() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

fn set_nofile(soft: u64, hard: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        raise_nofile();
        let (soft, hard) = get_nofile().unwrap();
        if hard != libc::RLIM_INFINITY {
            assert_eq!(soft, hard);
        }
        assert_eq!(nofile(), Some(soft));
    }
}
