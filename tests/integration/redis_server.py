"""A private redis-server process for one test (the Redis store adapter's).

    srv = RedisServer(dir)      # starts it on a free port, data and log in dir
    srv.client()                # a redis.Redis (decode_responses=False)
    srv.restart()               # stop, then start again on the same port and dir
    srv.kill9()                 # SIGKILL (start() brings it back)
    srv.stop()                  # SIGTERM (SHUTDOWN NOSAVE semantics: nothing is saved)

Nothing is persisted (--save '' --appendonly no): a restart starts empty.
"""
import os
import signal
import socket
import subprocess
import time

import redis

REDIS_SERVER = os.environ.get("KEEPMQ_REDIS_SERVER", "/usr/bin/redis-server")


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class RedisServer:
    def __init__(self, dir, port=None):
        self.dir = os.path.abspath(dir)
        os.makedirs(self.dir, exist_ok=True)
        self.host = "127.0.0.1"
        self.fixed_port = port is not None
        self.port = port if port is not None else _free_port()
        self.proc = None
        self.log_path = os.path.join(self.dir, "redis.log")
        self.start()

    def _args(self):
        return [REDIS_SERVER, "--bind", self.host, "--port", str(self.port), "--dir", self.dir,
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--protected-mode", "yes", "--logfile", self.log_path]

    def start(self, timeout=10.0):
        """Starts the server (if it is not running) and waits for PING. A
        port taken in the meantime by someone else is replaced by another free
        one, unless the port was given (or the server ran before: restart()
        keeps the port)."""
        if self.alive():
            return self
        for attempt in range(5):
            self.proc = subprocess.Popen(self._args(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         cwd=self.dir)
            if self._wait_ping(timeout):
                self.fixed_port = True  # from now on restart() keeps it
                return self
            self._reap()
            if self.fixed_port or "Address already in use" not in self.log():
                break
            self.port = _free_port()
        raise RuntimeError(f"redis-server did not start on port {self.port}; log:\n"
                           f"{self.log()[-3000:]}")

    def _wait_ping(self, timeout):
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                return False
            try:
                c = self.client(socket_timeout=1.0)
                try:
                    if c.ping():
                        return True
                finally:
                    c.close()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                    redis.exceptions.BusyLoadingError):
                pass
            time.sleep(0.02)
        return False

    def _reap(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def client(self, **kw):
        kw.setdefault("socket_timeout", 30.0)
        return redis.Redis(host=self.host, port=self.port, db=0, decode_responses=False, **kw)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, timeout=15.0):
        """SIGTERM and wait (SIGKILL after timeout). Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self):
        self.stop()
        return self.start()
