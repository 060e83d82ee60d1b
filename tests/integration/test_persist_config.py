"""Persistence: bad rule configuration is refused, naming file, line and key.

`backend.<db>.hook.<point>.<n> = {json}` lines are checked when read (JSON,
keys, the function and the hook point it may run on, raw statements) and,
once every file is read, against the pools. Any error makes
`keepmq --check-config` and a normal start exit with status 2, printing
`file:line: key: message` (a normal start then does not listen). Written
against the store adapters (the `store` fixture) so every backend runs it;
functions are named as in the SQL family and mapped with store.fn(), raw
actions are the adapter's store.record(). The checks of raw SQL text take
the `sql_store` fixture: SQL backends only.
"""
import json
import os
import subprocess
import time

import mqttraw as R
from conftest import KEEPMQ_BIN, ROOT, free_port, wait_port



def function(store, name):
    """The action of a built-in function named as in the SQL family."""
    return {"function": store.fn(name)}


def publish_fn(store):
    return function(store, "on_message_publish")


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


def rule_line(store, point, n, rule):
    """A rule line with exactly this JSON text (a dict is dumped)."""
    text = rule if isinstance(rule, str) else json.dumps(rule)
    return f"backend.{store.name}.hook.{point}.{n} = {text}\n"


def bad_config(tmpdir, store, bad, before="", after="", pools=("pool1",)):
    """A configuration file: a listener, the pools, `before`, the line `bad`,
    `after`. Returns (path, line number of `bad`)."""
    head = f"# keepmq test configuration\nlistener.tcp.default = 127.0.0.1:{free_port()}\n"
    for p in pools:
        head += store.conf(pool=p)
    head += before
    line = head.count("\n") + 1
    path = write(os.path.join(tmpdir, "bad.conf"), head + bad + after)
    return path, line


def refused(path, line, key, *fragments):
    """--check-config refuses the file with `path:line: key: ...` naming
    every fragment; returns that error line."""
    p = run("--check-config", "-c", path)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    no_sanitizer(p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if f"{path}:{line}: {key}:" in ln]
    assert lines, f"no error for {path}:{line}: {key}: in:\n{p.stderr}"
    for frag in fragments:
        assert any(frag in ln for ln in lines), f"{frag!r} not in {lines}"
    assert "configuration OK" not in p.stdout
    return lines[0]


def key(store, point="message.publish", n=1):
    return f"backend.{store.name}.hook.{point}.{n}"


# ---------------------------------------------------------------- the JSON

def test_invalid_json(store, tmpdir_path):
    bad = rule_line(store, "message.publish", 1,
                    '{"topic": "#", "action": {"function": "on_message_publish"}, "pool": "pool1"')
    path, line = bad_config(tmpdir_path, store, bad)
    refused(path, line, key(store), "JSON")


def test_seeds_rule_with_missing_quote(store, tmpdir_path):
    """The seeds' Cassandra example lacks a quote before `action`: refused,
    not guessed at."""
    bad = rule_line(store, "message.publish", 1,
                    '{"topic": "#", action": {"function": "on_message_publish"}, "pool": "pool1"}')
    path, line = bad_config(tmpdir_path, store, bad)
    refused(path, line, key(store), "JSON")


def test_json_not_an_object_and_duplicate_keys(store, tmpdir_path):
    path, line = bad_config(tmpdir_path, store,
                            rule_line(store, "message.publish", 1, '["on_message_publish"]'))
    refused(path, line, key(store))
    path, line = bad_config(tmpdir_path, store, rule_line(
        store, "message.publish", 1,
        '{"action": {"function": "on_message_publish"}, "pool": "pool1", "pool": "pool1"}'))
    refused(path, line, key(store), "pool")


# ---------------------------------------------------------------- functions

def test_unknown_function_lists_the_known_ones(store, tmpdir_path):
    bad = store.rule("message.publish", 1, {"function": "on_message_publsh"}, topic="#")
    path, line = bad_config(tmpdir_path, store, bad)
    err = refused(path, line, key(store), "on_message_publsh")
    for known in ("on_client_connected", "on_client_disconnected", "on_message_publish",
                  "on_message_acked"):
        assert store.fn(known) in err, err


def test_function_on_the_wrong_hook_point(store, tmpdir_path):
    fetch = store.fn("on_message_fetch")
    bad = store.rule("message.publish", 1, {"function": fetch}, topic="#")
    path, line = bad_config(tmpdir_path, store, bad)
    err = refused(path, line, key(store), fetch, "message.publish")
    assert "session.subscribed" in err, err  # where it may run
    bad = store.rule("message.publish", 1, function(store, "on_client_connected"), topic="#")
    path, line = bad_config(tmpdir_path, store, bad)
    err = refused(path, line, key(store), "on_client_connected", "message.publish")
    assert "client.connected" in err, err
    bad = store.rule("client.connected", 2, publish_fn(store))
    path, line = bad_config(tmpdir_path, store, bad)
    refused(path, line, key(store, "client.connected", 2), "on_message_publish")


def test_action_with_function_and_raw_statement(store, tmpdir_path):
    action = dict(store.record("conn", clientid="${clientid}"))
    (raw,) = action
    action["function"] = store.fn("on_client_connected")
    bad = store.rule("client.connected", 1, action)
    path, line = bad_config(tmpdir_path, store, bad)
    refused(path, line, key(store, "client.connected"), "function", raw)


def test_action_missing_or_malformed(store, tmpdir_path):
    for rule in ({"topic": "#", "pool": "pool1"},                       # no action
                 {"action": "on_message_publish", "pool": "pool1"},     # not an object
                 {"action": {}, "pool": "pool1"},                       # empty
                 {"action": {"function": 5}, "pool": "pool1"},
                 {"action": {"function": "on_message_publish", "functoin": "x"},
                  "pool": "pool1"}):
        path, line = bad_config(tmpdir_path, store, rule_line(store, "message.publish", 1, rule))
        refused(path, line, key(store))


# ---------------------------------------------------------------- pools

def test_unknown_pool(store, tmpdir_path):
    bad = store.rule("message.publish", 1, publish_fn(store), topic="#", pool="pool9")
    path, line = bad_config(tmpdir_path, store, bad)
    refused(path, line, key(store), "pool9")


def test_rule_without_pool_when_the_backend_has_two(store, tmpdir_path):
    bad = rule_line(store, "message.publish", 1, {"topic": "#", "action": publish_fn(store)})
    path, line = bad_config(tmpdir_path, store, bad, pools=("pool1", "pool2"))
    refused(path, line, key(store), "pool")
    # with one pool it is that pool
    path, _ = bad_config(tmpdir_path, store, bad)
    p = run("--check-config", "-c", path)
    assert p.returncode == 0, p.stderr


def test_rule_without_any_pool_configured(store, tmpdir_path):
    bad = store.rule("message.publish", 1, publish_fn(store), topic="#")
    path, line = bad_config(tmpdir_path, store, bad, pools=())
    refused(path, line, key(store), "pool")


def test_pool_configured_after_the_rule_is_fine(store, tmpdir_path):
    good = store.rule("message.publish", 1, publish_fn(store), topic="#", pool="late")
    path, _ = bad_config(tmpdir_path, store, good, pools=(), after=store.conf(pool="late"))
    p = run("--check-config", "-c", path)
    assert p.returncode == 0, p.stderr


def test_accepted_variants(store, tmpdir_path):
    """What the seeds' examples do is accepted: on_subscribe_lookup on
    session.created (the DynamoDB example), rules without a topic, offline
    limits of "infinity", rule numbers that are not consecutive."""
    good = (store.rule("session.created", 1, function(store, "on_subscribe_lookup"))
            + store.rule("client.connected", 7, function(store, "on_subscribe_lookup"))
            + store.rule("session.subscribed", 30, function(store, "on_message_fetch"), topic="#",
                         offline_opts={"max_returned_count": "infinity",
                                       "time_range": "infinity"})
            + store.rule("message.publish", 100, publish_fn(store)))
    path, _ = bad_config(tmpdir_path, store, good)
    p = run("--check-config", "-c", path)
    assert p.returncode == 0, p.stderr


# ---------------------------------------------------------------- rule keys

def test_unknown_key_in_rule(store, tmpdir_path):
    bad = store.rule("message.publish", 1, publish_fn(store), topics="#")
    path, line = bad_config(tmpdir_path, store, bad)
    refused(path, line, key(store), "topics")


def test_invalid_topic_filter(store, tmpdir_path):
    for topic in ("a/#/b", "a+/b", ""):
        bad = store.rule("message.publish", 1, publish_fn(store), topic=topic)
        path, line = bad_config(tmpdir_path, store, bad)
        refused(path, line, key(store), "topic")


def test_bad_offline_opts(store, tmpdir_path):
    fetch = function(store, "on_message_fetch")
    for opts, frag in (({"max_returned_count": "lots"}, "max_returned_count"),
                       ({"max_returned_count": -1}, "max_returned_count"),
                       ({"time_range": "2 fortnights"}, "time_range"),
                       ({"time_range": True}, "time_range"),
                       ({"max_count": 5}, "max_count"),
                       ("2h", "offline_opts")):
        bad = store.rule("session.subscribed", 1, fetch, topic="#", offline_opts=opts)
        path, line = bad_config(tmpdir_path, store, bad)
        refused(path, line, key(store, "session.subscribed"), frag)
    good = store.rule("session.subscribed", 1, fetch, topic="#",
                      offline_opts={"max_returned_count": 500, "time_range": "2h"})
    path, _ = bad_config(tmpdir_path, store, good)
    p = run("--check-config", "-c", path)
    assert p.returncode == 0, p.stderr


def test_offline_opts_only_on_fetch(store, tmpdir_path):
    """offline_opts anywhere but on a fetch function would be ignored: refused."""
    bad = store.rule("message.publish", 1, publish_fn(store), topic="#",
                     offline_opts={"max_returned_count": 5})
    path, line = bad_config(tmpdir_path, store, bad)
    refused(path, line, key(store), "applies only to on_message_fetch")


# ---------------------------------------------------------------- raw statements

def test_unknown_variable_in_raw_statement(store, tmpdir_path):
    bad = store.rule("client.connected", 1,
                     store.record("conn", clientid="${clientid}", x="${clinetid}"))
    path, line = bad_config(tmpdir_path, store, bad)
    err = refused(path, line, key(store, "client.connected"), "clinetid")
    assert "clientid" in err.replace("${clinetid}", "")  # names the known ones


def test_variable_inside_quotes_in_raw_statement(sql_store, tmpdir_path):
    store, raw = sql_store, "sql"
    for stmt in ("insert into conn(clientid) values('${clientid}')",
                 'insert into conn(clientid) values("${clientid}")',
                 "insert into conn(clientid, topic) values(${clientid}, 'x/${topic}')"):
        bad = store.rule("client.connected", 1, {raw: [stmt]})
        path, line = bad_config(tmpdir_path, store, bad)
        refused(path, line, key(store, "client.connected"), "quote")
    # quotes elsewhere are fine
    good = store.rule("client.connected", 1,
                      {raw: ["insert into conn(clientid, note) values(${clientid}, 'it''s {fine}')"]})
    path, _ = bad_config(tmpdir_path, store, good)
    p = run("--check-config", "-c", path)
    assert p.returncode == 0, p.stderr


def test_sql_own_parameters_in_raw_statement(sql_store, tmpdir_path):
    """SQL's own parameters (?, ?NNN, :name, @name, $name) would take the
    values meant for the ${name}s, which are bound in order, and shift the
    rest: refused when the line is read, saying where and why."""
    store = sql_store
    # PostgreSQL's only parameters are $N (there ? is a jsonb operator);
    # MySQL's only one is ? (@name is a variable, :name and $name plain text)
    params = {"pgsql": ["$1", "$2"], "mysql": ["?", "?1"]}.get(
        store.name, ["?", "?1", ":name", "@name", "$name"])
    for param in params:
        bad = store.rule("client.connected", 1,
                         {"sql": [f"insert into conn(clientid, note) values(${{clientid}}, {param})"]})
        path, line = bad_config(tmpdir_path, store, bad)
        refused(path, line, key(store, "client.connected"), param, "offset 53", "${name}")
    # inside a string literal, a quoted name or a comment it is data
    good = store.rule("client.connected", 1, {"sql": [
        "insert into conn(clientid, note) values(${clientid}, ':x @y ?1') -- why?"]})
    path, _ = bad_config(tmpdir_path, store, good)
    p = run("--check-config", "-c", path)
    assert p.returncode == 0, p.stderr


def test_second_statement_in_one_raw_string(sql_store, tmpdir_path):
    """Only the first statement of a string would run: a second one is
    refused; a trailing ';' and comments are fine. A ${name} in a comment
    would never be bound: refused too."""
    store = sql_store
    for stmt, frag in (("insert into conn(clientid) values(${clientid}); delete from conn",
                        "second statement"),
                       ("insert into conn(clientid) values(${clientid});delete from conn;",
                        "second statement"),
                       ("insert into conn(clientid) values(1) -- was ${clientid}", "comment"),
                       ("insert into conn(clientid) values(1) /* ${clientid} */", "comment"),
                       ("insert into conn(clientid) values(1) /* open", "*/"),
                       ("-- only a comment", "empty")):
        bad = store.rule("client.connected", 1, {"sql": ["delete from conn", stmt]})
        path, line = bad_config(tmpdir_path, store, bad)
        refused(path, line, key(store, "client.connected"), "statement 2", frag)
    good = store.rule("client.connected", 1, {"sql": [
        "insert into conn(clientid) values(${clientid}); -- one; only",
        "/* it's ${fine}? no: */ delete from conn where note = ';' ;\n"]})
    path, line = bad_config(tmpdir_path, store, good)
    p = run("--check-config", "-c", path)
    assert p.returncode == 2, p.stderr  # the ${fine} in the comment
    refused(path, line, key(store, "client.connected"), "comment")
    good = store.rule("client.connected", 1, {"sql": [
        "insert into conn(clientid) values(${clientid}); -- one; only",
        "/* it's fine? */ delete from conn where note = ';' ;\n"]})
    path, _ = bad_config(tmpdir_path, store, good)
    p = run("--check-config", "-c", path)
    assert p.returncode == 0, p.stderr


def test_raw_statement_runs_with_trailing_semicolon_and_comment(sql_store, broker_factory):
    """What is accepted also runs: a trailing ';' and comments reach the
    database as written, and the value is bound where the ${name} was."""
    store = sql_store
    store.ensure_schema()
    store.execute("create table conn_seen (clientid text, note text)")
    conf = store.conf() + store.rule("client.connected", 1, {"sql": [
        "/* who; when? */ insert into conn_seen(clientid, note) "
        "values(${clientid}, 'it''s ?') ; -- done?"]})
    b = broker_factory(conf=conf)
    r = R.raw_connect(b.port, "semi-1")
    r.close()
    deadline = time.time() + 10
    rows = []
    while time.time() < deadline:
        rows = store.query("select clientid, note from conn_seen")
        if rows:
            break
        time.sleep(0.05)
    assert rows == [{"clientid": "semi-1", "note": "it's ?"}]


# ---------------------------------------------------------------- keys a backend has no use for

def test_rule_keys_of_other_backends_are_refused(store, tmpdir_path):
    """`expired_time` (Redis's) and `payload_format` (MongoDB's) are errors on
    any other backend, not silently ignored."""
    for k, v, owner in (("expired_time", 3600, "redis"),
                        ("payload_format", "mongo_json", "mongo")):
        if store.name == owner:
            continue
        bad = store.rule("message.publish", 1, publish_fn(store), topic="#", **{k: v})
        path, line = bad_config(tmpdir_path, store, bad)
        refused(path, line, key(store), f'"{k}"', "remove it")


def test_topic_on_hook_point_without_topic_is_refused(store, tmpdir_path):
    """client.connected, client.disconnected and session.created events carry
    no topic: a rule with a "topic" would never run, so it is an error."""
    for point, fn in (("client.connected", "on_client_connected"),
                      ("client.disconnected", "on_client_disconnected"),
                      ("session.created", "on_subscribe_lookup")):
        bad = store.rule(point, 1, function(store, fn), topic="#")
        path, line = bad_config(tmpdir_path, store, bad)
        refused(path, line, key(store, point), "topic", point, "never run")


# ---------------------------------------------------------------- hook points

def test_unknown_hook_point(store, tmpdir_path):
    bad = store.rule("client.conected", 1, function(store, "on_client_connected"))
    path, line = bad_config(tmpdir_path, store, bad)
    err = refused(path, line, key(store, "client.conected"), "client.conected")
    assert "client.connected" in err.replace("client.conected", ""), err


def test_bad_rule_number(store, tmpdir_path):
    bad = store.rule("message.publish", "first", publish_fn(store), topic="#")
    path, line = bad_config(tmpdir_path, store, bad)
    refused(path, line, f"backend.{store.name}.hook.message.publish.first", "first")


# ---------------------------------------------------------------- files and lines

def test_every_bad_rule_is_reported(store, tmpdir_path):
    head = f"listener.tcp.default = 127.0.0.1:{free_port()}\n" + store.conf()
    rules = [(store.rule("message.publish", 1, {"function": "nope"}, topic="#"), True),
             (store.rule("message.publish", 2, publish_fn(store), topic="#"), False),
             (store.rule("message.publish", 3, publish_fn(store), topic="#", pool="gone"), True),
             (rule_line(store, "client.connected", 1, "{"), True)]
    path = write(os.path.join(tmpdir_path, "many.conf"), head + "".join(r for r, _ in rules))
    p = run("--check-config", "-c", path)
    assert p.returncode == 2
    first = head.count("\n") + 1
    for i, (text, is_bad) in enumerate(rules):
        k = text.split(" = ")[0]
        reported = f"{path}:{first + i}: {k}:" in p.stderr
        assert reported == is_bad, (first + i, k, p.stderr)


def test_rule_in_included_file_names_that_file_and_line(store, tmpdir_path):
    base = os.path.join(tmpdir_path, "inc")
    main = write(os.path.join(base, "keepmq.conf"),
                 f"listener.tcp.default = 127.0.0.1:{free_port()}\n"
                 "mqtt.max_inflight = 16\n"
                 "include backends/*.conf\n")
    write(os.path.join(base, "backends", "10-pool.conf"), store.conf())
    rules = ("# rules\n\n"
             + store.rule("message.publish", 1, publish_fn(store), topic="#")
             + store.rule("message.publish", 2, function(store, "on_message_fetch"),
                          topic="#"))
    bad = write(os.path.join(base, "backends", "20-rules.conf"), rules)
    p = run("--check-config", "-c", main, cwd="/")
    assert p.returncode == 2, p.stderr
    assert f"{bad}:4: {key(store, 'message.publish', 2)}:" in p.stderr, p.stderr
    assert "keepmq.conf:" not in p.stderr, p.stderr
    # an unknown pool is found after all files are read: still the rule's file and line
    write(bad, "\n" + store.rule("message.publish", 1, publish_fn(store), topic="#", pool="pool7"))
    p = run("--check-config", "-c", main, cwd="/")
    assert p.returncode == 2, p.stderr
    assert f"{bad}:2: {key(store, 'message.publish', 1)}:" in p.stderr, p.stderr
    assert "pool7" in p.stderr


def test_normal_start_with_bad_rule_exits_2_without_listening(store, tmpdir_path):
    port = free_port()
    head = f"listener.tcp.default = 127.0.0.1:{port}\n" + store.conf()
    line = head.count("\n") + 1  # the rule's (SQLite: 4)
    path = write(os.path.join(tmpdir_path, "bad.conf"),
                 head + rule_line(store, "message.publish", 1,
                                  '{"topic": "#", action": {"function": "on_message_publish"}, '
                                  '"pool": "pool1"}'))
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    proc = subprocess.Popen([KEEPMQ_BIN, "-c", path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmpdir_path, env=env)
    try:
        listened = wait_port(port, timeout=5, proc=proc)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not listened, "the broker listened with a bad rule"
    assert proc.returncode == 2
    assert f"{path}:{line}: {key(store)}:" in err, err
    no_sanitizer(err)
    # nothing was created for the backend either
    assert store.messages() == []


# ---------------------------------------------------------------- the shipped files

def test_shipped_configuration_passes_and_loads_every_rule(store, broker_factory, tmpdir_path):
    conf = os.path.join(ROOT, "etc", "keepmq.conf")
    backend_conf = os.path.join(ROOT, "etc", "backends", f"{store.name}.conf")
    assert os.path.exists(backend_conf)
    p = run("--check-config", "-c", conf, cwd=tmpdir_path)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    p = run("--check-config", "-c", backend_conf, cwd=tmpdir_path)
    assert p.returncode == 0, p.stderr
    # started from them (on a test port, in a temp directory), every rule of
    # the backend's file is live
    with open(backend_conf) as f:
        rules = [ln.split("=", 1)[0].strip() for ln in f
                 if ln.startswith(f"backend.{store.name}.hook.")]
    assert len(rules) >= 8
    b = broker_factory(start=False)
    b.args = ["-o", f"listener.tcp.default=127.0.0.1:{b.port}", "-o", "node.io_workers=2",
              "-o", "broker.sys_interval=1s"]
    with open(conf) as f:
        on_by_default = f"\ninclude backends/{store.name}.conf\n" in f.read()
    if on_by_default:
        b.conf_path = conf
    else:
        # an optional backend: on when keepmq.conf includes its file; its
        # pool is pointed at the test's server
        b.conf_path = write(os.path.join(tmpdir_path, "with-backend.conf"),
                            f"include {conf}\ninclude {backend_conf}\n")
        for ln in store.conf().splitlines():
            if ln.strip() and not ln.startswith("#"):
                k, v = (x.strip() for x in ln.split("=", 1))
                b.args += ["-o", f"{k}={v}"]
    b.start()
    r = R.raw_connect(b.port, "shipped-metrics")
    assert R.sub_ack(r, [("$SYS/brokers/keepmq@127.0.0.1/backends/metrics", 0)]) == [0]
    m = json.loads(R.recv_publishes(r, 1, timeout=5)[0].payload)[store.name]
    r.close()
    assert sorted(x["rule"] for x in m["rules"]) == sorted(rules)
    assert m["delivery_mode"] == "async"
