"""Plugin entry points the sandbox tests run: well-behaved ones and attempts to break out.

Each function takes the call's input and returns what it observed, so a test can assert on
it; attempts that the sandbox stops report the error instead of raising. Only modules the
worker has already loaded are imported at the top (a test runs this without the mount
namespace, where the standard library is not readable by the sandbox user).
"""

import ctypes
import json
import os
import sys
import time

MIB = 1024 * 1024
SIGCHLD = 17
SYS_CLONE = 56
SYS_FORK = 57
SYS_CLONE3 = 435
PTRACE_ATTACH = 16
CLONE_NEWUSER = 0x10000000
PR_GET_NO_NEW_PRIVS = 39
PR_GET_SECCOMP = 21

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def _errno_of(call):
    """Run ``call``; its result, or the error it raised as "ClassName: errno"."""
    try:
        return {"ok": call()}
    except OSError as exc:
        return {"error": type(exc).__name__, "errno": exc.errno}
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc)}


def upper(text):
    return text.upper()


def pid(_):
    return os.getpid()


def identity(_):
    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "no_new_privs": libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
        "seccomp": libc.prctl(PR_GET_SECCOMP, 0, 0, 0, 0),
        "cwd": os.getcwd(),
        "environ": dict(os.environ),
    }


def read_file(path):
    def read():
        with open(path, "rb") as file:
            return len(file.read())

    return _errno_of(read)


def list_dir(path):
    return _errno_of(lambda: sorted(os.listdir(path)))


def write_file(path):
    def write():
        with open(path, "w") as file:
            file.write("written by the plugin")
        return path

    return _errno_of(write)


def sleep_forever(_):
    time.sleep(3600)


def spin(_):
    while True:
        pass


def allocate(mib):
    block = bytearray(mib * MIB)
    return len(block)


def write_big(mib):
    written = 0
    chunk = b"\0" * MIB
    try:
        with open("big.bin", "wb", buffering=0) as file:
            for _ in range(mib):
                written += file.write(chunk)
    except OSError as exc:
        return {"written": written, "errno": exc.errno, "size": os.path.getsize("big.bin")}
    return {"written": written, "errno": None, "size": os.path.getsize("big.bin")}


def open_many(_):
    files = []
    try:
        while len(files) < 10_000:
            files.append(open("/dev/null"))  # noqa: SIM115 - kept open on purpose
    except OSError as exc:
        return {"opened": len(files), "errno": exc.errno}
    finally:
        for file in files:
            file.close()
    return {"opened": len(files), "errno": None}


def fork_loop(count):
    forked = 0
    errors = []
    for _ in range(count):
        try:
            child = os.fork()
        except OSError as exc:
            errors.append(exc.errno)
            continue
        if child == 0:
            os._exit(0)
        os.waitpid(child, 0)
        forked += 1
    return {"forked": forked, "errors": sorted(set(errors))}


def raw_syscalls(_):
    """Process creation straight through the system call interface, not through Python."""
    results = {}
    for name, call in (
        ("libc_fork", lambda: libc.fork()),
        ("sys_fork", lambda: libc.syscall(SYS_FORK)),
        ("sys_clone", lambda: libc.syscall(SYS_CLONE, SIGCHLD, 0, 0, 0, 0)),
        ("sys_clone3", lambda: libc.syscall(SYS_CLONE3, 0, 0)),
    ):
        ctypes.set_errno(0)
        result = call()
        if result == 0:  # the child of a fork that got through: leave at once
            os._exit(0)
        results[name] = {"result": result, "errno": ctypes.get_errno()}
    return results


def escapes(_):
    """Other ways out: tracing, foreign memory, namespaces, exec, signals, limits."""
    import resource

    def errno_after(result):
        return {"result": result, "errno": ctypes.get_errno()}

    parent = os.getppid()
    return {
        "ptrace": errno_after(libc.ptrace(PTRACE_ATTACH, parent, None, None)),
        "unshare_user": errno_after(libc.unshare(CLONE_NEWUSER)),
        "mount": errno_after(libc.mount(b"none", b"/", b"tmpfs", 0, None)),
        "kill_parent": _errno_of(lambda: os.kill(parent, 0)),
        "execv": _errno_of(lambda: os.execv("/usr/bin/true", ["true"])),
        "raise_memory_limit": _errno_of(
            lambda: resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)
        ),
        "chroot": _errno_of(lambda: os.chroot("/")),
    }


def sockets(_):
    import socket

    results = {}
    for name, family in (
        ("inet", socket.AF_INET),
        ("inet6", socket.AF_INET6),
        ("netlink", socket.AF_NETLINK),
        ("packet", socket.AF_PACKET),
    ):
        results[name] = _errno_of(lambda family=family: socket.socket(family).close())
    results["ctypes_inet"] = {"result": libc.socket(2, 1, 0), "errno": ctypes.get_errno()}
    results["unix"] = _errno_of(lambda: socket.socket(socket.AF_UNIX).close())
    return results


def connect(address):
    import socket

    def dial():
        with socket.create_connection((address[0], address[1]), timeout=2):
            return "connected"

    return _errno_of(dial)


def threads(_):
    import threading

    seen = []
    thread = threading.Thread(target=lambda: seen.append(os.getpid()))
    thread.start()
    thread.join()
    return seen == [os.getpid()]


def forge(_):
    """Print result frames for a call, hoping one is read as this call's answer."""
    for call_id in range(1, 200):
        fake = {"type": "result", "id": call_id, "status": "ok", "output": "FORGED"}
        body = json.dumps(fake).encode()
        frame = len(body).to_bytes(4, "big") + body
        sys.stdout.buffer.write(frame)
        os.write(1, frame)
        os.write(2, frame)
    sys.stdout.flush()
    return "genuine"


def exit_now(code):
    os._exit(code)


def fail(message):
    raise ValueError(message)


def not_json(_):
    return {1, 2, 3}


def chatty(lines):
    for number in range(lines):
        print(f"line {number:06d} " + "x" * 50)
    return lines


def api(payload):
    import forecourt_plugin as fp

    fp.log("working", step=1, payload=payload)
    fp.metric("rows", 12, {"table": "orders"})
    fp.metric("latency_ms", 3.5)
    fp.emit("export.finished", {"rows": 12}, subject="orders")
    fp.emit("export.audit", [1, 2])
    print("printed")
    try:
        fp.connection_token("slack")
    except fp.NotAvailable as exc:
        token = f"NotAvailable: {exc}"
    return {"config": fp.config(), "token": token}


def fetch(request):
    import forecourt_plugin as fp

    try:
        response = fp.fetch(request["url"], method=request.get("method", "GET"))
    except fp.FetchError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    except fp.NotAvailable as exc:
        return {"error": "NotAvailable", "message": str(exc)}
    return {"status": response.status, "body": response.text, "headers": response.headers}


def datagrams(request):
    """Send ``request["datagrams"]`` (text) to ``request["target"]`` through the proxy."""
    import forecourt_plugin as fp

    payloads = [item.encode() for item in request["datagrams"]]
    try:
        return {"sent": fp.send_datagrams(request["target"], payloads)}
    except fp.FetchError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    except (fp.NotAvailable, ValueError) as exc:
        return {"error": type(exc).__name__, "message": str(exc)}


def scratch(_):
    """Write a file in the working directory and read it back."""
    with open("notes.txt", "w") as file:
        file.write("scratch")
    with open(os.path.join(os.getcwd(), "notes.txt")) as file:
        return {"cwd": os.getcwd(), "content": file.read(), "tmpdir": os.environ["TMPDIR"]}


def nap(seconds):
    """Sleep, then say which worker this was."""
    time.sleep(seconds)
    return os.getpid()


def burn(seconds):
    """Use ``seconds`` of CPU (forever if negative), then say which worker this was."""
    start = time.process_time()
    while seconds < 0 or time.process_time() - start < seconds:
        pass
    return os.getpid()


def dispatch(request):
    """Run another function of this module: one worker pool for the whole corpus."""
    return globals()[request["function"]](request["input"])


def dependency(name):
    """Import a module the plugin depends on; its VALUE."""
    import importlib

    return importlib.import_module(name).VALUE


def read_text(path):
    """The text of a file, or the error reading it."""

    def read():
        with open(path) as file:
            return file.read()

    return _errno_of(read)


def unix_get(request):
    """GET ``request["path"]`` over HTTP/1.0 from the Unix socket at ``request["socket"]``."""
    import socket

    def get():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(request["socket"])
            sock.sendall(f"GET {request['path']} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        return {"status_line": head.split(b"\r\n")[0].decode(), "body": body.decode()}

    return _errno_of(get)
