#!/usr/bin/env python3
"""Write and read tickloop rings from Python (standard library only).

A tickloop ring is one shared-memory file (``/dev/shm/NAME``) holding a header, a control page,
a symbol table and a power-of-two number of 64-byte candle slots, each guarded by a seqlock.
``docs/ring-format.md`` is the byte-level contract; the Rust code in ``runtime/src/ring/`` is
the reference. This module implements the same format so that existing Python feeds can publish
into tickloop, and Python tools can follow a ring:

    from tickloop_ring import RingWriter, RingReader

    with RingWriter("eurusd", create_if_missing=True) as w:
        sym = w.symbol("EURUSD")
        w.publish(time.time_ns(), sym, 1.1, 1.2, 1.0, 1.15, 1000.0, seal=True)

    with RingReader("eurusd", start="oldest") as r:
        item = r.read()   # ('candle', pos, (ts_ns, symbol, flags, o, h, l, c, v)),
                          # ('overrun', lost) or None

Ordering guarantees: see README.md next to this file. In short, correct on x86-64 (TSO); on
aarch64 CPython issues no memory barriers, so a Python reader or writer there can tear a candle
(a verifying reader detects it through the seal).

Run ``python3 tickloop_ring.py --help`` for the command line (write, tail, selftest).
Works with Python 3.8 and later, on Linux.
"""

import errno
import fcntl
import mmap
import os
import socket
import stat
import struct
import sys
import threading
import time

__all__ = [
    "RingError",
    "RingExists",
    "RingNotFound",
    "ring_path",
    "create",
    "seal_of",
    "seal_candle",
    "seal_ok",
    "RingWriter",
    "RingReader",
]

# ---------------------------------------------------------------------------------------------
# Layout constants (docs/ring-format.md, runtime/src/ring/layout.rs)

MAGIC = int.from_bytes(b"TICKRING", "little")
LAYOUT_MAJOR = 1
LAYOUT_MINOR = 0
INIT_DONE = 0x54494E49
SLOT_SIZE = 64
PAGE = 4096
CONTROL_OFFSET = PAGE
SYMBOLS_OFFSET = 2 * PAGE
SYMBOL_ENTRY_SIZE = 32
SYMBOL_NAME_MAX = 31
MIN_SLOTS = 16
MAX_SLOTS = 1 << 30
MAX_SYMBOLS = 1 << 16
PAYLOAD_DESCRIPTION = (
    b"seq:u64,ts_ns:i64,symbol:u32,flags:u32,open:f64,high:f64,low:f64,close:f64,volume:f64"
)

# Header field offsets.
OFF_SYMBOL_COUNT = 84
OFF_WRITER_EPOCH = 128
OFF_WRITER_PID = 136
OFF_WRITER_FLAGS = 140
OFF_WRITER_START_TICKS = 144
OFF_WRITER_HEARTBEAT = 152
OFF_WRITER_STARTED = 160
OFF_WRITE_SEQ = 192
# Control page.
OFF_PARKED = CONTROL_OFFSET
OFF_BELL = CONTROL_OFFSET + 4
OFF_READERS = CONTROL_OFFSET + 64  # 63 entries of 64 bytes: pid u32, parked u32, ..., wake u64 at +56
MAX_READERS = 63
WRITER_WAKE_SOCKETS = 2  # writer flag: it sends wake datagrams (layout 1.1)

FLAG_SEALED = 0x80000000
SEAL_MASK = 0x00FFFFFF

_M64 = 0xFFFFFFFFFFFFFFFF
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3

HUGETLBFS_MAGIC = 0x958458F6
FUTEX_WAKE = 1
INT_MAX = 0x7FFFFFFF
_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}
# MAP_POPULATE is 0x8000 on x86-64 and aarch64; the constant exists in mmap from Python 3.10.
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0x8000 if sys.platform.startswith("linux") else 0)


def _fnv1a64(data):
    h = _FNV_OFFSET
    for b in bytearray(data):
        h ^= b
        h = (h * _FNV_PRIME) & _M64
    return h


PAYLOAD_FINGERPRINT = _fnv1a64(PAYLOAD_DESCRIPTION)

# Header identity: magic .. created_ns (offsets 0..80), little-endian, no padding.
_HEADER = struct.Struct("<QHHIQQIIQQQQQ")
# The slot payload after `seq` (offsets 8..64). Native order and alignment: little-endian on every
# platform this module supports (checked at import), and no padding for this field list.
_PAYLOAD = struct.Struct("@qIIddddd")
# The same 56 bytes with the floats as their IEEE-754 bit patterns (for the seal).
_PAYLOAD_BITS = struct.Struct("@qII5Q")
_FLOAT_BITS = struct.Struct("@5Q")

if sys.byteorder != "little" or _PAYLOAD.size != 56:
    raise ImportError("tickloop_ring needs a little-endian platform (x86-64 or aarch64)")


# ---------------------------------------------------------------------------------------------
# Errors


class RingError(Exception):
    """Anything wrong with a ring, as one line that says what failed and what to do."""


class RingExists(RingError):
    pass


class RingNotFound(RingError):
    pass


class WriterBusy(RingError):
    pass


def _fmt_bytes(n):
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    value = float(n)
    unit = 0
    while value >= 1024.0 and unit + 1 < len(units):
        value /= 1024.0
        unit += 1
    if unit == 0:
        return "%d B" % n
    return "%.1f %s" % (value, units[unit])


# ---------------------------------------------------------------------------------------------
# Names, geometry, seal


def ring_path(arg):
    """Turn a ``--ring`` argument into a path: a plain name lives under /dev/shm; anything with
    a '/' is a path (for hugetlbfs or a private tmpfs). Same rule as the Rust ``ring_path``."""
    if isinstance(arg, os.PathLike):
        return os.fspath(arg)

    def bad(why):
        return RingError(
            "ring name %r is invalid: %s; use a plain name such as `eurusd` (a file under "
            "/dev/shm) or a path containing '/'" % (arg, why)
        )

    if not arg:
        raise bad("it is empty")
    if "\0" in arg:
        raise bad("it contains a NUL byte")
    if "/" in arg:
        return arg
    if arg.startswith("."):
        raise bad("names starting with '.' are reserved for temporary files")
    if len(arg.encode("utf-8", "surrogateescape")) > 200:
        raise bad("it is longer than 200 bytes")
    return os.path.join("/dev/shm", arg)


def _round_up(value, to):
    return (value + to - 1) // to * to


def geometry(slot_count, symbol_capacity):
    """Check the limits and compute (slot_count, symbol_capacity, slots_offset, len)."""
    slot_count = int(slot_count)
    symbol_capacity = int(symbol_capacity)
    if slot_count < MIN_SLOTS or slot_count > MAX_SLOTS or slot_count & (slot_count - 1):
        hint = min(max(slot_count, MIN_SLOTS), MAX_SLOTS)
        hint = 1 << (hint - 1).bit_length()
        raise RingError(
            "--slots %d must be a power of two between %d and %d; try %d"
            % (slot_count, MIN_SLOTS, MAX_SLOTS, min(hint, MAX_SLOTS))
        )
    if symbol_capacity < 1 or symbol_capacity > MAX_SYMBOLS:
        raise RingError("--symbols %d must be between 1 and %d" % (symbol_capacity, MAX_SYMBOLS))
    slots_offset = SYMBOLS_OFFSET + _round_up(symbol_capacity * SYMBOL_ENTRY_SIZE, PAGE)
    return slot_count, symbol_capacity, slots_offset, slots_offset + slot_count * SLOT_SIZE


def _seal_words(words):
    h = _FNV_OFFSET
    for w in words:
        h ^= w
        h = (h * _FNV_PRIME) & _M64
        h ^= h >> 29
    return (h ^ (h >> 32)) & SEAL_MASK


def seal_of(pos, ts_ns, symbol, flags, open_, high, low, close, volume):
    """The raw 24-bit seal of a candle at position ``pos`` (ignores the low 24 flag bits)."""
    bits = _FLOAT_BITS.unpack(struct.pack("@5d", open_, high, low, close, volume))
    return _seal_words(
        (pos, ts_ns & _M64, symbol | (flags & ~SEAL_MASK & 0xFFFFFFFF) << 32) + bits
    )


def seal_candle(pos, ts_ns, symbol, flags, open_, high, low, close, volume):
    """The flags word of the candle sealed for position ``pos``."""
    flags = (flags & 0x7F000000) | FLAG_SEALED
    return flags | seal_of(pos, ts_ns, symbol, flags, open_, high, low, close, volume)


def seal_ok(pos, candle):
    """True if ``candle`` (ts_ns, symbol, flags, o, h, l, c, v) carries a seal matching ``pos``."""
    ts_ns, symbol, flags = candle[0], candle[1], candle[2]
    if not flags & FLAG_SEALED:
        return False
    return flags & SEAL_MASK == seal_of(pos, ts_ns, symbol, flags, *candle[3:8])


# ---------------------------------------------------------------------------------------------
# System helpers


def _start_ticks(pid="self"):
    """Process start time in clock ticks since boot (/proc/PID/stat field 22), or 0."""
    try:
        with open("/proc/%s/stat" % pid, "rb") as f:
            data = f.read()
        rest = data[data.rindex(b")") + 1 :].split()
        return int(rest[19])
    except (OSError, ValueError, IndexError):
        return 0


def _statfs(directory):
    """(f_type, f_bsize) of the filesystem holding ``directory``, or None."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
        if libc.statfs(os.fsencode(directory), buf) != 0:
            return None
        f_type, f_bsize = struct.unpack_from("@ll", buf.raw, 0)
        return f_type & 0xFFFFFFFF, f_bsize
    except Exception:
        return None


def _block_size_if_hugetlbfs(directory):
    st = _statfs(directory)
    if st is not None and st[0] == HUGETLBFS_MAGIC:
        return max(st[1], PAGE)
    return PAGE


def _available_bytes(directory):
    try:
        st = os.statvfs(directory)
        return st.f_bavail * st.f_frsize
    except OSError:
        return 0


def wake_socket_name(wake_id):
    """The abstract Unix socket address of wake socket ``wake_id`` (docs/ring-format.md)."""
    return b"\0tickloop-wake-%016x" % wake_id


def _wake_sender():
    """A non-blocking unbound datagram socket to send wake-ups from, or None."""
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        return sock
    except (OSError, AttributeError):
        return None


def _futex_waker(mm):
    """Return (wake, keepalive) where wake() does FUTEX_WAKE(INT_MAX) on the bell word of the
    writable mapping ``mm``; wake is None where ctypes or the syscall number is unavailable."""
    try:
        import ctypes
    except ImportError:
        return None, None
    number = _SYS_FUTEX.get(os.uname().machine)
    if number is None:
        return None, None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):
        return None, None
    syscall.restype = ctypes.c_long
    word = ctypes.c_uint32.from_buffer(mm, OFF_BELL)  # keeps the mapping exported while alive
    addr = ctypes.c_void_p(ctypes.addressof(word))
    nr = ctypes.c_long(number)
    op = ctypes.c_int(FUTEX_WAKE)  # not FUTEX_PRIVATE: the mapping is shared between processes
    count = ctypes.c_int(INT_MAX)

    def wake():
        syscall(nr, addr, op, count)

    return wake, word


# ---------------------------------------------------------------------------------------------
# Creation and validation


def _remove_stale_temporaries(directory, file_name):
    prefix = ".%s.tmp-" % file_name
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix) :].split("-")[0]
        if pid.isdigit() and not os.path.exists("/proc/%s" % pid):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def create(path, slots=65536, symbols=1024, mode=0o600):
    """Create a ring at ``path`` (a path, or a plain name under /dev/shm) without ever exposing
    a half-made one: built under ``.NAME.tmp-PID-NANOS`` in the same directory, its space
    reserved with posix_fallocate, its header written with the init word last, then published
    with link(2) (which never replaces) and the temporary name removed. Raises RingExists if a
    ring (or anything) already has that name. Returns the path."""
    path = ring_path(path)
    slot_count, symbol_capacity, slots_offset, length = geometry(slots, symbols)
    if mode & ~0o777:
        raise RingError(
            "--mode %o is not a file permission mode: use something like 600 or 640" % mode
        )
    directory, file_name = os.path.split(path)
    directory = directory or "."
    if not file_name:
        raise RingError("ring name %r is invalid: it names a directory, not a file" % path)
    if os.path.lexists(path):
        raise RingExists(
            "ring %s already exists: attach to it, or remove it first with "
            "`tickloop ring rm --ring %s`" % (path, path)
        )
    _remove_stale_temporaries(directory, file_name)
    temp = os.path.join(directory, ".%s.tmp-%d-%d" % (file_name, os.getpid(), time.monotonic_ns()))
    try:
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileNotFoundError:
        raise RingError("creating ring %s (does the directory exist?): no such directory" % path)
    except PermissionError:
        raise RingError(
            "cannot create ring %s: permission denied in %s: pick a directory you can write"
            % (path, directory)
        )
    except OSError as e:
        raise RingError("creating ring %s: %s" % (path, e.strerror or e))
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed the mode
        length = _round_up(length, _block_size_if_hugetlbfs(directory))
        try:
            os.posix_fallocate(fd, 0, length)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EFBIG):
                raise RingError(
                    "not enough space to create ring %s: it needs %s (%d bytes) but %s has %s "
                    "(%d bytes) free; free some space, use fewer --slots, or enlarge the "
                    "filesystem (`mount -o remount,size=... %s`)"
                    % (path, _fmt_bytes(length), length, directory,
                       _fmt_bytes(_available_bytes(directory)), _available_bytes(directory),
                       directory)
                )
            raise RingError("reserving space for ring %s: %s" % (path, e.strerror or e))
        mm = mmap.mmap(fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            _HEADER.pack_into(
                mm, 0, MAGIC, LAYOUT_MAJOR, LAYOUT_MINOR, SLOT_SIZE, slot_count,
                PAYLOAD_FINGERPRINT, symbol_capacity, mode, CONTROL_OFFSET, SYMBOLS_OFFSET,
                slots_offset, length, time.time_ns(),
            )
            words = memoryview(mm).cast("I")
            words[80 // 4] = INIT_DONE  # last: a header without it is not a ring yet
            words.release()
        finally:
            mm.close()
        try:
            os.link(temp, path)  # never replaces an existing file
        except FileExistsError:
            raise RingExists(
                "ring %s already exists: attach to it, or remove it first with "
                "`tickloop ring rm --ring %s`" % (path, path)
            )
        except OSError as e:
            raise RingError("publishing ring %s: %s" % (path, e.strerror or e))
    finally:
        os.close(fd)
        try:
            os.unlink(temp)
        except OSError:
            pass
    return path


def _not_a_ring(path, why):
    return RingError(
        "%s is not a tickloop ring (%s): check the path; if it is a damaged ring, remove it and "
        "create it again" % (path, why)
    )


def _truncated(path, why):
    return RingError(
        "ring %s is truncated (%s): the file is damaged; remove it with `tickloop ring rm` and "
        "create it again" % (path, why)
    )


def _read_header(fd):
    data = b""
    while len(data) < 256:
        chunk = os.pread(fd, 256 - len(data), len(data))
        if not chunk:
            break
        data += chunk
    return data.ljust(256, b"\0")


def _validate(fd, path):
    """Check everything about the open file before mapping it. Returns the geometry."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise _not_a_ring(path, "it is not a regular file")
    me = os.geteuid()
    if st.st_uid != me:
        raise RingError(
            "ring %s belongs to uid %d, not to you (uid %d): run as that user, or remove it and "
            "create your own" % (path, st.st_uid, me)
        )
    size = st.st_size
    head = _read_header(fd)
    if size < PAGE:
        if size >= 8 and struct.unpack_from("<Q", head, 0)[0] == MAGIC:
            raise _truncated(path, "%d bytes, a ring header alone needs %d" % (size, PAGE))
        raise _not_a_ring(path, "%d bytes, no ring header" % size)
    (magic, major, minor, slot_size, slot_count, fingerprint, symbol_capacity, _mode,
     control_offset, symbols_offset, slots_offset, declared, _created) = _HEADER.unpack_from(head)
    if magic != MAGIC:
        raise _not_a_ring(path, "no ring magic at the start")
    if major != LAYOUT_MAJOR:
        raise RingError(
            "ring %s has layout %d.%d but this module reads layout %d.x: recreate the ring with "
            "this tickloop, or use the version that made it" % (path, major, minor, LAYOUT_MAJOR)
        )
    if struct.unpack_from("<I", head, 80)[0] != INIT_DONE:
        raise RingError(
            "ring %s is not initialised: its creator died while creating it; remove it with "
            "`tickloop ring rm` and create it again" % path
        )
    if slot_size != SLOT_SIZE or fingerprint != PAYLOAD_FINGERPRINT:
        raise _not_a_ring(
            path,
            "its slots are %d bytes with payload fingerprint %#x, this module uses %d bytes and "
            "%#x" % (slot_size, fingerprint, SLOT_SIZE, PAYLOAD_FINGERPRINT),
        )
    try:
        geo = geometry(slot_count, symbol_capacity)
    except RingError as e:
        raise _not_a_ring(path, "its header is corrupt: %s" % e)
    if control_offset != CONTROL_OFFSET or symbols_offset != SYMBOLS_OFFSET or slots_offset != geo[2]:
        raise _not_a_ring(path, "its header offsets are corrupt")
    if declared < geo[3]:
        raise _not_a_ring(
            path, "its header declares %d bytes but its slots need %d" % (declared, geo[3])
        )
    if size < declared:
        raise _truncated(path, "the header says %d bytes, the file has %d" % (declared, size))
    return geo


def _open_fd(path, flags):
    try:
        return os.open(path, flags | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RingNotFound(
            "ring %s not found: create it with `tickloop ring create --ring %s`, or start its feed"
            % (path, path)
        )
    except PermissionError:
        raise RingError(
            "cannot open ring %s: permission denied; it belongs to another user or its mode "
            "forbids you: run as its owner, or remove it and create your own" % path
        )
    except IsADirectoryError:
        raise _not_a_ring(path, "it is a directory")
    except OSError as e:
        raise RingError("opening ring %s: %s" % (path, e.strerror or e))


class _Mapped(object):
    """Shared state of an open, validated, mapped ring."""

    _mm = None
    _fd = -1

    def _attach(self, path, writable):
        self.path = path
        self._fd = fd = _open_fd(path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            if writable:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pid = struct.unpack_from("<I", _read_header(fd), OFF_WRITER_PID)[0]
                    raise WriterBusy(
                        "ring %s already has a writer (pid %d): stop it first (`kill %d`), or "
                        "write to another ring" % (path, pid, pid)
                    )
            geo = _validate(fd, path)
            self.capacity, self.symbol_capacity, self._slots_offset, length = geo
            self._mask = self.capacity - 1
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            try:
                self._mm = mmap.mmap(fd, length, mmap.MAP_SHARED | _MAP_POPULATE, prot)
            except OSError:
                self._mm = mmap.mmap(fd, length, mmap.MAP_SHARED, prot)
            self._q = memoryview(self._mm).cast("Q")  # 8-byte element loads and stores
            self._u32 = memoryview(self._mm).cast("I")
        except BaseException:
            self._release()
            raise

    def _release(self):
        for name in ("_q", "_u32"):
            view = self.__dict__.pop(name, None)
            if view is not None:
                view.release()
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self._fd >= 0:
            os.close(self._fd)  # releases the writer's flock
            self._fd = -1

    @property
    def closed(self):
        return self._mm is None

    def write_seq(self):
        """The writer's published position: every position below it is complete."""
        return self._q[OFF_WRITE_SEQ >> 3]

    def epoch(self):
        """The writer epoch (+1 each time a writer takes the ring over)."""
        return self._q[OFF_WRITER_EPOCH >> 3]

    def writer_pid(self):
        return self._u32[OFF_WRITER_PID >> 2]

    def symbol_count(self):
        return min(self._u32[OFF_SYMBOL_COUNT >> 2], self.symbol_capacity)

    def symbol_name(self, symbol_id):
        """The name of symbol ``symbol_id``, or None if the writer has not published it."""
        names = self._names
        if symbol_id < len(names):
            return names[symbol_id]
        count = self.symbol_count()
        if symbol_id >= count or symbol_id < 0:
            return None
        mm = self._mm
        for i in range(len(names), count):
            at = SYMBOLS_OFFSET + i * SYMBOL_ENTRY_SIZE
            n = min(mm[at], SYMBOL_NAME_MAX)
            names.append(mm[at + 1 : at + 1 + n].decode("utf-8", "replace"))
        return names[symbol_id]

    def close(self):
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------------------------
# Writer


class RingWriter(_Mapped):
    """The ring's one writer. Holds an exclusive flock on the file for its life, takes the ring
    over on open (recovering after a writer that died, bumping the epoch), and publishes candles
    without ever waiting for readers.

    ``path`` is a ring name or path (see ring_path). With ``create_if_missing`` a missing ring is
    created with ``slots``, ``symbols`` and ``mode``.
    """

    def __init__(self, path, create_if_missing=False, slots=65536, symbols=1024, mode=0o600):
        self._names = []
        self._wake_word = None
        path = ring_path(path)
        try:
            self._attach(path, True)
        except RingNotFound:
            if not create_if_missing:
                raise
            try:
                create(path, slots, symbols, mode)
            except RingExists:
                pass
            self._attach(path, True)
        try:
            self._take_over()
        except BaseException:
            self._release()
            raise

    def _take_over(self):
        q, u32 = self._q, self._u32
        mask, base = self._mask, self._slots_offset >> 3
        nxt = q[OFF_WRITE_SEQ >> 3]
        # A writer killed between completing a slot and publishing write_seq left a complete
        # position that readers may already have delivered: keep it. A half-written one (odd
        # seq) is simply written again.
        scanned = 0
        while scanned < self.capacity and q[base + ((nxt & mask) << 3)] == 2 * nxt + 2:
            nxt += 1
            scanned += 1
        q[OFF_WRITE_SEQ >> 3] = nxt
        self._next = nxt
        pid = os.getpid()
        u32[OFF_WRITER_PID >> 2] = pid
        q[OFF_WRITER_START_TICKS >> 3] = _start_ticks()
        now = time.time_ns()
        q[OFF_WRITER_STARTED >> 3] = now
        q[OFF_WRITER_HEARTBEAT >> 3] = now
        # Python cannot register for membarrier; it can send wake datagrams.
        self._waker = _wake_sender()
        u32[OFF_WRITER_FLAGS >> 2] = WRITER_WAKE_SOCKETS if self._waker else 0
        q[OFF_WRITER_EPOCH >> 3] = (q[OFF_WRITER_EPOCH >> 3] + 1) & _M64  # last
        self._wake, self._wake_word = _futex_waker(self._mm)
        fence = threading.Lock()
        self._fence_acquire, self._fence_release = fence.acquire, fence.release
        self.rings = 0
        # Existing symbols, for lookups.
        for i in range(self.symbol_count()):
            self.symbol_name(i)
        self._ids = {name: i for i, name in enumerate(self._names)}

    def _release(self):
        if getattr(self, "_waker", None) is not None:
            self._waker.close()
            self._waker = None
        self._wake = None
        self._wake_word = None  # the ctypes view must go before the mapping closes
        _Mapped._release(self)

    def next_position(self):
        """The position the next publish will use."""
        return self._next

    def symbol(self, name):
        """The id of symbol ``name``, adding it to the ring's symbol table if it is new."""
        i = self._ids.get(name)
        if i is not None:
            return i
        raw = name.encode("utf-8") if isinstance(name, str) else b""
        if not raw or len(raw) > SYMBOL_NAME_MAX or b"\0" in raw:
            raise RingError(
                "symbol name %r is invalid: it must be 1 to 31 bytes of UTF-8 without NUL" % (name,)
            )
        count = self.symbol_count()
        if count >= self.symbol_capacity:
            raise RingError(
                "the symbol table of ring %s is full (%d symbols): create the ring with more "
                "--symbols" % (self.path, self.symbol_capacity)
            )
        at = SYMBOLS_OFFSET + count * SYMBOL_ENTRY_SIZE
        entry = bytes([len(raw)]) + raw.ljust(SYMBOL_NAME_MAX, b"\0")
        self._mm[at : at + SYMBOL_ENTRY_SIZE] = entry
        self._u32[OFF_SYMBOL_COUNT >> 2] = count + 1  # publishes the entry
        self._names.append(name)
        self._ids[name] = count
        return count

    def publish(self, ts_ns, symbol, open, high, low, close, volume, flags=0, seal=False):
        """Publish one candle; returns its position. Never waits. ``symbol`` is an id from
        symbol() (a str is looked up / added). With ``seal`` the low 24 flag bits carry the
        seal of docs/ring-format.md and bit 31 is set, so a verifying reader can check it."""
        if symbol.__class__ is str:
            symbol = self.symbol(symbol)
        p = self._next
        off = self._slots_offset + ((p & self._mask) << 6)
        si = off >> 3
        q = self._q
        q[si] = 2 * p + 1  # one 8-byte store
        if seal:
            flags = (flags & 0x7F000000) | 0x80000000
            mm = self._mm
            _PAYLOAD.pack_into(mm, off + 8, ts_ns, symbol, flags, open, high, low, close, volume)
            ob, hb, lb, cb, vb = _FLOAT_BITS.unpack_from(mm, off + 24)
            M, P = _M64, _FNV_PRIME
            h = ((_FNV_OFFSET ^ p) * P) & M
            h ^= h >> 29
            h = ((h ^ (ts_ns & M)) * P) & M
            h ^= h >> 29
            h = ((h ^ (symbol | (flags & 0xFF000000) << 32)) * P) & M
            h ^= h >> 29
            h = ((h ^ ob) * P) & M
            h ^= h >> 29
            h = ((h ^ hb) * P) & M
            h ^= h >> 29
            h = ((h ^ lb) * P) & M
            h ^= h >> 29
            h = ((h ^ cb) * P) & M
            h ^= h >> 29
            h = ((h ^ vb) * P) & M
            h ^= h >> 29
            self._u32[(off + 20) >> 2] = flags | ((h ^ (h >> 32)) & 0xFFFFFF)
        else:
            _PAYLOAD.pack_into(self._mm, off + 8, ts_ns, symbol, flags, open, high, low, close, volume)
        q[si] = 2 * p + 2
        q[24] = p + 1  # write_seq (offset 192)
        self._next = p + 1
        # Doorbell. A full fence first (the doc's "no membarrier" case): a lock acquire/release
        # pair executes locked read-modify-writes, which are full barriers on x86-64, so the
        # write_seq store cannot pass the load of `parked` (no missed wake-up).
        self._fence_acquire()
        self._fence_release()
        u32 = self._u32
        # parked (offset 4096) and wanted (offset 4104): a reader asked for one ring. Python has
        # no atomic swap; clearing `wanted` with a plain store can, rarely, swallow another
        # reader's request, which then waits out its park timeout.
        if u32[1024] and u32[1026]:
            u32[1026] = 0
            self._ring()
        return p

    def _ring(self):
        u32 = self._u32
        u32[1025] = (u32[1025] + 1) & 0xFFFFFFFF  # bell (offset 4100); only the writer stores it
        if self._wake is not None:
            self._wake()
        if self._waker is not None:
            # One datagram to each parked reader that named a wake socket (docs/ring-format.md).
            q = self._q
            for i in range(MAX_READERS):
                base = OFF_READERS + 64 * i
                if u32[(base + 4) >> 2] and q[(base + 56) >> 3]:
                    try:
                        self._waker.sendto(b"\x01", wake_socket_name(q[(base + 56) >> 3]))
                    except OSError:
                        pass  # a full socket already has a wake-up pending; a gone one needs none
        self.rings += 1

    def heartbeat(self):
        """Record that the writer is alive; call every few milliseconds, off the hot path."""
        self._q[OFF_WRITER_HEARTBEAT >> 3] = time.time_ns()


# ---------------------------------------------------------------------------------------------
# Reader


class RingReader(_Mapped):
    """A reader: maps the ring read-only (it never writes to it) and owns its cursor.

    ``start`` is 'next' (the next candle the writer publishes), 'oldest' (the oldest candle
    still in the ring) or an absolute position. A Python reader does not register in the
    control page, so it cannot park on the doorbell: callers poll (see ``tail``).
    """

    def __init__(self, path, start="next"):
        self._names = []
        self.lost = 0
        self.overruns = 0
        self._attach(ring_path(path), False)
        ws = self.write_seq()
        if start == "next":
            self._cursor = ws
        elif start == "oldest":
            self._cursor = max(ws - (self.capacity - 1), 0)
        elif isinstance(start, int) and not isinstance(start, bool) and start >= 0:
            self._cursor = start
        else:
            self._release()
            raise RingError("start must be 'next', 'oldest' or a position, not %r" % (start,))
        self._epoch = self.epoch()

    @property
    def cursor(self):
        """The position the next read() looks at."""
        return self._cursor

    def read(self):
        """One step: ('candle', pos, (ts_ns, symbol, flags, open, high, low, close, volume)),
        ('overrun', lost) when the writer lapped this reader (exactly ``lost`` positions were
        skipped; reading continues an eighth of the ring above the oldest intact one), or None when nothing is new."""
        p = self._cursor
        off = self._slots_offset + ((p & self._mask) << 6)
        si = off >> 3
        q = self._q
        want = 2 * p + 2
        before = q[si]
        if before == want:
            candle = _PAYLOAD.unpack_from(self._mm, off + 8)
            if q[si] == want:
                self._cursor = p + 1
                return ("candle", p, candle)
        elif before < want:
            return None
        return self._overrun(p)

    def read_bits(self):
        """Like read(), but the candle's floats come as their 64-bit IEEE-754 patterns (what
        the seal covers): ('candle', pos, (ts_ns, symbol, flags, ob, hb, lb, cb, vb))."""
        p = self._cursor
        off = self._slots_offset + ((p & self._mask) << 6)
        si = off >> 3
        q = self._q
        want = 2 * p + 2
        before = q[si]
        if before == want:
            candle = _PAYLOAD_BITS.unpack_from(self._mm, off + 8)
            if q[si] == want:
                self._cursor = p + 1
                return ("candle", p, candle)
        elif before < want:
            return None
        return self._overrun(p)

    def _overrun(self, p):
        # Positions below write_seq are complete; the writer may be writing write_seq itself,
        # which occupies the slot of write_seq - capacity. Resume just above it.
        ws = self._q[OFF_WRITE_SEQ >> 3]
        # Resume an eighth of the ring past the oldest intact position, clear of the writer.
        resume = max(ws + 1 - self.capacity + self.capacity // 8, p + 1)
        lost = resume - p
        self._cursor = resume
        self.lost += lost
        self.overruns += 1
        return ("overrun", lost)

    def ready(self):
        """True if read() would return something (a candle or an overrun)."""
        p = self._cursor
        return self._q[(self._slots_offset >> 3) + ((p & self._mask) << 3)] >= 2 * p + 2

    def check_writer(self):
        """The new epoch if a writer took over since the last call, else None."""
        e = self.epoch()
        if e != self._epoch:
            self._epoch = e
            return e
        return None


# ---------------------------------------------------------------------------------------------
# Verification (what `tail --verify` reports; same rules as runtime/src/ring/verify.rs)


class Verifier(object):
    def __init__(self):
        self.received = 0
        self.duplicates = 0
        self.torn = 0
        self.overruns = 0
        self.unsealed = 0
        self.announced_lost = 0
        self.unannounced_gaps = 0
        self.next_pos = None

    def overrun(self, lost):
        self.overruns += 1
        self.announced_lost += lost
        if self.next_pos is not None:
            self.next_pos += lost

    @property
    def lost(self):
        return self.announced_lost + self.unannounced_gaps

    def consumed(self):
        return self.received + self.torn + self.lost

    def clean(self):
        return self.torn == 0 and self.duplicates == 0 and self.unannounced_gaps == 0

    def summary(self):
        return {
            "received": self.received,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "torn": self.torn,
            "overruns": self.overruns,
        }


def _verify_loop(reader, verifier, count, idle_timeout):
    """Read and verify until received + lost + torn >= count. Returns False on idle timeout.
    This is the tight per-candle path, inlined (one seqlock read + seal check per candle)."""
    q = reader._q
    mm = reader._mm
    mask = reader._mask
    base = reader._slots_offset
    unpack = _PAYLOAD_BITS.unpack_from
    M, P, O = _M64, _FNV_PRIME, _FNV_OFFSET
    monotonic = time.monotonic
    sleep = time.sleep
    v = verifier
    p = reader._cursor
    expected = v.next_pos
    received = v.received
    torn = v.torn
    duplicates = v.duplicates
    gaps = v.unannounced_gaps
    unsealed = v.unsealed
    consumed = v.consumed()
    idle = 0
    idle_since = 0.0
    ok = True
    while consumed < count:
        off = base + ((p & mask) << 6)
        si = off >> 3
        want = 2 * p + 2
        before = q[si]
        if before == want:
            ts, sym, fl, ob, hb, lb, cb, vb = unpack(mm, off + 8)
            if q[si] == want:
                pos = p
                p += 1
                idle = 0
                if expected is not None:
                    if pos < expected:
                        duplicates += 1
                        continue
                    if pos > expected:
                        gaps += pos - expected
                        consumed += pos - expected
                expected = pos + 1
                consumed += 1
                if fl & 0x80000000:
                    h = ((O ^ pos) * P) & M
                    h ^= h >> 29
                    h = ((h ^ (ts & M)) * P) & M
                    h ^= h >> 29
                    h = ((h ^ (sym | (fl & 0xFF000000) << 32)) * P) & M
                    h ^= h >> 29
                    h = ((h ^ ob) * P) & M
                    h ^= h >> 29
                    h = ((h ^ hb) * P) & M
                    h ^= h >> 29
                    h = ((h ^ lb) * P) & M
                    h ^= h >> 29
                    h = ((h ^ cb) * P) & M
                    h ^= h >> 29
                    h = ((h ^ vb) * P) & M
                    h ^= h >> 29
                    if (h ^ (h >> 32)) & 0xFFFFFF != fl & 0xFFFFFF:
                        torn += 1
                        continue
                else:
                    unsealed += 1
                received += 1
                continue
        elif before < want:
            # Nothing new: spin a little, then sleep in growing steps (at most 1 ms).
            idle += 1
            if idle > 200:
                now = monotonic()
                if idle == 201:
                    idle_since = now
                elif now - idle_since > idle_timeout:
                    ok = False
                    break
                sleep(min(0.00002 * (idle - 200), 0.001))
            continue
        # Overwritten: lapped.
        reader._cursor = p
        kind, lost = reader._overrun(p)
        p = reader._cursor
        v.overruns += 1
        v.announced_lost += lost
        if expected is not None:
            expected += lost
        consumed += lost
        idle = 0
        continue
    reader._cursor = p
    v.next_pos = expected
    v.received = received
    v.torn = torn
    v.duplicates = duplicates
    v.unannounced_gaps = gaps
    v.unsealed = unsealed
    return ok


# ---------------------------------------------------------------------------------------------
# Command line


def _cmd_write(args):
    import random

    if args.count < 0:
        raise RingError("--count must be at least 0")
    if args.symbols < 1 or args.symbols > MAX_SYMBOLS:
        raise RingError("--symbols %d must be between 1 and %d" % (args.symbols, MAX_SYMBOLS))
    if args.rate < 0:
        raise RingError("--rate must be 0 (as fast as possible) or a positive rate")
    path = ring_path(args.ring)
    created = False
    try:
        w = RingWriter(path)
    except RingNotFound:
        try:
            create(path, args.slots, max(1024, args.symbols))
            created = True
        except RingExists:
            pass
        w = RingWriter(path)
    with w:
        nsym = args.symbols
        ids = [w.symbol("PY%04d" % i) for i in range(nsym)]
        rnd = random.Random(args.seed)
        rand = rnd.random
        price = [100.0 + 50.0 * rand() for _ in range(nsym)]
        publish = w.publish
        time_ns = time.time_ns
        mono = time.monotonic_ns
        interval = int(1e9 / args.rate) if args.rate > 0 else 0
        first = w.next_position()
        t0 = mono()
        deadline = t0
        last_hb = time_ns()
        count = args.count
        for i in range(count):
            k = i % nsym
            o = price[k]
            c = o * (1.0 + (rand() - 0.5) * 0.002)
            price[k] = c
            hi = (o if o > c else c) * (1.0 + rand() * 0.0005)
            lo = (o if o < c else c) * (1.0 - rand() * 0.0005)
            if interval:
                deadline += interval
                now = mono()
                if deadline - now > 200000:
                    time.sleep((deadline - now - 100000) / 1e9)
                while mono() < deadline:
                    pass
            ts = time_ns()
            publish(ts, ids[k], o, hi, lo, c, 1.0 + rand() * 100.0, 0, True)
            if ts - last_hb > 5000000:
                w.heartbeat()
                last_hb = ts
        w.heartbeat()
        elapsed = (mono() - t0) / 1e9
        rate = count / elapsed if elapsed > 0 else float("inf")
        sys.stderr.write(
            "tickloop_ring write: %s %s: published %d sealed candles (positions %d..%d) for %d "
            "symbols in %.3f s (%.0f candles/s), epoch %d, doorbell rings %d\n"
            % ("created" if created else "attached to", w.path, count, first, w.next_position(),
               nsym, elapsed, rate, w.epoch(), w.rings)
        )
    return 0


def _cmd_tail(args):
    import json

    if args.count < 0:
        raise RingError("--count must be at least 0")
    reader = RingReader(args.ring, start=args.start)
    with reader:
        if args.verify:
            v = Verifier()
            t0 = time.monotonic()
            ok = _verify_loop(reader, v, args.count, args.idle_timeout)
            elapsed = time.monotonic() - t0
            sys.stdout.write(json.dumps(v.summary(), separators=(",", ":")) + "\n")
            sys.stdout.flush()
            sys.stderr.write(
                "tickloop_ring tail: %s: %d received, %d lost in %d overruns, %d torn, "
                "%d duplicates, %d unannounced gaps, %d unsealed in %.3f s\n"
                % (reader.path, v.received, v.lost, v.overruns, v.torn, v.duplicates,
                   v.unannounced_gaps, v.unsealed, elapsed)
            )
            if not ok:
                sys.stderr.write(
                    "tickloop_ring tail: no new candle in %g s (%d of %d consumed): is the "
                    "writer running?\n" % (args.idle_timeout, v.consumed(), args.count)
                )
                return 3
            return 0 if v.clean() else 1
        return _tail_print(reader, args)


def _tail_print(reader, args):
    out = sys.stdout
    consumed = 0
    idle = 0
    idle_since = 0.0
    while consumed < args.count:
        r = reader.read()
        if r is None:
            idle += 1
            if idle > 200:
                now = time.monotonic()
                if idle == 201:
                    idle_since = now
                elif now - idle_since > args.idle_timeout:
                    out.flush()
                    sys.stderr.write(
                        "tickloop_ring tail: no new candle in %g s (%d of %d consumed): is the "
                        "writer running?\n" % (args.idle_timeout, consumed, args.count)
                    )
                    return 3
                time.sleep(0.0005)
            continue
        idle = 0
        if r[0] == "overrun":
            consumed += r[1]
            out.flush()
            sys.stderr.write("overrun: lost %d candles\n" % r[1])
            continue
        pos, (ts, sym, fl, o, h, lo, c, vol) = r[1], r[2]
        name = reader.symbol_name(sym)
        out.write(
            "%d %d %s %.10g %.10g %.10g %.10g %.10g %#x\n"
            % (pos, ts, name if name is not None else "#%d" % sym, o, h, lo, c, vol, fl)
        )
        consumed += 1
    out.flush()
    return 0


def _selftest(args):
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    # 1. The documented seal vector.
    s = seal_of(7, 1000, 3, 0, 1.5, 2.5, 0.5, 2.0, 100.0)
    check(s == 0xD848F5, "seal vector: got %#x, want 0xd848f5" % s)
    check(PAYLOAD_FINGERPRINT == _fnv1a64(PAYLOAD_DESCRIPTION), "fingerprint")
    # 2. ring_path.
    check(ring_path("abc") == "/dev/shm/abc", "ring_path name")
    check(ring_path("./x/y") == "./x/y", "ring_path path")
    for badname in ("", ".hidden"):
        try:
            ring_path(badname)
            failures.append("ring_path accepted %r" % badname)
        except RingError:
            pass
    # 3. Round trip on a temporary ring.
    name = "tickloop-py-selftest-%d-%d" % (os.getpid(), time.monotonic_ns())
    path = ring_path(name)
    try:
        create(path, slots=16, symbols=4)
        check(stat.S_IMODE(os.stat(path).st_mode) == 0o600, "mode 0600")
        try:
            create(path, slots=16, symbols=4)
            failures.append("create replaced an existing ring")
        except RingExists:
            pass
        leftovers = [n for n in os.listdir("/dev/shm") if n.startswith(".%s.tmp-" % name)]
        check(not leftovers, "temporary files left: %r" % leftovers)
        with RingWriter(name) as w:
            check(w.epoch() == 1, "epoch after first take-over")
            try:
                RingWriter(name)
                failures.append("a second writer got the lock")
            except WriterBusy as e:
                check(("pid %d" % os.getpid()) in str(e), "busy error names the pid")
            a = w.symbol("AAA")
            b = w.symbol("BBB")
            check((a, b, w.symbol("AAA")) == (0, 1, 0), "symbol ids")
            r_next = RingReader(name, start="next")
            check(r_next.read() is None, "empty ring reads None")
            for i in range(10):
                sym = a if i % 2 == 0 else b
                pos = w.publish(1000 + i, sym, 1.0 + i, 2.0 + i, 0.5, 1.5, 10.0 * i, 0x01000000, True)
                check(pos == i, "position %d" % i)
            check(w.write_seq() == 10, "write_seq")
            r = RingReader(name, start="oldest")
            check(r.symbol_name(1) == "BBB" and r.symbol_name(5) is None, "symbol names")
            for i in range(10):
                item = r.read()
                ok = item is not None and item[0] == "candle" and item[1] == i
                check(ok, "read %d: %r" % (i, item))
                if ok:
                    c = item[2]
                    check(c[0] == 1000 + i and c[3] == 1.0 + i and c[7] == 10.0 * i, "payload %d" % i)
                    check(seal_ok(i, c), "seal of %d" % i)
                    check(c[2] & 0x7F000000 == 0x01000000, "feed flag bits kept")
                    check(not seal_ok(i + 1, c), "seal binds the position")
            check(r.read() is None, "drained")
            # A parked reader with a wake socket gets a datagram when the writer rings.
            wake_id = (os.getpid() << 32) | 0x5E1F
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                listener.bind(wake_socket_name(wake_id))
                listener.settimeout(2.0)
                entry = OFF_READERS + 64 * 62  # the last entry, as a parked reader would set it
                w._q[(entry + 56) >> 3] = wake_id
                w._u32[(entry + 4) >> 2] = 1
                w._u32[OFF_PARKED >> 2] += 1
                w._u32[(OFF_PARKED + 8) >> 2] = 1  # wanted
                w.publish(1010, a, 1.0, 1.0, 1.0, 1.0, 1.0, seal=True)
                check(listener.recv(16) == b"\x01", "wake datagram")
                w._u32[(entry + 4) >> 2] = 0
                w._u32[OFF_PARKED >> 2] -= 1
                w._q[(entry + 56) >> 3] = 0
                check(r.read()[1] == 10, "the woken reader reads the candle")
            except socket.timeout:
                failures.append("no wake datagram within 2 s")
            finally:
                listener.close()
            item = r_next.read()
            check(item is not None and item[1] == 0, "start=next sees the first publish")
            # Lap reader r: 16 slots, publish 39 more (positions 11..49).
            for i in range(39):
                w.publish(2000 + i, a, 1.0, 1.0, 1.0, 1.0, 1.0, seal=True)
            item = r.read()
            # write_seq = 50: oldest intact = 50 + 1 - 16 = 35, plus 16 / 8 = 37; r was at 11,
            # so lost = 26.
            check(item == ("overrun", 26), "overrun: %r" % (item,))
            item = r.read()
            check(item is not None and item[0] == "candle" and item[1] == 37, "after overrun: %r" % (item,))
            v = Verifier()
            ok = _verify_loop(r, v, 12, 1.0)
            check(ok and v.clean() and v.received == 12 and v.lost == 0, "verify loop: %r" % v.summary())
            r.close()
            r_next.close()
        # 4. Take-over after a writer died between completing a slot and publishing write_seq.
        fd = os.open(path, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, 0)
            qv = memoryview(mm).cast("Q")
            geo = geometry(16, 4)
            qv[OFF_WRITE_SEQ >> 3] = 49  # pretend write_seq was not published for position 49
            check(qv[(geo[2] >> 3) + ((49 & 15) << 3)] == 2 * 49 + 2, "slot 49 complete")
            qv.release()
            mm.close()
        finally:
            os.close(fd)
        with RingWriter(name) as w:
            check(w.next_position() == 50, "take-over recovered position %d" % w.next_position())
            check(w.epoch() == 2, "epoch after second take-over")
            check(w.symbol("BBB") == 1, "symbols survive a take-over")
        # 5. Bad files.
        junk = path + "-junk"
        with open(junk, "wb") as f:
            f.write(b"x" * 8192)
        try:
            RingReader(junk)
            failures.append("read a junk file")
        except RingError as e:
            check("not a tickloop ring" in str(e), "junk message: %s" % e)
        finally:
            os.unlink(junk)
        try:
            RingReader(path + "-missing")
            failures.append("read a missing ring")
        except RingNotFound:
            pass
    except RingError as e:
        failures.append("unexpected: %s" % e)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    if failures:
        for f in failures:
            sys.stderr.write("selftest FAILED: %s\n" % f)
        return 1
    sys.stderr.write("selftest ok: seal vector 0xd848f5, create/write/read/wake/overrun/take-over\n")
    return 0


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(
        prog="tickloop_ring.py",
        description="Write and read tickloop rings (docs/ring-format.md) from Python.",
    )
    sub = parser.add_subparsers(dest="command")
    pw = sub.add_parser("write", help="publish sealed random-walk candles (creates the ring if missing)")
    pw.add_argument("--ring", required=True, help="ring name (under /dev/shm) or path")
    pw.add_argument("--count", type=int, required=True)
    pw.add_argument("--symbols", type=int, default=1, help="symbols PY0000, PY0001, ... (default 1)")
    pw.add_argument("--seed", type=int, default=1)
    pw.add_argument("--rate", type=float, default=0.0, help="candles per second; 0 = as fast as possible")
    pw.add_argument("--slots", type=int, default=65536, help="slot count if the ring is created")
    pt = sub.add_parser("tail", help="follow a ring")
    pt.add_argument("--ring", required=True)
    pt.add_argument("--count", type=int, required=True)
    pt.add_argument("--verify", action="store_true",
                    help="check seals, gaps and duplicates; print one JSON line")
    pt.add_argument("--from", dest="start", choices=["next", "oldest"], default="next")
    pt.add_argument("--idle-timeout", type=float, default=30.0, metavar="SECONDS")
    sub.add_parser("selftest", help="seal vector and an in-process round trip")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        return 2
    try:
        if args.command == "write":
            return _cmd_write(args)
        if args.command == "tail":
            return _cmd_tail(args)
        return _selftest(args)
    except RingError as e:
        sys.stderr.write("tickloop_ring %s: %s\n" % (args.command, e))
        return 2
    except BrokenPipeError:
        # stdout closed early (`... | head`): nothing more to say.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as e:
        sys.stderr.write("tickloop_ring %s: %s\n" % (args.command, e))
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("tickloop_ring %s: interrupted\n" % args.command)
        return 130


if __name__ == "__main__":
    sys.exit(main())
