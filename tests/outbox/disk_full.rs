//! A full disk, for real: a small tmpfs mounted over the data directory in the test's own mount
//! namespace (nothing shows outside it, nothing is left behind), filled, then freed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// Runs `test` on a runtime whose threads, and every process they start, see mounts of their
/// own: the tmpfs of one test is invisible to the others and goes away with it.
fn with_private_mounts<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) {
    // Only this thread moves; threads and processes it starts from here on inherit it.
    let unshared = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    assert_eq!(
        unshared,
        0,
        "this test mounts a tmpfs to fill a disk for real and must run as root: unshare: {}",
        std::io::Error::last_os_error()
    );
    let status = Command::new("mount")
        .args(["--make-rprivate", "/"])
        .status()
        .unwrap();
    assert!(status.success(), "mount --make-rprivate /");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test());
}

fn mount_tmpfs(dir: &Path, size: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount tmpfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fills the file system of `dir` to the last byte with one file, and returns its path.
fn fill(dir: &Path) -> PathBuf {
    let junk = dir.join("junk");
    let mut f = std::fs::File::create(&junk).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    junk
}

/// The gateway statuses received.
fn texts(s: &Subscriber) -> Vec<String> {
    s.snapshot().into_iter().map(|m| m.status()).collect()
}

#[test]
fn a_full_disk_degrades_to_memory_and_loses_nothing_once_space_returns() {
    with_private_mounts(|| async {
        let mosquitto = Mosquitto::start();
        let up = Subscriber::start(mosquitto.port, "disk-watch", "farm/gw1/#", true).await;
        let status =
            Subscriber::start(mosquitto.port, "disk-status", "farm/gw1/status", false).await;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        mount_tmpfs(&data, "4m");
        let local_port = free_port();
        // Through a proxy: an upstream that acknowledges takes every reading before it is
        // written, so the disk matters only while it does not.
        let proxy = FreezableProxy::start(mosquitto.port).await;
        let mut gw = Gateway::new(dir.path(), &site_yaml(local_port, proxy.port, 3, 2, 20));
        gw.start();
        wait_for("readings", Duration::from_secs(20), || {
            up.seqs().len() >= 100
        })
        .await;

        // The link stalls, and the disk fills to the last byte.
        proxy.freeze();
        let junk = fill(&data);
        wait_for(
            "the disk-full alarm in the log",
            Duration::from_secs(10),
            || gw.log().contains("cannot write buffer database"),
        )
        .await;
        // The link comes back (the gateway finds the old one dead) while the disk is full.
        proxy.thaw();
        wait_for("degraded status upstream", Duration::from_secs(30), || {
            texts(&status).iter().any(|t| t == "degraded")
        })
        .await;
        // The local bus keeps serving live values meanwhile.
        let local = Subscriber::start(local_port, "screen", "farm/gw1/+/level", false).await;
        wait_for(
            "live values on the local bus",
            Duration::from_secs(5),
            || local.snapshot().len() >= 10,
        )
        .await;
        let during = *up.seqs().last().unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;

        std::fs::remove_file(&junk).unwrap();
        wait_for("recovery", Duration::from_secs(10), || {
            gw.log().contains("writable again")
        })
        .await;
        wait_for("online again", Duration::from_secs(10), || {
            texts(&status).last().map(String::as_str) == Some("online")
        })
        .await;
        // Everything produced while the disk was full arrives.
        let arrived = up.wait_gapless(during + 400, Duration::from_secs(20)).await;
        if let Err(missing) = arrived {
            panic!(
                "lost while the disk was full (first 20): {missing:?}\n{}",
                gw.log()
            );
        }
        gw.terminate();
    })
}

/// The newest sequence number `s` has seen.
fn newest(s: &Subscriber) -> u64 {
    s.seqs().last().copied().unwrap_or(0)
}

#[test]
fn a_little_free_space_is_enough_to_write_a_large_memory_backlog_in_batches() {
    with_private_mounts(|| async {
        let mosquitto = Mosquitto::start();
        let up = Subscriber::start(mosquitto.port, "backlog-watch", "farm/gw1/#", true).await;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        mount_tmpfs(&data, "16m");
        let local_port = free_port();
        let proxy = FreezableProxy::start(mosquitto.port).await;
        // 1,000 readings/s: upstream takes more, so a backlog can drain.
        let mut gw = Gateway::new(dir.path(), &site_yaml(local_port, proxy.port, 5, 5, 10));
        gw.start();
        wait_for("readings", Duration::from_secs(20), || {
            up.seqs().len() >= 100
        })
        .await;
        let local = Subscriber::start(local_port, "screen", "farm/gw1/+/temperature", false).await;

        // The link stalls (so readings are for the disk), and the disk fills.
        proxy.freeze();
        let junk = fill(&data);
        wait_for("the disk-full error", Duration::from_secs(10), || {
            gw.log().contains("cannot write buffer database")
        })
        .await;
        let during = newest(&up);
        // Readings go on on the local bus, and wait in memory for the disk.
        wait_for(
            "a backlog of 10,000 readings in memory",
            Duration::from_secs(40),
            || newest(&local) > during + 10_000,
        )
        .await;
        // 1 MiB back: less than the backlog needs as one transaction, room for it in batches.
        let f = std::fs::OpenOptions::new().write(true).open(&junk).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len - (1 << 20)).unwrap();
        f.sync_all().unwrap();
        drop(f);
        // The link is back: what it acknowledges leaves memory unwritten, the rest is written
        // in batches that fit (and freed as it is acknowledged).
        proxy.thaw();
        if let Err(missing) = up
            .wait_gapless(during + 10_000, Duration::from_secs(60))
            .await
        {
            panic!(
                "the backlog never reached upstream (first 20 missing): {missing:?}\n{}",
                gw.log()
            );
        }
        wait_for("recovery", Duration::from_secs(40), || {
            gw.log().contains("writable again")
        })
        .await;
        // Room for a clean stop whatever the readings since then took.
        std::fs::remove_file(&junk).unwrap();
        let (code, _) = gw.terminate();
        assert_eq!(code, Some(0), "{}", gw.log());
    })
}

#[test]
fn a_stop_while_the_disk_is_full_says_what_it_could_not_keep_and_exits_non_zero() {
    with_private_mounts(|| async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        mount_tmpfs(&data, "4m");
        let local_port = free_port();
        // No broker upstream: every reading is for the buffer.
        let mut gw = Gateway::new(dir.path(), &site_yaml(local_port, free_port(), 3, 2, 10));
        gw.start();
        let local = Subscriber::start(local_port, "screen", "farm/gw1/+/temperature", false).await;
        wait_for("readings", Duration::from_secs(20), || newest(&local) > 50).await;
        let _junk = fill(&data);
        wait_for("the disk-full error", Duration::from_secs(10), || {
            gw.log().contains("cannot write buffer database")
        })
        .await;
        let full_at = newest(&local);
        wait_for("readings held in memory", Duration::from_secs(20), || {
            newest(&local) > full_at + 300
        })
        .await;

        let (code, _) = gw.terminate();
        let log = gw.log();
        assert_eq!(
            code,
            Some(1),
            "a stop that lost readings is not clean\n{log}"
        );
        let line = log
            .lines()
            .find(|l| l.contains("ERROR") && l.contains("held in memory are lost"))
            .unwrap_or_else(|| panic!("no count of what was lost\n{log}"));
        let count = |what: &str| -> u64 {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words
                .windows(2)
                .position(|w| w[1] == what)
                .unwrap_or_else(|| panic!("no {what} in {line}"));
            words[at].parse().unwrap()
        };
        assert!(count("readings") >= 300, "{line}");
        count("alarms");
        assert!(
            !log.lines().any(|l| l.ends_with(" stopped")),
            "claims a clean stop:\n{log}"
        );
    })
}
