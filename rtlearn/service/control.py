"""The control socket: a REP server thread in the daemon and `ControlClient` for `rtlearn ctl`.

Every request gets exactly one reply; a bad one gets an error reply with a machine-readable
reason, never an exception in the daemon. A non-loopback endpoint is only allowed with CURVE
keys (checked by the config), optionally restricted to listed client keys.
"""

from __future__ import annotations

import logging
import socket
import threading
from urllib.parse import urlparse

import zmq

from rtlearn.learner import StateFileError
from rtlearn.protocol.client import use_endpoint
from rtlearn.protocol.schema import (DEFAULT_CONTROL_ENDPOINT, MAX_CONTROL_FRAME, ControlError,
                                     ProtocolError,
                                     decode_reply, decode_request, encode_error, encode_reply,
                                     encode_request)
from rtlearn.service.contexts import UnknownContextError
from rtlearn.service.snapshots import SnapshotPathError

log = logging.getLogger("rtlearn.service")


class ControlServer(threading.Thread):
    """Binds at construction (a bind failure raises there, before the daemon serves);
    `start()` serves, `stop()` ends and closes; `close()` for one that never started."""

    def __init__(self, daemon, ctx: zmq.Context):
        super().__init__(name="rtlearn-control", daemon=True)
        self.daemon_ref = daemon
        sec = daemon.cfg["security"]
        self._auth = None
        self.sock = ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        # ZeroMQ refuses a longer request before it is in memory (and drops that connection:
        # acceptable here, unlike on the state socket); decode_request's own check then never
        # sees an oversized frame from the socket
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_CONTROL_FRAME)
        try:
            if sec["curve_secret_key"]:
                if sec["curve_clients"]:
                    self._auth = _start_authenticator(ctx, sec["curve_clients"])
                self.sock.curve_server = True
                self.sock.curve_secretkey = sec["curve_secret_key"].encode()
                self.sock.curve_publickey = sec["curve_public_key"].encode()
            use_endpoint(self.sock, daemon.cfg["endpoints"]["control"], bind=True)
        except BaseException:
            self.close()
            raise
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(5)
        else:
            self.close()

    def close(self) -> None:
        self.sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                if not self.sock.poll(100):
                    continue
                frames = self.sock.recv_multipart()
                self.sock.send(self.answer(frames[0] if len(frames) == 1 else b""))
        finally:
            self.close()

    def answer(self, frame: bytes) -> bytes:
        try:
            cmd, args = decode_request(frame)
        except ProtocolError as e:
            return encode_error(e.reason, str(e))
        try:
            if cmd == "status":
                return encode_reply(self.daemon_ref.status())
            return encode_reply(self.daemon_ref.command(cmd, args))
        except SnapshotPathError as e:
            return encode_error("bad_path", str(e))
        except UnknownContextError as e:
            return encode_error("unknown_context", str(e))
        except StateFileError as e:
            return encode_error("bad_snapshot", str(e))
        except (ValueError, OSError, TimeoutError) as e:
            return encode_error("failed", f"{cmd}: {e}")
        except Exception as e:  # the daemon survives whatever a command does
            log.exception("control command %s failed", cmd)
            return encode_error("internal", f"{cmd}: {type(e).__name__}: {e}")


def _start_authenticator(ctx: zmq.Context, allowed: list[str]):
    from zmq.auth.thread import ThreadAuthenticator

    keys = {k.encode() for k in allowed}

    class Allowed:
        def callback(self, domain, key):
            return key in keys

    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=Allowed())
    return auth


def not_listening(endpoint: str, timeout: float = 1.0) -> str | None:
    """Why no daemon can be listening at `endpoint` (a refused connection, no socket file),
    found within `timeout` s; None when something accepts connections there or it cannot
    be told (a silent firewall, a transport other than tcp / ipc). A ZeroMQ REQ would wait
    its whole timeout instead: it retries a refused connection silently."""
    try:
        if endpoint.startswith("ipc://"):
            path = endpoint[len("ipc://"):]
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect("\0" + path[1:] if path.startswith("@") else path)
        elif endpoint.startswith("tcp://"):
            url = urlparse(endpoint)
            with socket.create_connection((url.hostname, url.port), timeout):
                pass
    except (ConnectionRefusedError, FileNotFoundError) as e:
        return f"nothing listens on {endpoint} ({e.strerror})"
    except (OSError, ValueError):  # timeout, unresolvable name, ...: the request decides
        return None
    return None


class ControlClient:
    """Request/reply with a timeout; a timed-out socket is replaced (REQ cannot resend)."""

    def __init__(self, endpoint: str = DEFAULT_CONTROL_ENDPOINT, timeout: float = 10.0,
                 server_key: str | None = None, client_keys: tuple[str, str] | None = None):
        self.endpoint, self.timeout = endpoint, timeout
        self.server_key, self.client_keys = server_key, client_keys
        self._ctx = zmq.Context.instance()
        self._sock = None

    def _open(self):
        s = self._ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        if self.server_key:
            public, secret = self.client_keys or zmq.curve_keypair()
            s.curve_serverkey = self.server_key.encode()
            s.curve_publickey = public if isinstance(public, bytes) else public.encode()
            s.curve_secretkey = secret if isinstance(secret, bytes) else secret.encode()
        use_endpoint(s, self.endpoint)
        return s

    def request_raw(self, frame: bytes) -> bytes:
        if self._sock is None:
            self._sock = self._open()
        self._sock.send(frame)
        if not self._sock.poll(int(self.timeout * 1000)):
            self._sock.close(linger=0)
            self._sock = None
            raise TimeoutError(f"no reply from {self.endpoint} within {self.timeout:g} s")
        return self._sock.recv()

    def request(self, cmd: str, **args):
        """The command's result; raises ControlError for an error reply, TimeoutError."""
        return decode_reply(self.request_raw(encode_request(cmd, **args)))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["ControlServer", "ControlClient", "ControlError"]
