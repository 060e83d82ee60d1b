"""The keepmq command line: --version, --check-config and its error
messages, includes, -o overrides, refusing to start with a bad
configuration, --config-doc (which must equal docs/configuration.md),
SIGTERM with clients connected, log.file and log.level."""
import os
import re
import signal
import subprocess

import pytest

import mqttraw as R
from conftest import KEEPMQ_BIN, ROOT, free_port, wait_port


def run(*args, cwd=None, timeout=30):
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    return subprocess.run([KEEPMQ_BIN, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def no_sanitizer(text):
    assert "Sanitizer" not in text and "runtime error:" not in text, text


def test_version():
    p = run("--version")
    assert p.returncode == 0
    assert re.fullmatch(r"keepmq \d+\.\d+\.\d+\S*\n", p.stdout), p.stdout


def test_help_and_bad_option():
    p = run("--help")
    assert p.returncode == 0 and "--check-config" in p.stdout
    p = run("--no-such-option")
    assert p.returncode == 2 and "Usage" in p.stderr
    p = run("stray-argument")
    assert p.returncode == 2 and "stray-argument" in p.stderr


def test_check_config_ok(tmpdir_path):
    conf = write(os.path.join(tmpdir_path, "good.conf"),
                 "# a comment\n\nlistener.tcp.default = 127.0.0.1:1883\n"
                 "mqtt.max_packet_size = 512KB\nmqtt.max_inflight = 16\n"
                 "mqtt.mqueue_drop = drop_newest\nmqtt.wildcard_subscription = off\n"
                 "mqtt.session_expiry_interval = infinity\nnode.name = \"a@b\"\n")
    p = run("--check-config", "-c", conf)
    assert p.returncode == 0, p.stderr
    assert "configuration OK" in p.stdout
    assert p.stderr == ""
    # built-in defaults alone are fine too
    p = run("--check-config")
    assert p.returncode == 0 and "configuration OK" in p.stdout


# (line, key, what the message must also say)
ERRORS = [
    ("mqtt.max_pakcet_size = 1MB", "mqtt.max_pakcet_size", 'did you mean "mqtt.max_packet_size"'),
    ("mqtt.max_packet_size = 1XB", "mqtt.max_packet_size", "1XB"),
    ("mqtt.max_inflight = 0", "mqtt.max_inflight", "minimum"),
    ("mqtt.max_qos_allowed = 3", "mqtt.max_qos_allowed", "maximum"),
    ("mqtt.mqueue_drop = drop_sometimes", "mqtt.mqueue_drop", "drop_oldest"),
    ("log.level = loud", "log.level", "debug"),
    ("mqtt.retain_available = maybe", "mqtt.retain_available", "boolean"),
    ("mqtt.idle_timeout = 5 parsecs", "mqtt.idle_timeout", "parsecs"),
    ("this line has no equals sign", None, '"="'),
]


@pytest.mark.parametrize("line,key,extra", ERRORS, ids=[e[0].split()[0] for e in ERRORS])
def test_check_config_single_error(tmpdir_path, line, key, extra):
    conf = write(os.path.join(tmpdir_path, "bad.conf"),
                 "listener.tcp.default = 127.0.0.1:1883\n# comment\n" + line + "\n")
    p = run("--check-config", "-c", conf)
    assert p.returncode == 2
    assert "configuration OK" not in p.stdout
    msgs = [m for m in p.stderr.splitlines() if f"{conf}:3:" in m]
    assert len(msgs) == 1, p.stderr
    if key:
        assert key in msgs[0]
    assert extra in msgs[0], msgs[0]


def test_several_errors_reported_at_once(tmpdir_path):
    lines = ["listener.tcp.default = 127.0.0.1:1883"] + [e[0] for e in ERRORS]
    conf = write(os.path.join(tmpdir_path, "many.conf"), "\n".join(lines) + "\n")
    p = run("--check-config", "-c", conf)
    assert p.returncode == 2
    for i, (line, key, extra) in enumerate(ERRORS):
        msg = [m for m in p.stderr.splitlines() if f"{conf}:{i + 2}:" in m]
        assert len(msg) == 1, (line, p.stderr)
        assert key is None or key in msg[0]
    assert "not starting" in p.stderr


def test_listener_options_without_address(tmpdir_path):
    conf = write(os.path.join(tmpdir_path, "lst.conf"),
                 "listener.tcp.default = 127.0.0.1:1883\n"
                 "listener.tcp.extra.max_connections = 5\n")
    p = run("--check-config", "-c", conf)
    assert p.returncode == 2
    # the error names where the listener's options were given: file:line
    assert re.search(re.escape(conf) + r":2: listener\.tcp\.extra\b.*no address", p.stderr), \
        p.stderr
    # with the address it is fine, wherever it appears
    write(conf, "listener.tcp.extra.max_connections = 5\nlistener.tcp.extra = 127.0.0.1:1884\n")
    assert run("--check-config", "-c", conf).returncode == 0


def test_include_relative_to_including_file(tmpdir_path):
    base = os.path.join(tmpdir_path, "etc")
    main = write(os.path.join(base, "keepmq.conf"),
                 "mqtt.max_inflight = 32\ninclude backends/*.conf\n")
    write(os.path.join(base, "backends", "a.conf"), "mqtt.max_inflight = 7\n")
    write(os.path.join(base, "backends", "b.conf"), "mqtt.max_qos_allowed = 1\n")
    write(os.path.join(base, "backends", "ignored.txt"), "not a config file\n")
    # run from elsewhere: the glob is relative to keepmq.conf, not the cwd
    p = run("--check-config", "-c", main, cwd="/")
    assert p.returncode == 0, p.stderr
    # an error inside an included file names that file and line
    bad = write(os.path.join(base, "backends", "c.conf"),
                "mqtt.max_inflight = 8\nmqtt.max_inflihgt = 9\n")
    p = run("--check-config", "-c", main, cwd="/")
    assert p.returncode == 2
    assert f"{bad}:2:" in p.stderr and "mqtt.max_inflihgt" in p.stderr, p.stderr
    # a plain include of a missing file is an error; a glob matching nothing is not
    write(main, "include nothing/*.conf\n")
    assert run("--check-config", "-c", main).returncode == 0
    write(main, "include missing.conf\n")
    p = run("--check-config", "-c", main)
    assert p.returncode == 2 and "missing.conf" in p.stderr


def test_included_keys_are_applied(broker_factory, tmpdir_path):
    b = broker_factory(start=False)
    base = os.path.join(tmpdir_path, "inc")
    b.conf_path = write(os.path.join(base, "main.conf"),
                        "mqtt.max_inflight = 32\ninclude conf.d/*.conf\n")
    write(os.path.join(base, "conf.d", "10-listener.conf"),
          f"listener.tcp.default = 127.0.0.1:{b.port}\n")
    write(os.path.join(base, "conf.d", "20-limits.conf"),
          "mqtt.max_inflight = 7\nmqtt.max_topic_alias = 3\n")
    b.start()
    r = R.Raw(b.port, version=5)
    ack = r.connect("inc")
    assert ack.props["receive_maximum"] == 7
    assert ack.props["topic_alias_maximum"] == 3
    r.close()


def test_command_line_overrides(broker_factory, tmpdir_path):
    b = broker_factory(conf="mqtt.max_inflight = 7", args=["-o", "mqtt.max_inflight=9",
                                                          "--set", "mqtt.max_topic_alias = 5"])
    r = R.Raw(b.port, version=5)
    ack = r.connect("ovr")
    assert ack.props["receive_maximum"] == 9
    assert ack.props["topic_alias_maximum"] == 5
    r.close()
    p = run("--check-config", "-o", "mqtt.max_inflight=abc", "-o", "novalue")
    assert p.returncode == 2
    assert "<command line>:1:" in p.stderr and "mqtt.max_inflight" in p.stderr
    assert "<command line>:2:" in p.stderr and "novalue" in p.stderr


def test_broker_refuses_to_start_with_bad_config(tmpdir_path):
    port = free_port()
    conf = write(os.path.join(tmpdir_path, "bad.conf"),
                 f"listener.tcp.default = 127.0.0.1:{port}\nmqtt.max_packet_size = 1XB\n")
    p = run("-c", conf, timeout=20)
    assert p.returncode == 2
    assert f"{conf}:2:" in p.stderr and "not starting" in p.stderr
    no_sanitizer(p.stderr)
    # a missing configuration file too
    p = run("-c", os.path.join(tmpdir_path, "nope.conf"), timeout=20)
    assert p.returncode == 2 and "nope.conf" in p.stderr


def test_config_doc_matches_committed_docs():
    p = run("--config-doc")
    assert p.returncode == 0
    with open(os.path.join(ROOT, "docs", "configuration.md")) as f:
        committed = f.read()
    assert p.stdout == committed, (
        "docs/configuration.md is out of date: regenerate it with "
        "`keepmq --config-doc > docs/configuration.md`")
    # every key of the broker is in it
    for key in ("mqtt.max_packet_size", "listener.tcp.<name>", "broker.sys_interval",
                "node.name", "log.file", "mqtt.shared_subscription_strategy"):
        assert f"`{key}`" in committed


def test_sigterm_with_many_clients(broker_factory):
    b = broker_factory(workers=2)
    v5 = [R.raw_connect(b.port, f"term5-{i}", version=5) for i in range(30)]
    v3 = [R.raw_connect(b.port, f"term3-{i}", version=4) for i in range(30)]
    for i, c in enumerate(v5 + v3):
        assert R.sub_ack(c, [(f"term/{i}", 1)]) == [1]
    b.proc.send_signal(signal.SIGTERM)
    assert b.proc.wait(timeout=8) == 0  # raises if it takes longer
    for c in v5:
        p = c.recv(2)
        assert (p.type, p.rc) == (R.DISCONNECT, 0x8B)
        assert c.closed(1)
    for c in v3:
        assert c.closed(1)
    b.stop()
    assert "SIGTERM" in b.log()
    no_sanitizer(b.log())
    assert not wait_port(b.port, timeout=0.2)


def test_log_file(broker_factory, tmpdir_path):
    path = os.path.join(tmpdir_path, "logs", "keepmq.log")
    os.makedirs(os.path.dirname(path))
    b = broker_factory(conf=f"log.file = {path}\nlog.level = debug", workers=2)
    R.wait_until(lambda: os.path.exists(path) and "started" in open(path).read(),
                 what="the start-up line in log.file")
    r = R.raw_connect(b.port, "logged-client", version=4)
    R.wait_until(lambda: "logged-client" in open(path).read(), what="the connect in log.file")
    r.close()
    b.stop()
    text = open(path).read()
    assert "stopped" in text
    # the lines went to the file, not to standard error
    assert "logged-client" not in b.log()
    # a log file that cannot be opened stops the broker from starting
    p = run("-o", "log.file=/nonexistent/dir/k.log", "-o",
            f"listener.tcp.default=127.0.0.1:{free_port()}", timeout=20)
    assert p.returncode != 0 and "/nonexistent/dir/k.log" in p.stderr


@pytest.mark.parametrize("level,shown", [("debug", True), ("info", False)])
def test_log_level_debug_logs_connects(broker_factory, level, shown):
    b = broker_factory(conf=f"log.level = {level}", workers=2)
    r = R.raw_connect(b.port, "debug-me", version=5)
    R.roundtrip(b.port, 5)  # more traffic; by now the connect is logged
    r.send(R.disconnect(5))
    assert r.closed()
    r.close()
    b.stop()
    lines = [ln for ln in b.log().splitlines() if "debug-me" in ln]
    if shown:
        assert any("connected" in ln and "[debug]" in ln for ln in lines), b.log()
    else:
        assert lines == []
