//! The single-instance lock across real processes (fork), real files and real signals: one
//! winner among many simultaneous starts, instant take-over after SIGKILL, no symbolic link ever
//! followed, and `list` telling held locks from free ones.

use std::cell::RefCell;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tickloop_ops::lock::{self, Acquired, Holder, InstanceLock, LockError};
use tickloop_ring::sys;

#[path = "../../ring/tests/common/mod.rs"]
mod common;
use common::{fork, kill, try_wait, wait, Gate, Pipe, TestDir};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

fn lock_path(dir: &Path, component: &str, account: &str) -> PathBuf {
    dir.join(format!("{component}@{account}.lock"))
}

fn killed_by(status: i32, signal: libc::c_int) -> bool {
    libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == signal
}

/// Block in a child until it is killed.
fn hold_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn twenty_processes_start_at_once_exactly_one_wins_and_the_others_name_it() {
    if under_qemu("twenty_processes_start_at_once_exactly_one_wins_and_the_others_name_it") {
        return;
    }
    const N: usize = 20;
    let dir = TestDir::new("race");
    let (ready, results) = (Pipe::new(), Pipe::new());
    let (start, done) = (Gate::new(), Gate::new());
    let mut children = Vec::new();
    for _ in 0..N {
        children.push(fork(|| {
            done.leave();
            ready.send("ready");
            start.wait();
            match InstanceLock::acquire(&dir.0, "engine", "binance-main") {
                Ok((lock, acquired)) => {
                    let holder = serde_json::to_string(lock.holder()).unwrap();
                    results.send(&format!("won {} {holder}", acquired == Acquired::Fresh));
                    // Hold it until every loser has answered.
                    done.wait();
                    lock.release();
                }
                Err(e) => {
                    let pid = match &e {
                        LockError::Held {
                            holder: Some(h), ..
                        } => h.pid,
                        _ => 0,
                    };
                    results.send(&format!("held {pid} {e}"));
                }
            }
        }));
    }
    ready.receive(N, Duration::from_secs(30));
    start.open();
    let lines = results.receive(N, Duration::from_secs(30));
    done.open();
    for &child in &children {
        assert_eq!(wait(child), 0, "a child failed");
    }

    let winners: Vec<&String> = lines.iter().filter(|l| l.starts_with("won ")).collect();
    assert_eq!(winners.len(), 1, "exactly one winner: {lines:#?}");
    let won = winners[0]
        .strip_prefix("won true ")
        .expect("the first holder of a new lock file starts fresh");
    let holder: Holder = serde_json::from_str(won).unwrap();
    assert!(
        children.contains(&(holder.pid as libc::pid_t)),
        "the winner names itself"
    );
    assert_eq!(holder.host, hostname());
    assert_eq!(holder.version, VERSION);
    assert_eq!(
        (holder.component.as_str(), holder.account.as_str()),
        ("engine", "binance-main")
    );
    assert_ne!(holder.start_ticks, 0);

    let path = lock_path(&dir.0, "engine", "binance-main");
    let expected = format!(
        "engine@binance-main is already running: pid {} on host {}, started {}, tickloop {VERSION} (lock {}); stop it with \"",
        holder.pid,
        holder.host,
        lock::format_utc(holder.started_unix_ns),
        path.display()
    );
    let losers: Vec<&String> = lines.iter().filter(|l| !l.starts_with("won ")).collect();
    assert_eq!(losers.len(), N - 1);
    for line in losers {
        let message = line
            .strip_prefix(&format!("held {} ", holder.pid))
            .unwrap_or_else(|| panic!("a loser must be told the winner's pid: {line}"));
        assert!(message.starts_with(&expected), "{message}");
        assert!(message.contains(&format!("\"kill {}\"", holder.pid)));
        assert!(message.ends_with(" before starting another"), "{message}");
    }
}

#[test]
fn after_sigkill_the_next_acquire_succeeds_within_100_ms() {
    if under_qemu("after_sigkill_the_next_acquire_succeeds_within_100_ms") {
        return;
    }
    let dir = TestDir::new("sigkill");
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let ready = Pipe::new();
        let child = fork(|| {
            let (lock, acquired) = InstanceLock::acquire(&dir.0, "engine", "acct").unwrap();
            ready.send(&format!(
                "{} {}",
                lock.holder().pid,
                acquired == Acquired::Fresh
            ));
            hold_forever();
        });
        let line = ready.receive(1, Duration::from_secs(30)).remove(0);
        assert_eq!(
            line,
            format!("{child} true"),
            "the child holds it, fresh after a clean release"
        );
        match InstanceLock::acquire(&dir.0, "engine", "acct") {
            Err(LockError::Held {
                holder: Some(h), ..
            }) => assert_eq!(h.pid, child as u32),
            other => panic!("a second start must be refused while the holder lives: {other:?}"),
        }

        kill(child, libc::SIGKILL);
        let status = wait(child);
        let dead_at = Instant::now();
        let (lock, acquired) = InstanceLock::acquire(&dir.0, "engine", "acct")
            .expect("the kernel released the dead holder's lock");
        let took = dead_at.elapsed();
        assert!(killed_by(status, libc::SIGKILL));
        slowest = slowest.max(took);
        assert!(
            took < Duration::from_millis(100),
            "took {took:?} after the holder's death"
        );
        let Acquired::PreviousHolderGone(previous) = &acquired else {
            panic!("the dead holder must be reported: {acquired:?}");
        };
        assert_eq!(previous.pid, child as u32);
        assert_eq!(previous.host, hostname());
        let note = acquired.note().unwrap();
        assert!(
            note.starts_with(&format!(
                "previous holder pid {child} (started {} on host {}, tickloop {VERSION}) of engine@acct is gone",
                lock::format_utc(previous.started_unix_ns),
                previous.host
            )),
            "{note}"
        );
        assert_eq!(lock.holder().pid, std::process::id());
        // Released cleanly before the next child is forked (a forked child would share it).
        lock.release();
    }
    eprintln!("slowest take-over after a holder's death: {slowest:?}");
}

#[test]
fn different_accounts_and_components_do_not_conflict_and_the_same_pair_does() {
    let dir = TestDir::new("pairs");
    let before = sys::realtime_ns();
    let (main, fresh) = InstanceLock::acquire(&dir.0, "engine", "binance-main").unwrap();
    let after = sys::realtime_ns();
    assert_eq!(fresh, Acquired::Fresh);
    assert_eq!(fresh.note(), None);
    let (alt, _) = InstanceLock::acquire(&dir.0, "engine", "binance-alt").unwrap();
    let (feed, _) = InstanceLock::acquire(&dir.0, "feed", "binance-main").unwrap();
    assert_eq!(main.path(), lock_path(&dir.0, "engine", "binance-main"));
    assert_eq!(alt.path(), lock_path(&dir.0, "engine", "binance-alt"));
    assert_eq!(feed.path(), lock_path(&dir.0, "feed", "binance-main"));

    let me = main.holder();
    assert_eq!(me.pid, std::process::id());
    assert_eq!(me.host, hostname());
    assert_eq!(me.version, VERSION);
    assert_eq!(
        (me.component.as_str(), me.account.as_str()),
        ("engine", "binance-main")
    );
    assert_eq!(Some(me.start_ticks), sys::process_start_ticks(me.pid));
    assert!((before..=after).contains(&me.started_unix_ns));

    // The same pair again is refused, even in the holder's own process: flock locks belong to
    // open file descriptions, and each acquire opens its own.
    let err = InstanceLock::acquire(&dir.0, "engine", "binance-main").unwrap_err();
    match &err {
        LockError::Held {
            name, path, holder, ..
        } => {
            assert_eq!(name, "engine@binance-main");
            assert_eq!(path, main.path());
            assert_eq!(holder.as_deref(), Some(me));
        }
        other => panic!("{other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "engine@binance-main is already running: pid {} on host {}, started {}, tickloop {VERSION} (lock {}); stop it with \"",
            me.pid,
            me.host,
            lock::format_utc(me.started_unix_ns),
            main.path().display()
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!("\"kill {}\"", me.pid)),
        "{message}"
    );
    assert!(message.ends_with(" before starting another"), "{message}");
    assert!(!message.contains('\n'));
    eprintln!("{message}");

    // Released, the pair is free again and starts fresh.
    main.release();
    let (again, acquired) = InstanceLock::acquire(&dir.0, "engine", "binance-main").unwrap();
    assert_eq!(acquired, Acquired::Fresh);
    drop((again, alt, feed));
}

#[test]
fn utc_times_are_formatted_without_a_date_crate() {
    // Checked against `date -u -d @SECONDS +%Y-%m-%dT%H:%M:%SZ`.
    let cases: [(i64, &str); 11] = [
        (0, "1970-01-01T00:00:00Z"),
        (-1, "1969-12-31T23:59:59Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (951_868_799, "2000-02-29T23:59:59Z"),
        (1_709_251_199, "2024-02-29T23:59:59Z"),
        (1_795_446_245, "2026-11-23T15:04:05Z"),
        (4_102_444_800, "2100-01-01T00:00:00Z"),
        (4_107_456_000, "2100-02-28T00:00:00Z"),
        (4_107_542_400, "2100-03-01T00:00:00Z"),
        (-2_208_988_800, "1900-01-01T00:00:00Z"),
        (-2_203_891_200, "1900-03-01T00:00:00Z"),
    ];
    for (secs, text) in cases {
        assert_eq!(lock::format_utc(secs * 1_000_000_000), text, "{secs} s");
    }
    assert_eq!(lock::format_utc(-1), "1969-12-31T23:59:59Z", "rounds down");
    assert_eq!(lock::format_utc(999_999_999), "1970-01-01T00:00:00Z");
    assert_eq!(lock::format_utc(i64::MAX), "2262-04-11T23:47:16Z");
    assert_eq!(lock::format_utc(i64::MIN), "1677-09-21T00:12:43Z");

    // Every day i64 nanoseconds can name, against a plain day-by-day calendar walk.
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = |y: i64, m: u32| match m {
        2 if leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    let (mut y, mut m, mut d) = (1677_i64, 9_u32, 22_u32);
    let first = -106_751_i64; // 1677-09-22, the first whole day
    for day in first..=106_750 {
        let ns = day * 86_400_000_000_000 + 43_200_000_000_000;
        assert_eq!(
            lock::format_utc(ns),
            format!("{y:04}-{m:02}-{d:02}T12:00:00Z"),
            "day {day}"
        );
        d += 1;
        if d > month_days(y, m) {
            d = 1;
            m += 1;
            if m > 12 {
                m = 1;
                y += 1;
            }
        }
    }
    assert_eq!((y, m, d), (2262, 4, 11));
}

#[test]
fn a_symbolic_link_at_the_lock_path_is_refused_and_never_followed() {
    let dir = TestDir::new("symlink");
    let precious = dir.0.join("precious.txt");
    fs::write(&precious, "precious\n").unwrap();

    let path = lock_path(&dir.0, "engine", "acct");
    symlink(&precious, &path).unwrap();
    let err = InstanceLock::acquire(&dir.0, "engine", "acct").unwrap_err();
    assert!(
        matches!(&err, LockError::Symlink { path: p } if *p == path),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&format!(
        "lock file {} is a symbolic link; refusing to follow it",
        path.display()
    )));
    eprintln!("{message}");
    assert_eq!(fs::read_to_string(&precious).unwrap(), "precious\n");
    assert!(fs::symlink_metadata(&path).unwrap().is_symlink());

    let to_null = lock_path(&dir.0, "engine", "null");
    symlink("/dev/null", &to_null).unwrap();
    let err = InstanceLock::acquire(&dir.0, "engine", "null").unwrap_err();
    assert!(matches!(err, LockError::Symlink { .. }), "{err:?}");

    // A dangling link is not followed to create its target either.
    let nowhere = dir.0.join("nowhere");
    symlink(&nowhere, lock_path(&dir.0, "engine", "dangling")).unwrap();
    let err = InstanceLock::acquire(&dir.0, "engine", "dangling").unwrap_err();
    assert!(matches!(err, LockError::Symlink { .. }), "{err:?}");
    assert!(!nowhere.exists());

    // `list` does not follow them either: no locks here.
    assert!(lock::list(&dir.0).unwrap().is_empty());
}

#[test]
fn a_link_swapped_in_while_starting_is_never_followed() {
    // Another thread keeps replacing the lock file with a symbolic link to a precious file and
    // back, so some swaps land between the check and the open: O_NOFOLLOW must refuse those.
    let dir = TestDir::new("swap");
    let precious = dir.0.join("precious.txt");
    fs::write(&precious, "precious\n").unwrap();
    let path = lock_path(&dir.0, "engine", "swap");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (mut taken, mut refused, mut unexpected) = (0, 0, None);
    std::thread::scope(|s| {
        s.spawn(|| {
            let spare = dir.0.join("spare");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = fs::remove_file(&path);
                let _ = symlink(&precious, &path);
                std::thread::yield_now();
                let _ = fs::write(&spare, "");
                let _ = fs::rename(&spare, &path);
                std::thread::yield_now();
            }
        });
        let deadline = Instant::now() + Duration::from_millis(700);
        while Instant::now() < deadline {
            match InstanceLock::acquire(&dir.0, "engine", "swap") {
                Ok((lock, _)) => {
                    taken += 1;
                    lock.release();
                }
                Err(LockError::Symlink { .. }) => refused += 1,
                Err(e) => {
                    unexpected = Some(e);
                    break;
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    if let Some(e) = unexpected {
        panic!("{e}");
    }
    eprintln!("{taken} taken, {refused} refused as links");
    assert!(taken > 0 && refused > 0, "{taken} taken, {refused} refused");
    assert_eq!(fs::read_to_string(&precious).unwrap(), "precious\n");
}

#[test]
fn a_directory_a_fifo_or_a_hard_link_at_the_lock_path_is_refused() {
    let dir = TestDir::new("kinds");
    fs::create_dir(lock_path(&dir.0, "engine", "dir")).unwrap();
    let err = InstanceLock::acquire(&dir.0, "engine", "dir").unwrap_err();
    assert!(
        matches!(
            err,
            LockError::NotRegular {
                kind: "directory",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .contains("is a directory, not a regular file"));

    let fifo = lock_path(&dir.0, "engine", "fifo");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let err = InstanceLock::acquire(&dir.0, "engine", "fifo").unwrap_err();
    assert!(
        matches!(
            err,
            LockError::NotRegular {
                kind: "named pipe (FIFO)",
                ..
            }
        ),
        "{err:?}"
    );

    let precious = dir.0.join("precious.txt");
    fs::write(&precious, "precious\n").unwrap();
    fs::hard_link(&precious, lock_path(&dir.0, "engine", "linked")).unwrap();
    let err = InstanceLock::acquire(&dir.0, "engine", "linked").unwrap_err();
    assert!(
        matches!(err, LockError::HardLinked { links: 2, .. }),
        "{err:?}"
    );
    assert_eq!(fs::read_to_string(&precious).unwrap(), "precious\n");
    eprintln!("{err}");
}

#[test]
fn bad_names_are_refused_before_anything_is_created() {
    let base = TestDir::new("names");
    let dir = base.0.join("not-yet");
    let long = "a".repeat(65);
    for bad in [
        "../x",
        "",
        "a/b",
        long.as_str(),
        "a@b",
        "a b",
        "x.lock\n",
        "é",
        "a\0b",
    ] {
        for (what, component, account) in [("component", bad, "acct"), ("account", "engine", bad)] {
            match InstanceLock::acquire(&dir, component, account) {
                Err(LockError::BadName { what: w, name, .. }) => {
                    assert_eq!((w, name.as_str()), (what, bad));
                }
                other => panic!("{bad:?} as {what}: {other:?}"),
            }
        }
    }
    assert!(!dir.exists(), "nothing created for a bad name");
    let err = InstanceLock::acquire(&dir, "../x", "acct").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid component name \"../x\": it contains '/'; use 1 to 64 of the characters A-Z a-z 0-9 . _ - (e.g. \"engine\", \"binance-main\")"
    );
    let err = InstanceLock::acquire(&dir, "engine", &long).unwrap_err();
    assert!(
        err.to_string().contains("it is 65 bytes long, over 64"),
        "{err}"
    );

    let longest = "A.z_0-".repeat(10) + "abcd";
    assert_eq!(longest.len(), 64);
    let (lock, _) = InstanceLock::acquire(&dir, &longest, &longest).unwrap();
    assert_eq!(lock.path(), lock_path(&dir, &longest, &longest));
}

#[test]
fn list_shows_held_and_free_locks_with_their_holders() {
    if under_qemu("list_shows_held_and_free_locks_with_their_holders") {
        return;
    }
    let dir = TestDir::new("list");
    let ready = Pipe::new();
    let done = Gate::new();
    let live = fork(|| {
        let (lock, _) = InstanceLock::acquire(&dir.0, "engine", "live").unwrap();
        ready.send("live");
        done.wait();
        lock.release();
    });
    let dead = fork(|| {
        done.leave();
        let _lock = InstanceLock::acquire(&dir.0, "engine", "dead").unwrap();
        ready.send("dead");
        hold_forever();
    });
    ready.receive(2, Duration::from_secs(30));
    kill(dead, libc::SIGKILL);
    assert!(killed_by(wait(dead), libc::SIGKILL));
    InstanceLock::acquire(&dir.0, "engine", "released")
        .unwrap()
        .0
        .release();
    // Held by this very process: a probe on another open file description still sees it.
    let (mine, _) = InstanceLock::acquire(&dir.0, "feed", "mine").unwrap();
    // Not locks: skipped.
    fs::write(dir.0.join("notes.txt"), "").unwrap();
    fs::write(dir.0.join("no-at-sign.lock"), "").unwrap();
    symlink(dir.0.join("notes.txt"), lock_path(&dir.0, "link", "acct")).unwrap();
    fs::create_dir(lock_path(&dir.0, "dir", "acct")).unwrap();

    let locks = lock::list(&dir.0).unwrap();
    let names: Vec<(&str, &str, bool)> = locks
        .iter()
        .map(|l| (l.component.as_str(), l.account.as_str(), l.held))
        .collect();
    assert_eq!(
        names,
        [
            ("engine", "dead", false),
            ("engine", "live", true),
            ("engine", "released", false),
            ("feed", "mine", true),
        ]
    );
    for l in &locks {
        assert_eq!(l.path, lock_path(&dir.0, &l.component, &l.account));
    }
    let pid_of = |i: usize| locks[i].holder.as_ref().map(|h| h.pid);
    assert_eq!(
        pid_of(0),
        Some(dead as u32),
        "the dead holder is still named"
    );
    assert_eq!(pid_of(1), Some(live as u32));
    assert_eq!(pid_of(2), None, "a clean release blanks the holder");
    assert_eq!(locks[3].holder.as_ref(), Some(mine.holder()));
    let json = serde_json::to_value(&locks).unwrap();
    assert_eq!(json[1]["held"], true);
    assert_eq!(json[1]["holder"]["pid"], live);

    done.open();
    assert_eq!(wait(live), 0);
    let locks = lock::list(&dir.0).unwrap();
    assert!(
        !locks[1].held && locks[1].holder.is_none(),
        "{:?}",
        locks[1]
    );
    assert!(locks[3].held, "still ours");
    drop(mine);
    assert!(lock::list(&dir.0).unwrap().iter().all(|l| !l.held));
    assert!(lock::list(&dir.0.join("missing")).unwrap().is_empty());
}

#[test]
fn the_lock_file_is_0600_and_a_created_lock_dir_0700_whatever_the_umask() {
    let base = TestDir::new("modes");
    let base_mode = mode(&base.0);
    // In a child, whose umask is its own: a umask that would leave the directory unwritable
    // (0500) and the file read-only (0400).
    let report = Pipe::new();
    let child = fork(|| {
        // SAFETY: sets this (single-threaded, forked) process's umask.
        unsafe { libc::umask(0o277) };
        let dir = base.0.join("run").join("tickloop");
        let (lock, _) = InstanceLock::acquire(&dir, "engine", "acct").unwrap();
        report.send(&format!("{:o} {:o}", mode(&dir), mode(lock.path())));
    });
    let line = report.receive(1, Duration::from_secs(30)).remove(0);
    assert_eq!(wait(child), 0);
    assert_eq!(line, "700 600");
    assert_eq!(mode(&base.0.join("run")), 0o700, "created parents too");
    assert_eq!(
        mode(&base.0),
        base_mode,
        "an existing directory is left as it is"
    );

    // With this process's umask, and a lock file someone loosened: tightened back to 0600.
    let dir = base.0.join("plain");
    let path = lock_path(&dir, "engine", "acct");
    drop(InstanceLock::acquire(&dir, "engine", "acct").unwrap());
    assert_eq!((mode(&dir), mode(&path)), (0o700, 0o600));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let (lock, _) = InstanceLock::acquire(&dir, "engine", "acct").unwrap();
    assert_eq!(mode(lock.path()), 0o600);
}

#[test]
fn unsafe_lock_directories_and_other_users_files_are_refused() {
    let base = TestDir::new("owners");
    let open = base.0.join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let err = InstanceLock::acquire(&open, "engine", "acct").unwrap_err();
    assert!(
        matches!(err, LockError::DirUnsafe { mode: 0o777, .. }),
        "{err:?}"
    );
    eprintln!("{err}");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
    drop(InstanceLock::acquire(&open, "engine", "acct").expect("sticky: only owners delete"));

    let file = base.0.join("file");
    fs::write(&file, "").unwrap();
    let err = InstanceLock::acquire(&file, "engine", "acct").unwrap_err();
    assert!(matches!(err, LockError::DirNotADirectory { .. }), "{err:?}");

    if sys::euid() != 0 {
        eprintln!("not root: skipping the other-user checks (they need chown)");
        return;
    }
    let nobody = 65_534;
    let theirs = base.0.join("theirs");
    fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(nobody), None).unwrap();
    let err = InstanceLock::acquire(&theirs, "engine", "acct").unwrap_err();
    assert!(
        matches!(
            err,
            LockError::DirOtherUser {
                owner: 65_534,
                me: 0,
                ..
            }
        ),
        "{err:?}"
    );

    let mine = base.0.join("mine");
    drop(InstanceLock::acquire(&mine, "engine", "acct").unwrap());
    let path = lock_path(&mine, "engine", "acct");
    std::os::unix::fs::chown(&path, Some(nobody), None).unwrap();
    let err = InstanceLock::acquire(&mine, "engine", "acct").unwrap_err();
    assert!(
        matches!(&err, LockError::OtherUser { owner: 65_534, me: 0, path: p } if *p == path),
        "{err:?}"
    );
    eprintln!("{err}");
}

#[test]
fn release_keeps_the_file_blanks_the_holder_and_the_next_start_is_fresh() {
    let dir = TestDir::new("release");
    let (lock, _) = InstanceLock::acquire(&dir.0, "engine", "acct").unwrap();
    let path = lock.path().to_owned();
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.len(), lock::RECORD_LEN, "padded to a fixed size");
    let first_line = text.lines().next().unwrap();
    let holder: Holder = serde_json::from_str(first_line).unwrap();
    assert_eq!(&holder, lock.holder());
    let record: serde_json::Value = serde_json::from_str(first_line).unwrap();
    assert!(record["check"].as_str().unwrap().starts_with("fnv1a64:"));
    assert!(text[first_line.len()..].trim().is_empty());

    lock.release();
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.len(), lock::RECORD_LEN, "the file stays, never empty");
    assert!(text.trim().is_empty(), "no holder left: {text:?}");

    let (lock, acquired) = InstanceLock::acquire(&dir.0, "engine", "acct").unwrap();
    assert_eq!(acquired, Acquired::Fresh);
    drop(lock);
    assert!(path.exists());
    assert!(
        fs::read_to_string(&path).unwrap().trim().is_empty(),
        "drop releases too"
    );

    // A record damaged by hand is not trusted as a previous holder.
    let (lock, _) = InstanceLock::acquire(&dir.0, "engine", "acct").unwrap();
    let pid = lock.holder().pid;
    std::mem::forget(lock); // as if this process had died: record left, lock still held by fd
    let text = fs::read_to_string(&path).unwrap();
    let damaged = text.replacen(
        &format!("\"pid\":{pid}"),
        &format!("\"pid\":{}", pid + 1),
        1,
    );
    assert_ne!(damaged, text);
    fs::write(&path, damaged).unwrap();
    let err = InstanceLock::acquire(&dir.0, "engine", "acct").unwrap_err();
    assert!(
        matches!(err, LockError::Held { holder: None, .. }),
        "a record failing its check names no one: {err:?}"
    );
    assert!(
        err.to_string()
            .contains("held by a holder that is starting up"),
        "{err}"
    );
    eprintln!("{err}");
}

#[test]
fn a_forked_child_dropping_an_inherited_lock_leaves_it_held() {
    let dir = TestDir::new("inherit");
    let (lock, _) = InstanceLock::acquire(&dir.0, "engine", "acct").unwrap();
    let holder = lock.holder().clone();
    let cell = RefCell::new(Some(lock));
    let child = fork(|| cell.borrow_mut().take().unwrap().release());
    assert_eq!(wait(child), 0);
    match InstanceLock::acquire(&dir.0, "engine", "acct") {
        Err(LockError::Held {
            holder: Some(h), ..
        }) => assert_eq!(*h, holder),
        other => panic!("the parent's lock must survive the child: {other:?}"),
    }
    cell.into_inner().unwrap().release();
    let (_, acquired) = InstanceLock::acquire(&dir.0, "engine", "acct").unwrap();
    assert_eq!(acquired, Acquired::Fresh);
}

#[test]
fn a_reader_never_sees_an_empty_lock_file_while_holders_come_and_go() {
    let dir = TestDir::new("hammer");
    drop(InstanceLock::acquire(&dir.0, "engine", "hammer").unwrap());
    let path = lock_path(&dir.0, "engine", "hammer");
    let report = Pipe::new();
    let child = fork(|| {
        let (mut taken, mut refused) = (0, 0);
        let deadline = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < deadline {
            match InstanceLock::acquire(&dir.0, "engine", "hammer") {
                Ok((lock, _)) => {
                    taken += 1;
                    drop(lock);
                }
                Err(e) => {
                    refused += 1;
                    eprintln!("refused: {e}");
                }
            }
        }
        report.send(&format!("{taken} {refused}"));
    });
    let (mut reads, mut blank, mut whole, mut torn, mut listed) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let status = loop {
        if let Some(status) = try_wait(child) {
            break status;
        }
        let bytes = fs::read(&path).unwrap();
        reads += 1;
        assert!(
            bytes.len() >= lock::RECORD_LEN,
            "read {} bytes: {:?}",
            bytes.len(),
            String::from_utf8_lossy(&bytes)
        );
        let text = bytes.trim_ascii();
        if text.is_empty() {
            blank += 1;
        } else if serde_json::from_slice::<Holder>(text).is_ok() {
            whole += 1;
        } else {
            torn += 1;
        }
        // `list` probes the lock (a shared flock for microseconds), which must never make the
        // child's start fail, and reports only whole records.
        if reads % 8 == 0 {
            for info in lock::list(&dir.0).unwrap() {
                if let Some(h) = info.holder {
                    assert_eq!(h.pid, child as u32);
                    listed += 1;
                }
            }
        }
    };
    assert_eq!(status, 0);
    let line = report.receive(1, Duration::from_secs(5)).remove(0);
    let (taken, refused) = line.split_once(' ').unwrap();
    eprintln!(
        "{taken} acquisitions, {refused} refused; {reads} reads: {blank} blank, {whole} whole, {torn} mixed (unparsable); {listed} holders listed"
    );
    assert_eq!(refused, "0", "a list probe made a start fail");
    assert!(taken.parse::<u64>().unwrap() > 50);
    assert!(reads > 100);
}

/// qemu-user emulates a process's own /proc/self/stat, so the start time a holder records for
/// itself differs from what other processes read for it: holder identity cannot be checked
/// there (the aarch64 CI step sets TICKLOOP_UNDER_QEMU). Says so, loudly.
fn under_qemu(test: &str) -> bool {
    let yes = std::env::var_os("TICKLOOP_UNDER_QEMU").is_some();
    if yes {
        eprintln!("SKIP {test}: under qemu-user /proc/self/stat is emulated, so a holder's recorded start time cannot match what other processes read");
    }
    yes
}
