//! `--op login`: pycomd with access control on. First `--clients` logins
//! sent at once (a burst at the password hash's own cost) while one client
//! keeps locating: every login must succeed, and locate's latency during
//! the burst is what the hashing threads cost everyone else. Then logins
//! back to back from `--clients` clients for `--duration`: the
//! authenticator's throughput and latency.

use crate::load::Measured;
use crate::ops::Preload;
use crate::Cli;
use pycom_client::Connection;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// How long one login may take: a burst queues behind the hashing threads.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(120);

fn connect(ctx: &zmq::Context, endpoint: &str, timeout: Duration) -> Result<Connection, String> {
    let mut conn = Connection::open(ctx, endpoint).map_err(|e| e.to_string())?;
    conn.set_timeout(timeout);
    Ok(conn)
}

/// A token for --user (`--login`).
pub fn token(cli: &Cli, ctx: &zmq::Context) -> Result<String, String> {
    let mut conn = connect(ctx, &cli.nameserver, LOGIN_TIMEOUT)?;
    let answer = conn
        .invoke(
            "org.pycom.authenticator",
            "authenticate",
            json!({"user": cli.user, "credentials": cli.password}),
        )
        .map_err(|e| format!("login failed: {e}"))?;
    answer["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("authenticate answered without a token: {answer}"))
}

fn login(conn: &mut Connection, cli: &Cli) -> Result<(), String> {
    conn.invoke(
        "org.pycom.authenticator",
        "authenticate",
        json!({"user": cli.user, "credentials": cli.password}),
    )
    .map(|_| ())
    .map_err(|e| format!("login failed: {e}"))
}

/// Locate preloaded services one at a time until `stop`, timing each.
fn locate_until(ctx: &zmq::Context, cli: &Cli, stop: &AtomicBool) -> Result<Measured, String> {
    let mut conn = connect(ctx, &cli.nameserver, Duration::from_secs(10))?;
    let started = Instant::now();
    let mut m = Measured::default();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let interface = format!("bench.pre.{}", i % cli.preload.max(1));
        match conn.invoke("org.pycom.nameserver", "locate", json!({"interface": interface})) {
            Ok(_) => {
                m.ok += 1;
                m.latencies_us
                    .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Err(_) => m.errors += 1,
        }
        i += 1;
    }
    m.elapsed = started.elapsed();
    Ok(m)
}

pub fn run(cli: &Cli, ctx: &zmq::Context, preloader: &Preload) -> Result<(), String> {
    preloader.run(ctx, &cli.nameserver, cli.preload)?;
    let mut probe = connect(ctx, &cli.nameserver, LOGIN_TIMEOUT)?;
    login(&mut probe, cli)?;

    // Locate alone, for comparison.
    let stop = AtomicBool::new(false);
    let unloaded = std::thread::scope(|scope| {
        let h = scope.spawn(|| locate_until(ctx, cli, &stop));
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        h.join().map_err(|_| "the locate thread panicked".to_string())?
    })?
    .summary();

    // The burst.
    let clients = cli.clients.max(1);
    let stop = AtomicBool::new(false);
    let left = AtomicUsize::new(clients);
    let barrier = Barrier::new(clients + 1);
    let started = Instant::now();
    let (logins, during) = std::thread::scope(|scope| {
        let burst: Vec<_> = (0..clients)
            .map(|_| {
                let (barrier, left, stop) = (&barrier, &left, &stop);
                scope.spawn(move || -> Result<u32, String> {
                    let mut conn = connect(ctx, &cli.nameserver, LOGIN_TIMEOUT)?;
                    barrier.wait();
                    let t = Instant::now();
                    let r = login(&mut conn, cli);
                    if left.fetch_sub(1, Ordering::Relaxed) == 1 {
                        stop.store(true, Ordering::Relaxed);
                    }
                    r.map(|()| t.elapsed().as_millis() as u32)
                })
            })
            .collect();
        let locator = scope.spawn(|| locate_until(ctx, cli, &stop));
        barrier.wait();
        let mut logins = Measured::default();
        for h in burst {
            match h.join().map_err(|_| "a login thread panicked".to_string())? {
                Ok(ms) => {
                    logins.ok += 1;
                    logins.latencies_us.push(ms.saturating_mul(1000));
                }
                Err(e) => {
                    eprintln!("{e}");
                    logins.errors += 1;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let during = locator
            .join()
            .map_err(|_| "the locate thread panicked".to_string())??;
        Ok::<_, String>((logins, during))
    })?;
    let burst_s = started.elapsed().as_secs_f64();
    let logins = logins.summary();
    let during = during.summary();

    // Back to back.
    let duration = Duration::from_secs_f64(cli.duration);
    let steady = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(move || -> Result<Measured, String> {
                    let mut conn = connect(ctx, &cli.nameserver, LOGIN_TIMEOUT)?;
                    let mut m = Measured::default();
                    let until = Instant::now() + duration;
                    while Instant::now() < until {
                        let t = Instant::now();
                        let result = login(&mut conn, cli);
                        // Logins still queued when the time is up do not count.
                        if Instant::now() > until {
                            break;
                        }
                        match result {
                            Ok(()) => {
                                m.ok += 1;
                                m.latencies_us
                                    .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                            }
                            Err(_) => m.errors += 1,
                        }
                    }
                    Ok(m)
                })
            })
            .collect();
        Measured::join(handles, duration)
    })?
    .summary();

    let line = json!({
        "op": "login", "clients": clients, "burst_s": burst_s,
        "burst_logins": logins, "locate_unloaded": unloaded, "locate_during_burst": during,
        "steady_logins": steady,
    });
    if cli.json {
        println!("{line}");
    } else {
        println!(
            "burst of {clients} logins: {} ok, {} failed, all done in {burst_s:.1} s (login p50 {} ms, max {} ms)",
            logins.ok,
            logins.errors,
            logins.p50_us / 1000,
            logins.p999_us / 1000
        );
        println!(
            "locate alone: p50 {} us, p99 {} us; during the burst: p50 {} us, p99 {} us ({} locates)",
            unloaded.p50_us, unloaded.p99_us, during.p50_us, during.p99_us, during.ok
        );
        println!(
            "logins back to back ({clients} clients, {:.0} s): {:.1}/s, p50 {} ms, p99 {} ms, {} errors",
            cli.duration,
            steady.throughput,
            steady.p50_us / 1000,
            steady.p99_us / 1000,
            steady.errors
        );
    }
    Ok(())
}
