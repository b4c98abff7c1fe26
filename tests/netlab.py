"""Network-namespace labs for tests: namespaces, plain veth links and point-to-point links with a
controllable one-way delay.

The kernel we run on has no ``netem`` (``CONFIG_NET_SCH_NETEM`` is unset), so a delayed link is
two TUN devices (one in each namespace) and a userspace relay: one background thread per lab reads
every packet from one TUN fd and writes it to the other once the wire's current one-way delay has
passed. Packet order is kept per direction, and ``Wire.set_delay`` applies to packets read after
the call.

Everything a lab makes is named after the process id and a per-process lab number
(``gslbt<pid>-<n>-<name>`` namespaces, ``g<pid hex>.<n hex><t|v><k>`` interfaces, under 16
characters), so labs in parallel test processes never meet, and ``NetLab.__exit__`` removes it
all (processes, fds, interfaces, namespaces) whether or not the test passed. The first lab of a
process also sweeps names left by test processes that were killed (``sweep_stale``).

Needs root, ``ip`` (iproute2) and ``/dev/net/tun``. Only namespace addresses (10.77/16,
10.78/16, 10.99/16 by convention) are used; nothing is routed out of the machine and the root
namespace's routes are left alone, except for the connected route of a root-side veth address.

    with NetLab() as lab:
        client, east = lab.namespace("client"), lab.namespace("east")
        client.add_address("10.99.0.10/32")
        wire = lab.delay_wire(client, east, "10.77.100.1", "10.77.100.2", delay=0.020)
        east.add_address("10.77.1.1/32")
        client.route("10.77.1.0/24", wire.dev_a, src="10.99.0.10")
        east.route("10.99.0.0/16", wire.dev_b, src="10.77.1.1")
        server = east.popen([sys.executable, "server.py"], stdout=subprocess.PIPE)
        ...
        wire.set_delay(0.060)
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import heapq
import itertools
import os
import re
import selectors
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar

T = TypeVar("T")

IFNAMSIZ = 16  # interface names are at most 15 characters
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"

_lab_seq = itertools.count()
_lab_seq_lock = threading.Lock()
_swept = False  # sweep_stale() done in this process


class NetLabError(RuntimeError):
    pass


def available() -> str | None:
    """None when labs can be built here, else why not (a test fails with it; never skips)."""
    if os.geteuid() != 0:
        return "network labs need root"
    if shutil.which("ip") is None:
        return "network labs need ip (iproute2)"
    if not os.path.exists("/dev/net/tun"):
        return "network labs need /dev/net/tun"
    return None


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise NetLabError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done


def bare(addr: str) -> str:
    """``10.78.1.1/30`` -> ``10.78.1.1``."""
    return addr.split("/", 1)[0]


def _check_ifname(name: str) -> str:
    if not 0 < len(name) < IFNAMSIZ:
        raise NetLabError(f"interface name {name!r} must be 1..{IFNAMSIZ - 1} characters")
    return name


class Namespace:
    """One network namespace of a lab (``lab.namespace(name)`` makes it)."""

    def __init__(self, lab: NetLab, short: str, name: str) -> None:
        self.lab = lab
        self.short = short
        self.name = name

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ip -n NAME ARGS...``."""
        return _ip(*args, ns=self.name, check=check)

    def add_address(self, cidr: str, dev: str = "lo") -> None:
        """An extra address, by default on ``lo`` (e.g. a client's ``10.99.0.10/32``)."""
        self.ip("addr", "add", cidr, "dev", dev)

    def route(self, dest: str, dev: str, *, src: str | None = None, via: str | None = None) -> None:
        """``ip route replace DEST dev DEV [via GW] [src SRC]`` (replace, so it may override an
        existing route such as a point-to-point peer route)."""
        args = ["route", "replace", dest, "dev", dev]
        if via:
            args += ["via", via]
        if src:
            args += ["src", src]
        self.ip(*args)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in this namespace; the lab kills it (and its process group) on exit."""
        kw.setdefault("start_new_session", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[Any] = subprocess.Popen(self.argv(argv), **kw)
        self.lab._procs.append(proc)
        return proc

    def run(
        self, argv: Sequence[str], *, timeout: float = 30, check: bool = False, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in this namespace to completion (text output captured by default)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.argv(argv), timeout=timeout, check=check, **kw)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 30) -> T:
        """Run ``fn(*args)`` in a fresh thread that has ``setns``-ed into this namespace, and return
        its result (or raise its exception). Only the network namespace is per thread, so sockets
        ``fn`` makes live in this namespace, even after it returns; files and the rest are shared
        with the test. Cheap: no process, no fork."""
        box: list[tuple[bool, Any]] = []

        def body() -> None:
            try:
                _setns(os.path.join(NETNS_DIR, self.name))
                box.append((True, fn(*args)))
            except BaseException as exc:  # handed back to the caller
                box.append((False, exc))

        thread = threading.Thread(target=body, name=f"netlab-call-{self.short}", daemon=True)
        thread.start()
        thread.join(timeout)
        if not box:
            raise TimeoutError(f"{fn!r} in {self.name} still running after {timeout}s")
        ok, value = box[0]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]


_libc: ctypes.CDLL | None = None


def _setns(path: str) -> None:
    """setns(2) into the network namespace at ``path``, for the calling thread only."""
    global _libc
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if hasattr(os, "setns"):  # Python 3.12+
            os.setns(fd, CLONE_NEWNET)
            return
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


Direction = Literal["ab", "ba"]


class Wire:
    """A point-to-point link between two namespaces through the lab's delay relay."""

    def __init__(
        self,
        relay: _Relay,
        ns_a: Namespace,
        ns_b: Namespace,
        dev_a: str,
        dev_b: str,
        fd_a: int,
        fd_b: int,
        addr_a: str,
        addr_b: str,
        delay_ab: float,
        delay_ba: float,
    ) -> None:
        self.relay = relay
        self.ns_a, self.ns_b = ns_a, ns_b
        self.dev_a, self.dev_b = dev_a, dev_b
        self.fd_a, self.fd_b = fd_a, fd_b
        self.addr_a, self.addr_b = addr_a, addr_b
        self.delay_ab = delay_ab  # one-way delay, packets from a to b (seconds)
        self.delay_ba = delay_ba
        self.packets_ab = 0  # packets relayed so far, per direction
        self.packets_ba = 0
        self.dropped = 0  # packets a TUN device refused (its link down, queue full)
        self._last_ab = 0.0  # latest release time handed out, per direction (keeps order)
        self._last_ba = 0.0

    def __repr__(self) -> str:
        return (
            f"Wire({self.ns_a.short}:{self.dev_a} <-> {self.ns_b.short}:{self.dev_b}, "
            f"{self.delay_ab * 1000:g}/{self.delay_ba * 1000:g} ms)"
        )

    def dev(self, ns: Namespace) -> str:
        """This wire's interface name in ``ns``."""
        if ns is self.ns_a:
            return self.dev_a
        if ns is self.ns_b:
            return self.dev_b
        raise NetLabError(f"{self!r} has no end in {ns!r}")

    @property
    def delay(self) -> float:
        """The one-way delay (the larger one, if the directions differ)."""
        return max(self.delay_ab, self.delay_ba)

    def set_delay(self, seconds: float, *, direction: Direction | None = None) -> None:
        """Change the one-way delay (both directions, or ``"ab"`` / ``"ba"`` only). Applies to
        packets read after the call; packets already in flight keep theirs, and a shorter delay
        never lets a packet overtake an earlier one of the same direction."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        with self.relay.lock:
            if direction in (None, "ab"):
                self.delay_ab = seconds
            if direction in (None, "ba"):
                self.delay_ba = seconds


class _Relay:
    """The one thread that moves packets between the TUN fds of all the wires of a lab."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        self.pending: list[Wire] = []
        self.by_fd: dict[int, Wire] = {}
        self.heap: list[tuple[float, int, int, bytes]] = []  # (release, seq, out fd, packet)
        self.seq = itertools.count()
        self.stopping = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="netlab-relay", daemon=True)
        self.thread.start()

    def add(self, wire: Wire) -> None:
        with self.lock:
            self.pending.append(wire)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self.wake_w, b"x")
        except BlockingIOError:
            pass

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
        self._wake()
        self.thread.join(10)
        if self.thread.is_alive():
            raise NetLabError("netlab relay thread did not stop")
        self.sel.close()
        os.close(self.wake_r)
        os.close(self.wake_w)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # surfaced by NetLab.close
            self.error = exc

    def _loop(self) -> None:
        heap = self.heap
        while True:
            with self.lock:
                if self.stopping:
                    return
                for wire in self.pending:
                    self.sel.register(wire.fd_a, selectors.EVENT_READ, (wire, "ab"))
                    self.sel.register(wire.fd_b, selectors.EVENT_READ, (wire, "ba"))
                    self.by_fd[wire.fd_a] = self.by_fd[wire.fd_b] = wire
                self.pending.clear()
            timeout = None if not heap else max(0.0, heap[0][0] - time.monotonic())
            for key, _ in self.sel.select(timeout):
                if key.data is None:
                    try:
                        while os.read(self.wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                wire, direction = key.data
                self._read(key.fd, wire, direction)
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                _, _, out, packet = heapq.heappop(heap)
                self._write(out, packet)

    def _read(self, fd: int, wire: Wire, direction: str) -> None:
        for _ in range(64):  # bounded, so one busy wire cannot starve the release of others
            try:
                packet = os.read(fd, 65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EBADF, errno.EBADFD):
                    return
                raise
            if not packet:
                return
            now = time.monotonic()
            with self.lock:
                if direction == "ab":
                    release = max(now + wire.delay_ab, wire._last_ab)
                    wire._last_ab = release
                    wire.packets_ab += 1
                    out = wire.fd_b
                else:
                    release = max(now + wire.delay_ba, wire._last_ba)
                    wire._last_ba = release
                    wire.packets_ba += 1
                    out = wire.fd_a
            heapq.heappush(self.heap, (release, next(self.seq), out, packet))

    def _write(self, fd: int, packet: bytes) -> None:
        try:
            os.write(fd, packet)
        except OSError:  # the far end's link is down or its queue full: the packet is lost
            wire = self.by_fd.get(fd)
            if wire is not None:
                wire.dropped += 1


def _open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
        fcntl.ioctl(fd, TUNSETIFF, ifr)
    except BaseException:
        os.close(fd)
        raise
    return fd


class NetLab:
    """A set of network namespaces and links, removed on exit. Use as a context manager."""

    def __init__(self) -> None:
        global _swept
        pid = os.getpid()
        with _lab_seq_lock:
            seq = next(_lab_seq)
            if not _swept:  # once per process: names left by test processes that were killed
                _swept = True
                sweep_stale()
        self.prefix = f"gslbt{pid}-{seq}-"  # namespace names
        self.ifprefix = f"g{pid:x}.{seq:x}"  # interface names: + kind letter + counter
        self._ifcount = itertools.count()
        self.namespaces: dict[str, Namespace] = {}
        self.wires: list[Wire] = []
        self._links: list[tuple[str, str | None]] = []  # (ifname, namespace name or None=root)
        self._fds: list[int] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._relay: _Relay | None = None
        self._closed = False

    def __enter__(self) -> NetLab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(raise_errors=exc_type is None)

    @property
    def relay_thread(self) -> threading.Thread | None:
        return self._relay.thread if self._relay else None

    def _ifname(self, kind: str) -> str:
        return _check_ifname(f"{self.ifprefix}{kind}{next(self._ifcount)}")

    def namespace(self, name: str) -> Namespace:
        """The namespace ``name`` of this lab, made (with ``lo`` up) on first use."""
        if self._closed:
            raise NetLabError("lab is closed")
        if name in self.namespaces:
            return self.namespaces[name]
        full = self.prefix + name
        _ip("netns", "add", full)
        ns = Namespace(self, name, full)
        self.namespaces[name] = ns
        ns.ip("link", "set", "lo", "up")
        return ns

    def _ns(self, ns: Namespace | str | None) -> Namespace | None:
        if ns is None or isinstance(ns, Namespace):
            return ns
        return self.namespace(ns)

    def veth(
        self,
        ns_a: Namespace | str | None,
        addr_a: str | None,
        ns_b: Namespace | str | None,
        addr_b: str | None,
    ) -> tuple[str, str]:
        """A plain (undelayed) veth pair, ``ns_a`` (None: the root namespace) with ``addr_a``
        (CIDR, e.g. ``10.78.1.1/30``) to ``ns_b`` with ``addr_b``. Returns the two interface
        names."""
        if self._closed:
            raise NetLabError("lab is closed")
        a, b = self._ns(ns_a), self._ns(ns_b)
        dev_a, dev_b = self._ifname("v"), self._ifname("v")
        _ip("link", "add", dev_a, "type", "veth", "peer", "name", dev_b)
        self._links.append((dev_a, None))
        self._links.append((dev_b, None))
        for i, (dev, ns, addr) in enumerate(((dev_a, a, addr_a), (dev_b, b, addr_b))):
            if ns is not None:
                _ip("link", "set", dev, "netns", ns.name)
                self._links[-2 + i] = (dev, ns.name)
            where = ns.name if ns else None
            if addr:
                _ip("addr", "add", addr, "dev", dev, ns=where)
            _ip("link", "set", dev, "up", ns=where)
        return dev_a, dev_b

    def delay_wire(
        self,
        ns_a: Namespace | str,
        ns_b: Namespace | str,
        addr_a: str,
        addr_b: str,
        delay: float = 0.020,
        *,
        delay_ba: float | None = None,
        mtu: int = 1500,
    ) -> Wire:
        """A point-to-point link between ``ns_a`` (address ``addr_a``, peer ``addr_b``) and
        ``ns_b`` (the reverse) through the relay, with ``delay`` seconds one way (``delay_ba``,
        if given, for packets from b to a)."""
        if self._closed:
            raise NetLabError("lab is closed")
        a, b = self._ns(ns_a), self._ns(ns_b)
        assert a is not None and b is not None
        ends: list[tuple[str, int]] = []
        for ns, local, peer in ((a, addr_a, addr_b), (b, addr_b, addr_a)):
            dev = self._ifname("t")
            fd = _open_tun(dev)  # created in the root namespace ...
            self._fds.append(fd)
            self._links.append((dev, None))
            _ip("link", "set", dev, "netns", ns.name)  # ... and moved; the fd stays valid
            self._links[-1] = (dev, ns.name)
            ns.ip("addr", "add", bare(local), "peer", bare(peer), "dev", dev)
            ns.ip("link", "set", dev, "mtu", str(mtu), "up")
            ends.append((dev, fd))
        if self._relay is None:
            self._relay = _Relay()
        back = delay if delay_ba is None else delay_ba
        (dev_a, fd_a), (dev_b, fd_b) = ends
        wire = Wire(self._relay, a, b, dev_a, dev_b, fd_a, fd_b, addr_a, addr_b, delay, back)
        self.wires.append(wire)
        self._relay.add(wire)
        return wire

    def close(self, raise_errors: bool = True) -> None:
        """Kill every process, stop the relay, close every fd, delete every interface and
        namespace. Idempotent; carries on past errors and raises the first one at the end."""
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []

        def attempt(fn: Callable[..., object], *args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:
                errors.append(exc)

        for proc in self._procs:
            attempt(_kill, proc)
        self._procs.clear()
        if self._relay is not None:
            relay = self._relay
            attempt(relay.stop)
            if relay.error is not None:
                errors.append(relay.error)
        for fd in self._fds:  # closing a TUN fd removes its (non-persistent) device
            attempt(os.close, fd)
        self._fds.clear()
        for dev, where in reversed(self._links):
            attempt(_delete_link, dev, where)
        self._links.clear()
        for ns in reversed(list(self.namespaces.values())):
            attempt(_ip, "netns", "del", ns.name)
        if errors and raise_errors:
            raise errors[0]

    def leftovers(self) -> list[str]:
        """Namespaces and root-namespace interfaces still carrying this lab's names."""
        return leftovers(self.prefix, self.ifprefix)


def root_p2p_pair(base: str = "10.78") -> tuple[str, str]:
    """Two addresses of a /30 under ``base``.0.0/16 for a root-namespace veth, picked from the
    process id and skipping /30s the root namespace already uses, so labs of parallel test
    processes do not clash: ``("10.78.X.Y+1/30", "10.78.X.Y+2/30")``."""
    used = _ip("-4", "-o", "addr", "show").stdout
    start = os.getpid() % 16384
    for i in range(16384):
        n = (start + i) % 16384
        third, fourth = n >> 6, (n & 63) * 4
        net, a, b = (f"{base}.{third}.{fourth + k}" for k in (0, 1, 2))
        if not any(f" {x}/" in used for x in (net, a, b)):
            return f"{a}/30", f"{b}/30"
    raise NetLabError(f"no free /30 under {base}.0.0/16")


_NS_RE = re.compile(r"^gslbt(\d+)-\d+-")
_IF_RE = re.compile(r"^g([0-9a-f]+)\.[0-9a-f]+[tv]\d+$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete namespaces and root interfaces of labs whose process is gone (killed before its
    lab could clean up). Processes still inside such a namespace are left alone (they keep it
    alive until they exit); only the names go. Root interfaces go first: deleting a namespace
    takes the veth peers of its interfaces with it, but asynchronously. Returns what was
    removed."""
    removed = []
    for line in _ip("-o", "link", "show").stdout.splitlines():
        parts = line.split(":", 2)
        name = parts[1].strip().split("@", 1)[0] if len(parts) > 1 else ""
        m = _IF_RE.match(name)
        if m and int(m.group(1), 16) != os.getpid() and not _pid_alive(int(m.group(1), 16)):
            if _ip("link", "del", name, check=False).returncode == 0:
                removed.append(f"link {name}")
    for line in _ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NS_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            if _ip("netns", "del", name, check=False).returncode == 0:
                removed.append(f"netns {name}")
    return removed


def leftovers(ns_prefix: str, if_prefix: str) -> list[str]:
    """Namespaces named ``ns_prefix...`` and root interfaces named ``if_prefix...``."""
    found = []
    for line in _ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(ns_prefix):
            found.append(f"netns {name}")
    for line in _ip("-o", "link", "show").stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) > 1:
            name = parts[1].strip().split("@", 1)[0]
            if name.startswith(if_prefix):
                found.append(f"link {name}")
    return found


def _kill(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # popen starts each in its own session
        except (ProcessLookupError, PermissionError):
            proc.kill()
    try:
        proc.wait(10)
    finally:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _delete_link(dev: str, ns: str | None) -> None:
    if ns is not None and not os.path.exists(os.path.join(NETNS_DIR, ns)):
        return
    done = _ip("link", "del", dev, ns=ns, check=False)
    if done.returncode != 0 and "Cannot find device" not in done.stderr:
        raise NetLabError(f"ip link del {dev}: {done.stderr.strip()}")
