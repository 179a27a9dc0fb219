#!/usr/bin/env python3
"""Helpers for integration/bench/run.sh (python3 stdlib only).

Subcommands:
  ports N                      print N distinct free TCP ports on 127.0.0.1 (one line, space separated)
  probe URL [HOST] [-H H]...   exit 0 when GET URL (with Host: HOST) answers 200 with body "ok\\n"; https URLs
                               send the URL's host as SNI and do not verify the certificate
  open PORT                    exit 0 when something accepts TCP connections on 127.0.0.1:PORT
  status URL HOST [-H H]...    print the status code of GET URL (0 when it could not be fetched)
  tls-info URL                 print the TLS version and cipher a handshake with URL negotiates
  guard-sign ...               print the X-Timestamp, X-Nonce and X-Sign headers of a hmac-sha256 guard request
  tree PID                     print "<cpu ticks> <VmHWM kB> <process count>" summed over PID and its descendants
  descendants PID              print PID's descendants (deepest first), one per line
  alive PID...                 print the given pids that still exist and are not zombies
  backend PORT                 a fallback keep-alive backend answering 200 "ok\\n" (smoke mode without nginx)
  record --out FILE ...        parse one wrk output file (or a load.py JSON result) and append one JSON line
  report --runs FILE ...       aggregate the runs (median over rounds), print the table, write the JSON
"""

import argparse
import hashlib
import hmac
import http.client
import json
import os
import re
import socket
import ssl
import statistics
import sys

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- processes


def _proc_table():
    """pid -> (ppid, state, utime+stime ticks)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                data = f.read()
        except OSError:
            continue
        # the command name may contain spaces and parentheses: split after the last ')'
        rest = data[data.rindex(")") + 2 :].split()
        state, ppid = rest[0], int(rest[1])
        ticks = int(rest[11]) + int(rest[12])  # fields 14 (utime) and 15 (stime)
        table[int(name)] = (ppid, state, ticks)
    return table


def _tree(root, table):
    children = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out.append(pid)
            todo.extend(children.get(pid, []))
    return out


def _status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _hwm_kb(pid):
    return _status_kb(pid, "VmHWM:")


def tree_rss_kb(root):
    """VmRSS summed over ROOT and its descendants (shared pages counted once per process, as `ps` does)."""
    return sum(_status_kb(p, "VmRSS:") for p in _tree(root, _proc_table()))


def cmd_tree(args):
    table = _proc_table()
    pids = _tree(args.pid, table)
    ticks = sum(table[p][2] for p in pids)
    hwm = sum(_hwm_kb(p) for p in pids)
    print(ticks, hwm, len(pids))


def cmd_descendants(args):
    table = _proc_table()
    pids = _tree(args.pid, table)[1:]
    for pid in reversed(pids):
        print(pid)


def cmd_alive(args):
    table = _proc_table()
    print(" ".join(str(p) for p in args.pids if p in table and table[p][1] != "Z"))


# ---------------------------------------------------------------- network


def cmd_ports(args):
    socks = []
    for _ in range(args.n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def _get(url, host=None, headers=()):
    """GET URL; returns (status, body, tls_socket_info) or raises OSError/HTTPException."""
    m = re.match(r"(https?)://([^/:]+):(\d+)(/.*)?$", url)
    if not m:
        sys.exit(f"bad url {url}")
    scheme, addr, port, path = m.group(1), m.group(2), int(m.group(3)), m.group(4) or "/"
    if scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        conn = http.client.HTTPSConnection(addr, port, timeout=1, context=ctx)
    else:
        conn = http.client.HTTPConnection(addr, port, timeout=1)
    hdrs = {"Host": host} if host else {}
    for h in headers:
        k, _, v = h.partition(":")
        hdrs[k.strip()] = v.strip()
    try:
        conn.request("GET", path, headers=hdrs)
        resp = conn.getresponse()
        body = resp.read()
        info = None
        if scheme == "https":
            info = f"{conn.sock.version()} {conn.sock.cipher()[0]}"
        return resp.status, body, info
    finally:
        conn.close()


def cmd_probe(args):
    try:
        status, body, _ = _get(args.url, args.host, args.header or ())
    except (OSError, http.client.HTTPException):
        sys.exit(1)
    sys.exit(0 if status == 200 and body == b"ok\n" else 1)


def cmd_open(args):
    try:
        socket.create_connection(("127.0.0.1", args.port), timeout=1).close()
    except OSError:
        sys.exit(1)


def cmd_stall(args):
    # A shadow that accepts connections and never answers (the mirror scenario's stalled shadow).
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(1024)
    held = []
    while True:
        conn, _ = srv.accept()
        held.append(conn)


def cmd_status(args):
    try:
        status, _, _ = _get(args.url, args.host, args.header or ())
    except (OSError, http.client.HTTPException):
        status = 0
    print(status)


def cmd_tls_info(args):
    try:
        _, _, info = _get(args.url, args.host)
    except (OSError, http.client.HTTPException) as e:
        info = f"? ({e})"
    print(info)


def cmd_guard_sign(args):
    """hmac-sha256 mode of src/policy/guard.rs: HMAC-SHA256 over "HMAC-SHA256", method, host (lower-cased),
    path, query (empty here), timestamp, nonce and app key (empty), joined by newlines."""
    text = "\n".join(["HMAC-SHA256", args.method, args.host.lower(), args.path, "", str(args.timestamp),
                      args.nonce, ""])
    sign = hmac.new(args.secret.encode(), text.encode(), hashlib.sha256).hexdigest()
    print(f"X-Timestamp: {args.timestamp}")
    print(f"X-Nonce: {args.nonce}")
    print(f"X-Sign: {sign}")


def cmd_backend(args):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"ok\n")

        def log_message(self, *a):
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass  # clients (wrk) reset their connections at the end of a run

    Server(("127.0.0.1", args.port), Handler).serve_forever()


# ---------------------------------------------------------------- wrk output

_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def _to_us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * _UNITS_US[m.group(2)] if m else None


def parse_wrk(text):
    r = {"requests": 0, "rps": 0.0, "p50_us": None, "p99_us": None, "non2xx": 0, "socket_errors": 0}
    m = re.search(r"^\s*(\d+) requests in ([\d.]+\w+)", text, re.M)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M)
    if m:
        r["rps"] = float(m.group(1))
    for pct, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(rf"^\s*{pct}(?:\.000)?%\s+(\S+)", text, re.M)
        if m:
            r[key] = _to_us(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        r["socket_errors"] = sum(int(x) for x in m.groups())
    return r


def _from_client(kind, doc):
    """A load.py result as a run record: WebSocket messages count as requests, so the http table applies."""
    if kind == "ws":
        return {"requests": doc["messages"], "rps": doc["rate"], "p50_us": doc["p50_us"], "p99_us": doc["p99_us"],
                "non2xx": 0, "socket_errors": doc["errors"], "connected": doc["connected"],
                "first_error": doc.get("first_error")}
    if kind == "idle":
        return {"opened": doc["opened"], "held": doc["held"], "rss_before_mb": doc["rss_before_mb"],
                "rss_mb": doc["rss_mb"], "errors": doc["errors"], "first_error": doc.get("first_error"),
                "open_seconds": doc["open_seconds"]}
    if kind == "stream":
        r = dict(doc)
        r["requests"] = 1 if doc["ok"] else 0
        return r
    raise ValueError(kind)


def cmd_record(args):
    run = {"scenario": args.scenario, "kind": args.kind, "proxy": args.proxy, "conns": args.conns,
           "case": args.case if args.case is not None else args.conns, "round": args.round}
    text = ""
    if args.wrk:
        with open(args.wrk, errors="replace") as f:
            text = f.read()
        run.update(parse_wrk(text))
    else:
        try:
            with open(args.client_json) as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            doc = None
            text = f"no result from the client: {e}"
        if doc is None:
            run.update({"requests": 0, "rps": 0.0, "p50_us": None, "p99_us": None, "non2xx": 0, "socket_errors": 0,
                        "errors": 1, "ok": False, "error": text, "held": 0, "opened": 0, "rss_mb": None,
                        "rss_before_mb": None, "mb_per_s": 0.0, "transferred": 0})
        else:
            run.update(_from_client(args.kind, doc))
    b_ticks, _, _ = (int(x) for x in args.before.split())
    a_ticks, hwm_kb, nprocs = (int(x) for x in args.after.split())
    cpu_us = (a_ticks - b_ticks) * 1e6 / CLK_TCK
    run["cpu_us_total"] = cpu_us
    if args.kind == "stream":
        mb = run.get("transferred", 0) / (1 << 20)
        run["cpu_us_per_mb"] = cpu_us / mb if mb else None
    elif args.kind != "idle":
        run["cpu_us_per_req"] = cpu_us / run["requests"] if run["requests"] else None
    run["peak_rss_mb"] = hwm_kb / 1024
    run["processes"] = nprocs
    run["alive_after"] = args.alive == "yes"
    if args.wrk and not run["requests"]:
        run["wrk_output_tail"] = text[-600:]
    with open(args.out, "a") as f:
        f.write(json.dumps(run) + "\n")
    print("    " + _run_line(run))


def _run_line(run):
    head = f"{run['proxy']:<18} "
    died = "" if run["alive_after"] else "  PROCESS DIED"
    if run["kind"] == "idle":
        return (head + f"{run['held']}/{run['conns']} connections held; RSS {_fmt(run.get('rss_before_mb'), 1)} MB"
                f" idle -> {_fmt(run.get('rss_mb'), 1)} MB with them"
                + (f"  ({run['first_error']})" if run.get("first_error") else "") + died)
    if run["kind"] == "stream":
        return (head + f"{run['case']:<8} round {run['round']}: {run['mb_per_s']:>7.0f} MB/s"
                f"  RSS {_fmt(run.get('rss_before_mb'), 1)} -> peak {_fmt(run.get('rss_peak_mb'), 1)} MB"
                f"  cpu {_fmt(run.get('cpu_us_per_mb'), 0)} us/MB"
                + (f"  ERROR {run['error']}" if run.get("error") else "") + died)
    unit = "msg/s" if run["kind"] == "ws" else "req/s"
    return (
        head + f"c={run['conns']:<4} round {run['round']}: {run['rps']:>10.0f} {unit}"
        f"  p99 {_fmt_us(run['p99_us']):>8}  cpu {_fmt(run['cpu_us_per_req'], 1):>6} us/{unit[:3]}"
        + (f"  non-2xx {run['non2xx']}" if run["non2xx"] else "")
        + (f"  socket errors {run['socket_errors']}" if run["socket_errors"] else "")
        + (f"  ({run['first_error']})" if run.get("first_error") else "")
        + died
    )


# ---------------------------------------------------------------- report


def _fmt(v, digits=0):
    return "-" if v is None else f"{v:.{digits}f}"


def _fmt_us(us):
    if us is None:
        return "-"
    if us >= 1e6:
        return f"{us / 1e6:.2f}s"
    if us >= 1e3:
        return f"{us / 1e3:.2f}ms"
    return f"{us:.0f}us"


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _order(proxy):
    fixed = ["hypache", "nginx", "haproxy", "backend"]
    if proxy.startswith("hypache"):
        return (0, proxy)
    return (fixed.index(proxy) if proxy in fixed else len(fixed) - 0.5, proxy)


def _case_order(case, first_seen):
    """Connection counts ascending; named cases (upload, download) in the order they were measured."""
    return (0, case) if isinstance(case, int) else (1, first_seen.get(case, 0))


def _ratio(a, b):
    return a / b if a is not None and b else None


def _aggregate(key, rs):
    scenario, case, proxy = key
    kind = rs[0].get("kind", "http")
    r = {"scenario": scenario, "kind": kind, "proxy": proxy, "case": case, "conns": rs[0]["conns"],
         "rounds": len(rs), "died": not all(x["alive_after"] for x in rs),
         "peak_rss_mb": max(x["peak_rss_mb"] for x in rs)}
    first_errors = [x["first_error"] for x in rs if x.get("first_error")] + [x["error"] for x in rs if x.get("error")]
    r["first_error"] = first_errors[0] if first_errors else None
    if kind == "idle":
        r["opened"] = min(x["opened"] for x in rs)
        r["held"] = min(x["held"] for x in rs)
        r["rss_before_mb"] = _median([x["rss_before_mb"] for x in rs])
        r["rss_mb"] = max((x["rss_mb"] for x in rs if x["rss_mb"] is not None), default=None)
        r["kb_per_conn"] = (
            (r["rss_mb"] - r["rss_before_mb"]) * 1024 / r["conns"]
            if None not in (r["rss_mb"], r["rss_before_mb"]) and r["conns"] else None
        )
        r["errors_total"] = sum(x["errors"] for x in rs)
    elif kind == "stream":
        r["bytes"] = rs[0].get("bytes")
        r["mb_per_s"] = _median([x["mb_per_s"] for x in rs])
        r["cpu_us_per_mb"] = _median([x.get("cpu_us_per_mb") for x in rs])
        r["rss_before_mb"] = _median([x.get("rss_before_mb") for x in rs])
        r["rss_peak_mb"] = max((x["rss_peak_mb"] for x in rs if x.get("rss_peak_mb") is not None), default=None)
        growths = [x["rss_peak_mb"] - x["rss_before_mb"] for x in rs
                   if None not in (x.get("rss_peak_mb"), x.get("rss_before_mb"))]
        r["rss_growth_mb"] = max(growths) if growths else None
        r["ok"] = all(x.get("ok") for x in rs)
        r["errors_total"] = sum(0 if x.get("ok") else 1 for x in rs)
    else:
        r["rps"] = _median([x["rps"] for x in rs])
        r["p50_us"] = _median([x["p50_us"] for x in rs])
        r["p99_us"] = _median([x["p99_us"] for x in rs])
        r["cpu_us_per_req"] = _median([x["cpu_us_per_req"] for x in rs])
        r["requests_total"] = sum(x["requests"] for x in rs)
        r["non2xx_total"] = sum(x["non2xx"] for x in rs)
        r["socket_errors_total"] = sum(x["socket_errors"] for x in rs)
    return r


def _ratios(r, by_key):
    """Ratios on hypache rows: against nginx and HAProxy, or in the policy scenario against hypache alone."""
    peer = lambda name: by_key.get((r["scenario"], r["case"], name))  # noqa: E731
    ng, hp = peer("nginx"), peer("haproxy")
    e = {"scenario": r["scenario"], "case": r["case"]}
    if r["scenario"] == "policy":
        base = peer("hypache")
        if r["proxy"] == "hypache" or not base:
            return None
        e["rps_vs_no_policy"] = _ratio(r["rps"], base["rps"])
        e["cpu_us_added"] = (
            r["cpu_us_per_req"] - base["cpu_us_per_req"]
            if None not in (r["cpu_us_per_req"], base["cpu_us_per_req"]) else None
        )
    elif r["kind"] == "idle":
        e["rss_vs_nginx"] = _ratio(r["rss_mb"], ng and ng["rss_mb"])
        e["rss_vs_haproxy"] = _ratio(r["rss_mb"], hp and hp["rss_mb"])
        e["rss_under_64mb"] = r["rss_mb"] < 64 if r["rss_mb"] is not None else None
    elif r["kind"] == "stream":
        e["mbps_vs_nginx"] = _ratio(r["mb_per_s"], ng and ng["mb_per_s"])
        e["mbps_vs_haproxy"] = _ratio(r["mb_per_s"], hp and hp["mb_per_s"])
    else:
        e["rps_vs_nginx"] = _ratio(r["rps"], ng and ng["rps"])
        e["rps_vs_haproxy"] = _ratio(r["rps"], hp and hp["rps"])
        e["p99_le_nginx"] = r["p99_us"] <= ng["p99_us"] if ng and None not in (r["p99_us"], ng["p99_us"]) else None
        e["cpu_le_nginx"] = (
            r["cpu_us_per_req"] <= ng["cpu_us_per_req"]
            if ng and None not in (r["cpu_us_per_req"], ng["cpu_us_per_req"]) else None
        )
    return e


_YN = {True: "yes", False: "NO", None: "-"}


def _errors_cell(r):
    errors = []
    if r.get("non2xx_total"):
        errors.append(f"non-2xx {r['non2xx_total']}")
    if r.get("socket_errors_total"):
        errors.append(f"socket {r['socket_errors_total']}")
    if r.get("errors_total"):
        errors.append(f"{r['errors_total']} failed")
    if r["died"]:
        errors.append("DIED")
    if r["kind"] in ("http", "ws") and not r["requests_total"]:
        errors.append("no requests")
    return ", ".join(errors) or "0"


def _row(r):
    """(header, cells) of one result row; the header depends on the scenario's kind."""
    rt = r.get("ratios") or {}
    name = "backend (direct)" if r["proxy"] == "backend" else r["proxy"]
    if r["kind"] == "idle":
        return (["proxy", "conns", "held", "RSS idle MB", "RSS MB", "KB/conn", "peak RSS MB", "RSS vs nginx",
                 "vs haproxy", "<64MB", "errors"],
                [name, str(r["conns"]), str(r["held"]), _fmt(r["rss_before_mb"], 1), _fmt(r["rss_mb"], 1),
                 _fmt(r["kb_per_conn"], 1), _fmt(r["peak_rss_mb"], 1),
                 _fmt(rt.get("rss_vs_nginx"), 2) if rt else "", _fmt(rt.get("rss_vs_haproxy"), 2) if rt else "",
                 _YN[rt.get("rss_under_64mb")] if rt else "", _errors_cell(r)])
    if r["kind"] == "stream":
        return (["proxy", "direction", "MB/s", "CPU us/MB", "RSS before MB", "peak RSS MB", "RSS growth MB",
                 "MB/s vs nginx", "vs haproxy", "errors"],
                [name, str(r["case"]), _fmt(r["mb_per_s"]), _fmt(r["cpu_us_per_mb"]), _fmt(r["rss_before_mb"], 1),
                 _fmt(r["rss_peak_mb"], 1), _fmt(r["rss_growth_mb"], 1),
                 _fmt(rt.get("mbps_vs_nginx"), 2) if rt else "", _fmt(rt.get("mbps_vs_haproxy"), 2) if rt else "",
                 _errors_cell(r)])
    unit = "msg" if r["kind"] == "ws" else "req"
    common = [name, str(r["conns"]), _fmt(r["rps"]), _fmt_us(r["p50_us"]), _fmt_us(r["p99_us"]),
              _fmt(r["cpu_us_per_req"], 1), _fmt(r["peak_rss_mb"], 1)]
    header = ["proxy", "conns", f"{unit}/s", "p50", "p99", f"CPU us/{unit}", "peak RSS MB"]
    if r["scenario"] == "policy":
        return (header + ["vs no policy", f"CPU +us/{unit}", "errors"],
                common + [_fmt(rt.get("rps_vs_no_policy"), 2) if rt else "",
                          (f"{rt['cpu_us_added']:+.1f}" if rt.get("cpu_us_added") is not None else "-") if rt else "",
                          _errors_cell(r)])
    return (header + [f"{unit}/s vs nginx", "vs haproxy", "p99<=nginx", "CPU<=nginx", "errors"],
            common + [_fmt(rt.get("rps_vs_nginx"), 2) if rt else "", _fmt(rt.get("rps_vs_haproxy"), 2) if rt else "",
                      _YN[rt.get("p99_le_nginx")] if rt else "", _YN[rt.get("cpu_le_nginx")] if rt else "",
                      _errors_cell(r)])


def _failures(r):
    """Why a hypache row fails the run (the smoke mode relies on this)."""
    if not r["proxy"].startswith("hypache"):
        return []
    what = f"{r['scenario']} {r['proxy']} {'c=' if isinstance(r['case'], int) else ''}{r['case']}"
    out = []
    if r["died"]:
        out.append(f"{what}: the process died")
    if r["kind"] == "idle":
        if r["held"] < r["conns"]:
            out.append(f"{what}: only {r['held']} of {r['conns']} idle connections held ({r['first_error']})")
    elif r["kind"] == "stream":
        if not r["ok"]:
            out.append(f"{what}: transfer failed ({r['first_error']})")
    else:
        if not r["requests_total"]:
            out.append(f"{what}: nothing served" + (f" ({r['first_error']})" if r.get("first_error") else ""))
        if r["non2xx_total"]:
            out.append(f"{what}: {r['non2xx_total']} non-2xx responses")
        if r["kind"] == "ws" and r["socket_errors_total"]:
            out.append(f"{what}: {r['socket_errors_total']} connections failed ({r['first_error']})")
    return out


def cmd_report(args):
    runs = []
    if os.path.exists(args.runs):
        with open(args.runs) as f:
            runs = [json.loads(line) for line in f if line.strip()]
    for run in runs:  # records written before scenarios had kinds and cases
        run.setdefault("kind", "http")
        run.setdefault("case", run["conns"])
    skipped = []
    for item in args.skipped or []:
        name, _, reason = item.partition("=")
        skipped.append({"proxy": name, "reason": reason})
    meta = {}
    for item in args.meta or []:
        k, _, v = item.partition("=")
        meta[k] = v
    notes = args.note or []

    groups = {}
    for run in runs:
        groups.setdefault((run["scenario"], run["case"], run["proxy"]), []).append(run)
    results = [_aggregate(key, rs) for key, rs in groups.items()]
    order = {name: i for i, name in enumerate(args.scenario_order or [])}
    first_seen = {}
    for run in runs:
        first_seen.setdefault(run["case"], len(first_seen))
    results.sort(key=lambda r: (order.get(r["scenario"], len(order)), r["scenario"],
                                _case_order(r["case"], first_seen), _order(r["proxy"])))
    by_key = {(r["scenario"], r["case"], r["proxy"]): r for r in results}
    ratios = []
    for r in results:
        if r["proxy"].startswith("hypache"):
            e = _ratios(r, by_key)
            if e:
                r["ratios"] = e
                ratios.append(e)

    # ---- one table per scenario
    print()
    scenarios = list(dict.fromkeys(r["scenario"] for r in results))
    for scenario in scenarios:
        rs = [r for r in results if r["scenario"] == scenario]
        rows = [_row(r) for r in rs]
        header = rows[0][0]
        cells = [c for _, c in rows]
        widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(header)]
        rounds = max((r["rounds"] for r in rs if r["proxy"] != "backend"), default=0)
        per = "" if rs[0]["kind"] == "idle" else f"; {meta.get('duration', '?')} per run" if rs[0]["kind"] != "stream" \
            else f"; {rs[0].get('bytes', 0) / (1 << 20):.0f} MiB per transfer"
        print(f"scenario: {scenario}   (median of {rounds} round(s){per})")
        line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
        print(line)
        print("-" * len(line))
        for row in cells:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        print()
    for s in skipped:
        print(f"skipped {s['proxy']}: {s['reason']}")
    for n in notes:
        print(f"note: {n}")
    if meta.get("loadavg_before"):
        print(f"load average before the run: {meta['loadavg_before']}; after: {meta.get('loadavg_after', '?')}"
              f" ({meta.get('cpus', '?')} CPUs)")

    doc = {"meta": meta, "notes": notes, "skipped": skipped, "results": results, "ratios": ratios, "runs": runs}
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        print(f"results written to {args.out}")

    # ---- checks: every hypache row must have served (all 2xx, every connection held, every byte) and lived
    failures = [f for r in results for f in _failures(r)]
    if args.require_hypache and not any(r["proxy"].startswith("hypache") for r in results):
        failures.append("no hypache run was recorded")
    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    sys.exit(1 if failures else 0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ports")
    s.add_argument("n", type=int)
    s.set_defaults(func=cmd_ports)
    s = sub.add_parser("probe")
    s.add_argument("url")
    s.add_argument("host", nargs="?")
    s.add_argument("-H", "--header", action="append", help="extra request header, 'Name: value'")
    s.set_defaults(func=cmd_probe)
    s = sub.add_parser("open")
    s.add_argument("port", type=int)
    s.set_defaults(func=cmd_open)
    s = sub.add_parser("stall")
    s.add_argument("port", type=int)
    s.set_defaults(func=cmd_stall)
    s = sub.add_parser("status")
    s.add_argument("url")
    s.add_argument("host")
    s.add_argument("-H", "--header", action="append", help="extra request header, 'Name: value'")
    s.set_defaults(func=cmd_status)
    s = sub.add_parser("tls-info")
    s.add_argument("url")
    s.add_argument("host", nargs="?")
    s.set_defaults(func=cmd_tls_info)
    s = sub.add_parser("guard-sign")
    s.add_argument("--secret", required=True)
    s.add_argument("--host", required=True)
    s.add_argument("--method", default="GET")
    s.add_argument("--path", default="/")
    s.add_argument("--timestamp", type=int, required=True)
    s.add_argument("--nonce", required=True)
    s.set_defaults(func=cmd_guard_sign)
    s = sub.add_parser("tree")
    s.add_argument("pid", type=int)
    s.set_defaults(func=cmd_tree)
    s = sub.add_parser("descendants")
    s.add_argument("pid", type=int)
    s.set_defaults(func=cmd_descendants)
    s = sub.add_parser("alive")
    s.add_argument("pids", type=int, nargs="*")
    s.set_defaults(func=cmd_alive)
    s = sub.add_parser("backend")
    s.add_argument("port", type=int)
    s.set_defaults(func=cmd_backend)
    s = sub.add_parser("record")
    s.add_argument("--out", required=True)
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--wrk", help="wrk's output")
    src.add_argument("--client-json", help="a load.py result")
    s.add_argument("--kind", choices=["http", "ws", "idle", "stream"], default="http")
    s.add_argument("--case", help="row key when it is not the connection count (stream: upload, download)")
    s.add_argument("--scenario", required=True)
    s.add_argument("--proxy", required=True)
    s.add_argument("--conns", type=int, required=True)
    s.add_argument("--round", type=int, required=True)
    s.add_argument("--before", required=True, help='"ticks hwm_kb nprocs" before the run')
    s.add_argument("--after", required=True, help='"ticks hwm_kb nprocs" after the run')
    s.add_argument("--alive", choices=["yes", "no"], required=True)
    s.set_defaults(func=cmd_record)
    s = sub.add_parser("report")
    s.add_argument("--runs", required=True)
    s.add_argument("--out")
    s.add_argument("--skipped", action="append", help="name=reason")
    s.add_argument("--meta", action="append", help="key=value")
    s.add_argument("--note", action="append", help="a line printed under the tables and kept in the JSON")
    s.add_argument("--scenario-order", nargs="*", help="scenarios in the order their tables are printed")
    s.add_argument("--require-hypache", action="store_true")
    s.set_defaults(func=cmd_report)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
