//! Power cut: an acknowledged register survives losing everything that was
//! only in memory, the kernel's page cache included (what `kill -9` alone
//! cannot show, since the kernel still writes the cache out after it).
//!
//! pycomd keeps its data dir on ext4 in a loop-mounted image file. While
//! clients register, pycomd is frozen (SIGSTOP) right after an ack, and the
//! image file is copied: the copy holds what ext4 had handed to its device
//! by then, like a disk whose power went out. Mounting the copy replays the
//! journal as after a power loss; a fresh pycomd on it must hold every
//! acknowledged register and none of the acknowledged unregisters
//! (`pycom_e2e::powercut` does the cut; `powercut_workflow.rs` does the
//! same to workflow runs).
//!
//! Needs root, `mkfs.ext4`, `mount` and a free loop device. Without them
//! the tests print `SKIPPED: ...` and pass, unless `CI=true`, where they
//! fail.

use pycom_client::{Connection, NameserverClient};
use pycom_e2e::powercut::{examples, Clients, Disk, Freezer};
use pycom_e2e::{leased, Daemon};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Client threads registering at once, so that acks share flushes.
const THREADS: usize = 8;
/// Acknowledged registers (all threads together) before the power cut.
const REGISTERS: usize = 8 * 50;
/// Lease of every record: far longer than the test.
const TTL_MS: u64 = 600_000;
/// Owner address of every record (leased records are never probed).
const ADDRESS: &str = "tcp://127.0.0.1:1";
/// Interface of every record; `list_services` finds them by it.
const INTERFACE: &str = "powercut";
/// The register whose ack triggers the freeze.
const LAST: &str = "/powercut/last";
/// Client timeout: bounds how long a request pending at the freeze waits.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn acknowledged_writes_survive_a_power_cut() {
    let Some(cut) = power_cut(&[]) else { return };
    assert!(
        cut.lost.is_empty(),
        "{} of {} acknowledged registers are missing after the power cut (e.g. {:?}; pycomd holds \
         {} records): pycomd acknowledged them before they were durable",
        cut.lost.len(),
        cut.must_exist.len(),
        examples(&cut.lost),
        cut.present,
    );
    assert!(
        cut.resurrected.is_empty(),
        "{} of {} acknowledged unregisters were undone by the power cut (e.g. {:?}): \
         pycomd acknowledged them before they were durable",
        cut.resurrected.len(),
        cut.must_be_gone.len(),
        examples(&cut.resurrected),
    );
}

/// The test above can fail: without fsync, acks made just before the cut
/// are not in the image yet (ext4 commits its journal every 5 s).
#[test]
fn control_without_fsync_loses_acknowledged_writes() {
    let Some(cut) = power_cut(&[("PYCOMD_UNSAFE_NO_FSYNC", "true")]) else {
        return;
    };
    assert!(
        !cut.lost.is_empty(),
        "with unsafe_no_fsync, all {} acknowledged registers survived the power cut: \
         the harness does not emulate one (were they written back before the image was copied?)",
        cut.must_exist.len(),
    );
}

/// What the power cut did to the acknowledged writes.
struct Cut {
    /// Acknowledged registers, not unregistered since: must be there.
    must_exist: BTreeSet<String>,
    /// Acknowledged unregisters: must be gone.
    must_be_gone: BTreeSet<String>,
    /// `must_exist` records missing after the cut.
    lost: Vec<String>,
    /// `must_be_gone` records back after the cut.
    resurrected: Vec<String>,
    /// Records pycomd holds after the cut.
    present: usize,
}

/// What one client thread got acknowledged.
#[derive(Default)]
struct Acked {
    registered: Vec<String>,
    unregistered: Vec<String>,
    /// Unregisters sent but not acknowledged: either outcome is right.
    unsure: Vec<String>,
}

/// The whole procedure; `None` when a prerequisite is missing (and the
/// test is skipped).
fn power_cut(env: &[(&str, &str)]) -> Option<Cut> {
    // 1. ext4 in an image file, mounted through a loop device.
    let disk = Disk::new("power-cut test")?;

    // 2. Concurrent clients registering (and unregistering some).
    // Declared after the disk: dropped (killed) before it is unmounted.
    let mut daemon = Daemon::with_data_dir(&disk.data_dir(), env, &[]);
    let clients = Clients::spawn(THREADS, &daemon.endpoint, client);
    let mut freezer = Freezer::new(daemon.pid());
    let started = clients.wait_for(REGISTERS, "registers", Duration::from_secs(60), &daemon);

    // 3. One more register, and the freeze right on its ack, while the
    // clients are still sending.
    let mut ns = NameserverClient::new(daemon.connection(CLIENT_TIMEOUT.as_millis() as u64));
    ns.register(&leased(LAST, ADDRESS, &[INTERFACE], TTL_MS))
        .expect("the last register should be acknowledged");
    let acked_at = Instant::now();
    freezer.freeze();
    let freeze_delay = acked_at.elapsed();
    let load_time = acked_at - started;
    clients.stop();

    // The power cut: the image as it is now, with pycomd frozen; then
    // its copy, mounted (ext4 replays its journal).
    let after = disk.cut_power(&mut daemon);

    let mut acked = Acked::default();
    for a in clients.join() {
        acked.registered.extend(a.registered);
        acked.unregistered.extend(a.unregistered);
        acked.unsure.extend(a.unsure);
    }
    acked.registered.push(LAST.to_string());
    let must_be_gone: BTreeSet<String> = acked.unregistered.iter().cloned().collect();
    let unsure: BTreeSet<String> = acked.unsure.iter().cloned().collect();
    let must_exist: BTreeSet<String> = acked
        .registered
        .iter()
        .filter(|s| !must_be_gone.contains(*s) && !unsure.contains(*s))
        .cloned()
        .collect();

    // 4. After the power cut: a fresh pycomd on the copy.
    let restarted = Daemon::with_data_dir(&after.data_dir(), env, &[]);
    let present: BTreeSet<String> = restarted
        .ns()
        .list_services(Some(INTERFACE), None)
        .expect("list_services after the power cut")
        .into_iter()
        .map(|s| s.service)
        .collect();
    let lost: Vec<String> = must_exist.difference(&present).cloned().collect();
    let resurrected: Vec<String> = must_be_gone.intersection(&present).cloned().collect();
    eprintln!(
        "power cut{}: {} registers and {} unregisters acknowledged in {:?} ({} unregisters pending at \
         the freeze); SIGSTOP sent {:?} after the last ack",
        if env.is_empty() {
            String::new()
        } else {
            format!(" with {env:?}")
        },
        acked.registered.len(),
        acked.unregistered.len(),
        load_time,
        acked.unsure.len(),
        freeze_delay,
    );
    eprintln!(
        "after the power cut: {} records; {} of {} acknowledged registers lost, \
         {} of {} acknowledged unregisters undone{}",
        present.len(),
        lost.len(),
        must_exist.len(),
        resurrected.len(),
        must_be_gone.len(),
        if lost.iter().any(|s| s == LAST) {
            " (among them the last one, acknowledged just before the freeze)"
        } else {
            ""
        },
    );
    // Stop pycomd before its filesystem is unmounted (drop order is
    // reverse of declaration; spelled out here for the reader).
    drop(restarted);
    drop(after);
    Some(Cut {
        must_exist,
        must_be_gone,
        lost,
        resurrected,
        present: present.len(),
    })
}

/// One client: registers `/powercut/<t>/<i>` until told to stop or a
/// request fails, and unregisters every fourth record, two after it was
/// acknowledged. Records only what was acknowledged.
fn client(t: usize, endpoint: &str, stop: &AtomicBool, progress: &AtomicUsize) -> Acked {
    let ctx = zmq::Context::new();
    let mut conn = Connection::open(&ctx, endpoint).expect("a client connection to pycomd");
    conn.set_timeout(CLIENT_TIMEOUT);
    let mut ns = NameserverClient::new(conn);
    let mut acked = Acked::default();
    let name = |i: usize| format!("/powercut/{t}/{i}");
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let reg = leased(&name(i), ADDRESS, &[INTERFACE], TTL_MS);
        if ns.register(&reg).is_err() {
            // Frozen or killed pycomd: this one may or may not be there.
            break;
        }
        acked.registered.push(reg.service);
        progress.fetch_add(1, Ordering::SeqCst);
        if i % 4 == 3 {
            let gone = name(i - 2);
            match ns.unregister(&gone, ADDRESS) {
                Ok(_) => acked.unregistered.push(gone),
                Err(_) => {
                    acked.unsure.push(gone);
                    break;
                }
            }
        }
        i += 1;
    }
    acked
}
