//! The ring's behaviour across real processes (fork), real /dev/shm files and real signals.
//! These tests also run under qemu-aarch64 in CI, so they use fork rather than spawning a
//! binary, and bound their sizes so an emulated run stays quick.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tickloop_ring::info;
use tickloop_ring::sys;
use tickloop_ring::verify::{self, Verifier};
use tickloop_ring::{
    self as ring, Candle, CreateOptions, ReadResult, Reader, ReaderOptions, RingError, Start,
    WaitStrategy, Writer,
};

mod common;
use common::{fork, kill, wait, TestRing};

fn candle(i: u64) -> Candle {
    Candle {
        ts_ns: sys::realtime_ns(),
        symbol: (i % 5) as u32,
        flags: 0,
        open: 100.0 + (i % 1000) as f64,
        high: 101.0 + (i % 1000) as f64,
        low: 99.0,
        close: 100.5,
        volume: i as f64,
    }
}

/// Publish `n` sealed candles, at most about `max_rate` per second (0 = unpaced).
fn write_sealed(writer: &mut Writer, n: u64, max_rate: f64) {
    let start = sys::monotonic_ns();
    for i in 0..n {
        if max_rate > 0.0 && i % 1024 == 0 {
            let due = start + (i as f64 * 1e9 / max_rate) as i64;
            while sys::monotonic_ns() < due {
                std::thread::yield_now();
            }
        }
        let pos = writer.next_position();
        writer.publish(&verify::seal(pos, candle(i)));
    }
}

/// Read until `n` positions are consumed, or `quiet` passes with nothing new.
fn read_verified(reader: &mut Reader, verifier: &mut Verifier, n: u64, quiet: Duration) {
    let mut last = Instant::now();
    while verifier.consumed() < n {
        let mut give_up = || last.elapsed() > quiet;
        let result = reader.wait(&WaitStrategy::Spin, &mut give_up);
        if result == ReadResult::Empty {
            break;
        }
        last = Instant::now();
        verifier.observe(&result, sys::realtime_ns());
    }
}

#[test]
fn two_processes_millions_of_candles_none_lost_duplicated_or_torn() {
    const N: u64 = 3_000_000;
    let ring = TestRing::new(1 << 21);
    let mut reader = Reader::attach(&ring.0, ReaderOptions::default()).unwrap();
    let path = ring.0.clone();
    // 2 M/s at most: the 2^21-slot ring then absorbs a reader stall of a second, and an
    // emulated (qemu) reader at a third of the writer's speed.
    let child = fork(move || write_sealed(&mut Writer::open(&path).unwrap(), N, 2e6));
    let mut verifier = Verifier::new();
    read_verified(&mut reader, &mut verifier, N, Duration::from_secs(30));
    assert_eq!(wait(child), 0, "writer process failed");
    let s = verifier.summary();
    assert_eq!(
        (s.received, s.lost, s.duplicates, s.torn, s.overruns),
        (N, 0, 0, 0, 0)
    );
    assert!(verifier.clean());
    assert_eq!(verifier.unsealed(), 0);
}

#[test]
fn a_lapped_reader_is_told_exactly_how_many_it_lost() {
    let ring = TestRing::new(1024);
    let mut writer = Writer::open(&ring.0).unwrap();
    let mut reader = Reader::attach(&ring.0, ReaderOptions::default()).unwrap();
    write_sealed(&mut writer, 5000, 0.0);
    // Positions 0..5000 were written into 1024 slots: the reader at 0 was lapped. The oldest
    // intact position is write_seq + 1 - capacity = 3977 (the slot of 3976 is the next to be
    // overwritten); it resumes an eighth of the ring above, at 3977 + 128 = 4105.
    assert_eq!(reader.try_read(), ReadResult::Overrun { lost: 4105 });
    let mut positions = Vec::new();
    while let ReadResult::Candle { pos, candle } = reader.try_read() {
        assert!(verify::seal_ok(pos, &candle));
        positions.push(pos);
    }
    assert_eq!(positions, (4105..5000).collect::<Vec<_>>());
    assert_eq!(reader.stats().lost + reader.stats().received, 5000);
}

#[test]
fn a_slowed_reader_in_another_process_accounts_for_every_candle() {
    const N: u64 = 300_000;
    let ring = TestRing::new(1024);
    let mut reader = Reader::attach(&ring.0, ReaderOptions::default()).unwrap();
    let path = ring.0.clone();
    let child = fork(move || write_sealed(&mut Writer::open(&path).unwrap(), N, 2e6));
    let mut verifier = Verifier::new();
    let mut last = Instant::now();
    let mut reads = 0u64;
    while verifier.consumed() < N && last.elapsed() < Duration::from_secs(30) {
        let result = reader.try_read();
        if result == ReadResult::Empty {
            std::hint::spin_loop();
            continue;
        }
        last = Instant::now();
        verifier.observe(&result, 0);
        reads += 1;
        if reads.is_multiple_of(500) {
            std::thread::sleep(Duration::from_millis(2)); // fall behind on purpose
        }
    }
    assert_eq!(wait(child), 0);
    let s = verifier.summary();
    assert!(s.overruns > 0, "the reader was meant to be lapped: {s:?}");
    assert_eq!(s.received + s.lost, N, "{s:?}");
    assert_eq!(
        reader.stats().lost,
        s.lost,
        "overruns announced exactly the gaps"
    );
    assert!(
        verifier.clean(),
        "{s:?}, unannounced {}",
        verifier.unannounced_gaps()
    );
}

#[test]
fn writer_killed_at_random_points_never_yields_a_torn_candle() {
    const KILLS: u64 = 100;
    let ring = TestRing::new(4096);
    let mut reader = Reader::attach(&ring.0, ReaderOptions::default()).unwrap();
    let mut verifier = Verifier::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64; // fixed seed: reproducible kill points
    for round in 0..KILLS {
        let path = ring.0.clone();
        let child = fork(move || {
            let mut writer = Writer::open(&path).unwrap();
            writer.symbol("KILLME").unwrap();
            write_sealed(&mut writer, u64::MAX, 0.0);
        });
        // Kill only after it has taken over, so every round is a new epoch.
        let deadline = Instant::now() + Duration::from_secs(10);
        let epoch = loop {
            if let Some(epoch) = reader.check_writer() {
                break epoch;
            }
            assert!(Instant::now() < deadline, "writer {round} never took over");
            std::thread::yield_now();
        };
        assert_eq!(
            epoch,
            round + 1,
            "each restarted writer bumps the epoch once"
        );
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run_for = Duration::from_micros(rng % 3000);
        let started = Instant::now();
        let before = verifier.summary().received;
        let published_before = reader.write_seq();
        while started.elapsed() < run_for {
            let result = reader.try_read();
            verifier.observe(&result, 0);
        }
        kill(child, libc::SIGKILL);
        wait(child);
        // Drain what the dead writer completed; a half-written slot is never returned.
        loop {
            let result = reader.try_read();
            if result == ReadResult::Empty {
                break;
            }
            verifier.observe(&result, 0);
        }
        assert!(verifier.clean(), "round {round}: {:?}", verifier.summary());
        // Once the writer is dead its last candles stay intact, so if it published anything
        // this round, the drain delivered at least its newest one.
        if reader.write_seq() > published_before {
            assert!(
                verifier.summary().received > before,
                "round {round}: reading continued"
            );
        }
    }
    let s = verifier.summary();
    assert_eq!(
        (s.torn, s.duplicates, verifier.unannounced_gaps()),
        (0, 0, 0),
        "{s:?}"
    );
    assert!(s.received > 0);
    let shown = info::inspect(&ring.0, 4).unwrap();
    assert_eq!(shown.writer.epoch, KILLS);
    assert!(!shown.writer.alive);
    assert_eq!(
        shown.symbol_names,
        vec!["KILLME".to_string()],
        "symbols survive restarts"
    );
}

#[test]
fn a_new_writer_keeps_a_completed_position_and_rewrites_a_torn_one() {
    use std::os::unix::fs::FileExt;
    let ring = TestRing::new(64);
    let mut writer = Writer::open(&ring.0).unwrap();
    write_sealed(&mut writer, 10, 0.0);
    drop(writer);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&ring.0)
        .unwrap();
    // A writer that died after completing position 9 but before publishing write_seq = 10.
    file.write_at(&9u64.to_le_bytes(), 192).unwrap();
    assert_eq!(Writer::open(&ring.0).unwrap().next_position(), 10);
    // A writer that died in the middle of position 10 (odd seq).
    let slots_offset = u64::from_le_bytes({
        let mut b = [0u8; 8];
        file.read_at(&mut b, 56).unwrap();
        b
    });
    file.write_at(&21u64.to_le_bytes(), slots_offset + 10 * 64)
        .unwrap();
    let mut reader = Reader::attach(
        &ring.0,
        ReaderOptions {
            start: Start::At(10),
            register: false,
        },
    )
    .unwrap();
    assert_eq!(
        reader.try_read(),
        ReadResult::Empty,
        "a half-written slot is not returned"
    );
    let mut writer = Writer::open(&ring.0).unwrap();
    assert_eq!(writer.next_position(), 10);
    write_sealed(&mut writer, 1, 0.0);
    match reader.try_read() {
        ReadResult::Candle { pos: 10, candle } => assert!(verify::seal_ok(10, &candle)),
        other => panic!("expected position 10, got {other:?}"),
    }
}

#[test]
fn a_second_writer_is_refused_and_named() {
    let ring = TestRing::new(64);
    let _first = Writer::open(&ring.0).unwrap();
    match Writer::open(&ring.0) {
        Err(e @ RingError::WriterBusy { pid, .. }) => {
            assert_eq!(pid, std::process::id());
            let msg = e.to_string();
            assert!(
                msg.contains("already has a writer") && msg.contains(&format!("kill {pid}")),
                "{msg}"
            );
        }
        other => panic!("expected WriterBusy, got {:?}", other.err()),
    }
}

fn attach_error(path: &Path) -> String {
    let err = Reader::attach(path, ReaderOptions::default())
        .err()
        .expect("attach must fail");
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "names the path: {msg}"
    );
    msg
}

#[test]
fn attaching_to_something_that_is_not_a_good_ring_is_a_clear_error() {
    let missing = TestRing::unnamed();
    assert!(attach_error(&missing.0).contains("not found"));

    let garbage = TestRing::unnamed();
    std::fs::write(&garbage.0, vec![0x5au8; 100_000]).unwrap();
    assert!(attach_error(&garbage.0).contains("is not a tickloop ring"));
    std::fs::write(&garbage.0, b"hello").unwrap();
    assert!(attach_error(&garbage.0).contains("is not a tickloop ring"));

    let other_version = TestRing::new(64);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&other_version.0)
            .unwrap();
        f.write_at(&2u16.to_le_bytes(), 8).unwrap();
    }
    let msg = attach_error(&other_version.0);
    assert!(
        msg.contains("layout 2.1") && msg.contains("reads layout 1.x"),
        "{msg}"
    );

    let truncated = TestRing::new(1024);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated.0)
        .unwrap();
    f.set_len(20_000).unwrap();
    let msg = attach_error(&truncated.0);
    assert!(
        msg.contains("truncated") && msg.contains("the file has 20000"),
        "{msg}"
    );
    f.set_len(100).unwrap();
    assert!(attach_error(&truncated.0).contains("truncated"));
    // A writer refuses it too.
    assert!(matches!(
        Writer::open(&truncated.0),
        Err(RingError::Truncated { .. })
    ));
}

#[test]
fn a_ring_of_another_user_is_refused() {
    let ring = TestRing::new(64);
    let c = std::ffi::CString::new(ring.0.to_str().unwrap()).unwrap();
    // SAFETY: valid C string.
    if unsafe { libc::chown(c.as_ptr(), 65534, 65534) } != 0 {
        eprintln!(
            "SKIP a_ring_of_another_user_is_refused: chown needs root (running as uid {})",
            sys::euid()
        );
        return;
    }
    let msg = attach_error(&ring.0);
    assert!(msg.contains("belongs to uid 65534"), "{msg}");
    assert!(matches!(
        Writer::open(&ring.0),
        Err(RingError::OtherUser { owner: 65534, .. })
    ));
}

#[test]
fn creating_on_a_full_filesystem_fails_cleanly_at_creation() {
    if sys::euid() != 0 {
        eprintln!("SKIP creating_on_a_full_filesystem_fails_cleanly_at_creation: mounting a small tmpfs needs root");
        return;
    }
    let dir = PathBuf::from(format!("/tmp/tickloop-test-full-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tickloop-test"])
        .arg(&dir)
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        let _ = std::fs::remove_dir(&dir);
        eprintln!("SKIP creating_on_a_full_filesystem_fails_cleanly_at_creation: mount -t tmpfs failed here");
        return;
    }
    let path = dir.join("big");
    let result = ring::create(
        &path,
        CreateOptions {
            slots: 1 << 16,
            ..CreateOptions::default()
        },
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let _ = std::process::Command::new("umount").arg(&dir).status();
    let _ = std::fs::remove_dir(&dir);
    let err = result.expect_err("a 4 MiB ring cannot fit in 1 MiB");
    let msg = err.to_string();
    assert!(matches!(err, RingError::NoSpace { .. }), "{msg}");
    assert!(
        msg.contains("not enough space") && msg.contains("needs 4.0 MiB") && !msg.contains('\n'),
        "{msg}"
    );
    assert!(
        leftovers.is_empty(),
        "no temporary file left behind: {leftovers:?}"
    );
}

#[test]
fn creation_is_exclusive_private_and_cleans_up_after_dead_creators() {
    let ring = TestRing::unnamed();
    let name = ring.0.file_name().unwrap().to_str().unwrap().to_owned();
    // A temporary file from a creator that died (a pid that does not exist).
    let dead_pid = (4_000_000..4_100_000)
        .find(|p| sys::process_start_ticks(*p).is_none())
        .unwrap();
    let stale = ring.0.with_file_name(format!(".{name}.tmp-{dead_pid}-1"));
    std::fs::write(&stale, b"half made").unwrap();
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let path = ring.0.clone();
            std::thread::spawn(move || ring::create(&path, CreateOptions::default()))
        })
        .collect();
    let results: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "exactly one creator wins"
    );
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(()) | Err(RingError::Exists { .. }))));
    assert!(
        !stale.exists(),
        "the dead creator's temporary file was removed"
    );
    let meta = std::fs::metadata(&ring.0).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), sys::euid());

    let shared = TestRing::unnamed();
    ring::create(
        &shared.0,
        CreateOptions {
            mode: 0o640,
            ..CreateOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        std::fs::metadata(&shared.0).unwrap().permissions().mode() & 0o777,
        0o640
    );

    let bad = ring::create(
        &TestRing::unnamed().0,
        CreateOptions {
            slots: 1000,
            ..CreateOptions::default()
        },
    );
    assert!(bad.unwrap_err().to_string().contains("power of two"));
}

/// A child process whose reader parks on the ring forever; returns once it is parked.
fn fork_parked_reader(ring: &Path) -> libc::pid_t {
    let path = ring.to_owned();
    let pid = fork(move || {
        let mut r = Reader::attach(&path, ReaderOptions::default()).unwrap();
        loop {
            r.park(Duration::from_secs(60));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while info::inspect(ring, 0).unwrap().parked_readers == 0 {
        assert!(Instant::now() < deadline, "the child never parked");
        std::thread::sleep(Duration::from_millis(5));
    }
    pid
}

#[test]
fn a_parked_reader_is_woken_by_the_doorbell_and_a_dead_one_is_forgotten() {
    let ring = TestRing::new(64);
    let path = ring.0.clone();
    let mut reader = Reader::attach(&ring.0, ReaderOptions::default()).unwrap();
    let child = fork(move || {
        let mut writer = Writer::open(&path).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        write_sealed(&mut writer, 1, 0.0);
        assert!(writer.doorbell_rings() <= 1);
        std::thread::sleep(Duration::from_millis(500));
    });
    let strategy = WaitStrategy::SpinThenPark {
        spins: 10,
        park_timeout: Duration::from_secs(20),
    };
    let started = Instant::now();
    let mut result = reader.wait(&strategy, &mut || false);
    if let ReadResult::NewWriter { .. } = result {
        result = reader.wait(&strategy, &mut || false);
    }
    let waited = started.elapsed();
    assert!(
        matches!(result, ReadResult::Candle { pos: 0, .. }),
        "{result:?}"
    );
    // Without the doorbell the reader would sleep for its whole 20 s park timeout.
    assert!(waited < Duration::from_secs(10), "woken after {waited:?}");
    assert!(reader.stats().parks >= 1);
    assert_eq!(wait(child), 0);

    // With nobody parked the writer never rings.
    let mut writer = Writer::open(&ring.0).unwrap();
    write_sealed(&mut writer, 10_000, 0.0);
    assert_eq!(writer.doorbell_rings(), 0);

    // A parked reader that cannot run (stopped) is rung once, not on every publish.
    let stopped = fork_parked_reader(&ring.0);
    kill(stopped, libc::SIGSTOP);
    let rings = writer.doorbell_rings();
    write_sealed(&mut writer, 10_000, 0.0);
    assert!(
        writer.doorbell_rings() - rings <= 1,
        "rang {} times",
        writer.doorbell_rings() - rings
    );
    kill(stopped, libc::SIGKILL);
    wait(stopped);
    writer.heartbeat(sys::realtime_ns());

    // A reader killed while parked must not leave the writer ringing forever.
    let sleeper = fork_parked_reader(&ring.0);
    kill(sleeper, libc::SIGKILL);
    wait(sleeper);
    assert_eq!(info::inspect(&ring.0, 0).unwrap().parked_readers, 1);
    // The repair scan runs at most once a second: the heartbeat above was the last one.
    writer.heartbeat(sys::realtime_ns() + 2_000_000_000);
    assert_eq!(info::inspect(&ring.0, 0).unwrap().parked_readers, 0);
    let rings = writer.doorbell_rings();
    write_sealed(&mut writer, 1000, 0.0);
    assert_eq!(writer.doorbell_rings(), rings);
}

#[test]
fn a_polling_reader_gets_every_candle() {
    let ring = TestRing::new(1024);
    let mut reader = Reader::attach(&ring.0, ReaderOptions::default()).unwrap();
    let path = ring.0.clone();
    let child = fork(move || write_sealed(&mut Writer::open(&path).unwrap(), 500, 5000.0));
    let strategy = WaitStrategy::Poll {
        interval: Duration::from_millis(1),
    };
    let mut verifier = Verifier::new();
    let started = Instant::now();
    while verifier.consumed() < 500 && started.elapsed() < Duration::from_secs(30) {
        let result = reader.wait(&strategy, &mut || {
            started.elapsed() > Duration::from_secs(30)
        });
        verifier.observe(&result, 0);
    }
    assert_eq!(wait(child), 0);
    assert_eq!(verifier.summary().received, 500);
    assert!(verifier.clean());
}

#[test]
fn info_reports_writer_liveness_and_reader_lag() {
    let ring = TestRing::new(1024);
    let mut writer = Writer::open(&ring.0).unwrap();
    let id = writer.symbol("EURUSD").unwrap();
    assert_eq!(writer.symbol("EURUSD").unwrap(), id);
    let mut reader = Reader::attach(&ring.0, ReaderOptions::default()).unwrap();
    write_sealed(&mut writer, 100, 0.0);
    for _ in 0..40 {
        reader.try_read();
    }
    reader.publish_progress();
    let shown = info::inspect(&ring.0, 8).unwrap();
    assert_eq!(shown.write_seq, 100);
    assert_eq!(shown.writer.pid, std::process::id());
    assert!(shown.writer.alive);
    assert_eq!(shown.writer.epoch, 1);
    assert_eq!(shown.symbol_names, vec!["EURUSD".to_string()]);
    let me = shown
        .readers
        .iter()
        .find(|r| r.pid == std::process::id())
        .expect("registered");
    assert_eq!((me.cursor, me.lag, me.received), (40, 60, 40));
    assert_eq!(reader.symbol_name(id), Some("EURUSD"));
    drop(reader);
    assert!(
        info::inspect(&ring.0, 0).unwrap().readers.is_empty(),
        "a dropped reader unregisters"
    );
    // A ring whose writer is alive is not removed without --force.
    assert!(matches!(
        info::remove(&ring.0, false),
        Err(RingError::WriterBusy { .. })
    ));
    drop(writer);
    info::remove(&ring.0, false).unwrap();
    assert!(!ring.0.exists());
}

#[test]
fn a_ring_on_hugetlbfs_works_for_writer_and_registered_reader() {
    if sys::euid() != 0 {
        eprintln!("SKIP a_ring_on_hugetlbfs_works_for_writer_and_registered_reader: reserving huge pages and mounting hugetlbfs need root");
        return;
    }
    let knob = "/proc/sys/vm/nr_hugepages";
    let Some(before) = std::fs::read_to_string(knob)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    else {
        eprintln!("SKIP a_ring_on_hugetlbfs_works_for_writer_and_registered_reader: no {knob}");
        return;
    };
    let _ = std::fs::write(knob, (before + 2).to_string());
    let dir = PathBuf::from(format!("/tmp/tickloop-test-huge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "hugetlbfs", "tickloop-test"])
        .arg(&dir)
        .status();
    if !matches!(mounted, Ok(s) if s.success()) {
        let _ = std::fs::remove_dir(&dir);
        let _ = std::fs::write(knob, before.to_string());
        eprintln!("SKIP a_ring_on_hugetlbfs_works_for_writer_and_registered_reader: mount -t hugetlbfs failed here");
        return;
    }
    let path = dir.join("ring");
    let outcome = std::panic::catch_unwind(|| {
        ring::create(
            &path,
            CreateOptions {
                slots: 4096,
                ..CreateOptions::default()
            },
        )
        .unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(
            size >= 2 << 20 && size % (2 << 20) == 0,
            "rounded up to huge pages: {size}"
        );
        let mut writer = Writer::open(&path).unwrap();
        let mut reader = Reader::attach(&path, ReaderOptions::default()).unwrap();
        assert!(
            reader.registered(),
            "the control page maps on hugetlbfs too"
        );
        write_sealed(&mut writer, 1000, 0.0);
        let mut verifier = Verifier::new();
        read_verified(&mut reader, &mut verifier, 1000, Duration::from_secs(5));
        assert_eq!(verifier.summary().received, 1000);
        assert!(verifier.clean());
        assert_eq!(info::inspect(&path, 0).unwrap().readers.len(), 1);
    });
    let _ = std::fs::remove_file(&path);
    // Every mapping is gone once the writer and reader are: nothing keeps the mount busy.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let leaked = maps
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .count();
    let unmounted = std::process::Command::new("umount").arg(&dir).status();
    let _ = std::fs::remove_dir(&dir);
    let _ = std::fs::write(knob, before.to_string());
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(leaked, 0, "mappings left behind:\n{maps}");
    assert!(
        matches!(unmounted, Ok(s) if s.success()),
        "the hugetlbfs mount stayed busy"
    );
}
