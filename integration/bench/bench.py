#!/usr/bin/env python3
"""Helpers for integration/bench/run.sh (python3 stdlib only).

Subcommands:
  ports N                      print N distinct free TCP ports on 127.0.0.1 (one line, space separated)
  probe URL [HOST]             exit 0 when GET URL (with Host: HOST) answers 200 with body "ok\\n"
  tree PID                     print "<cpu ticks> <VmHWM kB> <process count>" summed over PID and its descendants
  descendants PID              print PID's descendants (deepest first), one per line
  alive PID...                 print the given pids that still exist and are not zombies
  backend PORT                 a fallback keep-alive backend answering 200 "ok\\n" (smoke mode without nginx)
  record --out FILE ...        parse one wrk output file and append one JSON line to FILE
  report --runs FILE ...       aggregate the runs (median over rounds), print the table, write the JSON
"""

import argparse
import http.client
import json
import os
import re
import socket
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


def _hwm_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


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


def cmd_probe(args):
    m = re.match(r"http://([^/:]+):(\d+)(/.*)?$", args.url)
    if not m:
        sys.exit(f"bad url {args.url}")
    try:
        conn = http.client.HTTPConnection(m.group(1), int(m.group(2)), timeout=1)
        headers = {"Host": args.host} if args.host else {}
        conn.request("GET", m.group(3) or "/", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
    except (OSError, http.client.HTTPException):
        sys.exit(1)
    sys.exit(0 if resp.status == 200 and body == b"ok\n" else 1)


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


def cmd_record(args):
    with open(args.wrk, errors="replace") as f:
        text = f.read()
    run = {"scenario": args.scenario, "proxy": args.proxy, "conns": args.conns, "round": args.round}
    run.update(parse_wrk(text))
    b_ticks, _, _ = (int(x) for x in args.before.split())
    a_ticks, hwm_kb, nprocs = (int(x) for x in args.after.split())
    cpu_us = (a_ticks - b_ticks) * 1e6 / CLK_TCK
    run["cpu_us_total"] = cpu_us
    run["cpu_us_per_req"] = cpu_us / run["requests"] if run["requests"] else None
    run["peak_rss_mb"] = hwm_kb / 1024
    run["processes"] = nprocs
    run["alive_after"] = args.alive == "yes"
    if not run["requests"]:
        run["wrk_output_tail"] = text[-600:]
    with open(args.out, "a") as f:
        f.write(json.dumps(run) + "\n")
    print(
        f"    {args.proxy:<16} c={args.conns:<4} round {args.round}: {run['rps']:>10.0f} req/s"
        f"  p99 {_fmt_us(run['p99_us']):>8}  cpu {_fmt(run['cpu_us_per_req'], 1):>6} us/req"
        + (f"  non-2xx {run['non2xx']}" if run["non2xx"] else "")
        + (f"  socket errors {run['socket_errors']}" if run["socket_errors"] else "")
        + ("" if run["alive_after"] else "  PROCESS DIED")
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


def cmd_report(args):
    runs = []
    if os.path.exists(args.runs):
        with open(args.runs) as f:
            runs = [json.loads(line) for line in f if line.strip()]
    skipped = []
    for item in args.skipped or []:
        name, _, reason = item.partition("=")
        skipped.append({"proxy": name, "reason": reason})
    meta = {}
    for item in args.meta or []:
        k, _, v = item.partition("=")
        meta[k] = v

    groups = {}
    for run in runs:
        groups.setdefault((run["scenario"], run["conns"], run["proxy"]), []).append(run)
    results = []
    for (scenario, conns, proxy), rs in groups.items():
        results.append(
            {
                "scenario": scenario,
                "proxy": proxy,
                "conns": conns,
                "rounds": len(rs),
                "rps": _median([r["rps"] for r in rs]),
                "p50_us": _median([r["p50_us"] for r in rs]),
                "p99_us": _median([r["p99_us"] for r in rs]),
                "cpu_us_per_req": _median([r["cpu_us_per_req"] for r in rs]),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                "requests_total": sum(r["requests"] for r in rs),
                "non2xx_total": sum(r["non2xx"] for r in rs),
                "socket_errors_total": sum(r["socket_errors"] for r in rs),
                "died": not all(r["alive_after"] for r in rs),
            }
        )
    results.sort(key=lambda r: (r["scenario"], r["conns"], _order(r["proxy"])))
    by_key = {(r["scenario"], r["conns"], r["proxy"]): r for r in results}

    ratios = []
    for r in results:
        if not r["proxy"].startswith("hypache"):
            continue
        ng = by_key.get((r["scenario"], r["conns"], "nginx"))
        hp = by_key.get((r["scenario"], r["conns"], "haproxy"))
        entry = {"scenario": r["scenario"], "conns": r["conns"]}
        entry["rps_vs_nginx"] = r["rps"] / ng["rps"] if ng and ng["rps"] and r["rps"] is not None else None
        entry["rps_vs_haproxy"] = r["rps"] / hp["rps"] if hp and hp["rps"] and r["rps"] is not None else None
        entry["p99_le_nginx"] = (
            r["p99_us"] <= ng["p99_us"] if ng and None not in (r["p99_us"], ng["p99_us"]) else None
        )
        entry["cpu_le_nginx"] = (
            r["cpu_us_per_req"] <= ng["cpu_us_per_req"]
            if ng and None not in (r["cpu_us_per_req"], ng["cpu_us_per_req"])
            else None
        )
        r["ratios"] = entry
        ratios.append(entry)

    # ---- table
    yn = {True: "yes", False: "NO", None: "-"}
    header = ["proxy", "conns", "req/s", "p50", "p99", "CPU us/req", "peak RSS MB", "req/s vs nginx",
              "vs haproxy", "p99<=nginx", "CPU<=nginx", "errors"]
    scenarios = sorted({r["scenario"] for r in results})
    print()
    for scenario in scenarios:
        rows = []
        for r in (x for x in results if x["scenario"] == scenario):
            rt = r.get("ratios", {})
            errors = []
            if r["non2xx_total"]:
                errors.append(f"non-2xx {r['non2xx_total']}")
            if r["socket_errors_total"]:
                errors.append(f"socket {r['socket_errors_total']}")
            if r["died"]:
                errors.append("DIED")
            if not r["requests_total"]:
                errors.append("no requests")
            name = "backend (direct)" if r["proxy"] == "backend" else r["proxy"]
            rows.append([
                name, str(r["conns"]), _fmt(r["rps"]), _fmt_us(r["p50_us"]), _fmt_us(r["p99_us"]),
                _fmt(r["cpu_us_per_req"], 1), _fmt(r["peak_rss_mb"], 1),
                _fmt(rt.get("rps_vs_nginx"), 2) if rt else "",
                _fmt(rt.get("rps_vs_haproxy"), 2) if rt else "",
                yn[rt.get("p99_le_nginx")] if rt else "",
                yn[rt.get("cpu_le_nginx")] if rt else "",
                ", ".join(errors) or "0",
            ])
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
        rounds = max((r["rounds"] for r in results if r["scenario"] == scenario and r["proxy"] != "backend"),
                     default=0)
        print(f"scenario: {scenario}   (median of {rounds} round(s); {meta.get('duration', '?')} per run)")
        line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
        print(line)
        print("-" * len(line))
        for row in rows:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        print()
    for s in skipped:
        print(f"skipped {s['proxy']}: {s['reason']}")
    if meta.get("loadavg_before"):
        print(f"load average before the run: {meta['loadavg_before']}; after: {meta.get('loadavg_after', '?')}"
              f" ({meta.get('cpus', '?')} CPUs)")

    doc = {"meta": meta, "skipped": skipped, "results": results, "ratios": ratios, "runs": runs}
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        print(f"results written to {args.out}")

    # ---- checks: every run of hypache must have served requests, all 2xx, and hypache must not have died
    failures = []
    for r in results:
        if not r["proxy"].startswith("hypache"):
            continue
        if not r["requests_total"]:
            failures.append(f"hypache c={r['conns']}: no requests served")
        if r["non2xx_total"]:
            failures.append(f"hypache c={r['conns']}: {r['non2xx_total']} non-2xx responses")
        if r["died"]:
            failures.append(f"hypache c={r['conns']}: the process died")
    if args.require_hypache and not any(r["proxy"] == "hypache" for r in results):
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
    s.set_defaults(func=cmd_probe)
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
    s.add_argument("--wrk", required=True)
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
    s.add_argument("--require-hypache", action="store_true")
    s.set_defaults(func=cmd_report)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
