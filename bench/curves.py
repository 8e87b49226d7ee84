"""Cost curves: the fetch and fan-out benchmarks at several sizes, one result file, a table.

    python bench/curves.py [--fetch-sizes 1000,10000,100000] [--fanout-sizes 200,2000,20000]

Each size is one run of ``fetch.py`` (``--modes phones``: the phones' own listener and
processes) or ``fanout.py`` (bases = users / 100) as a subprocess with ``--no-results
--json-out``, so every check those scripts make still holds at every size (sampled bodies
identical to the stored files, a wrong password refused, no status >= 400 from wrk, every device
fetched; every PIN change answered 200, every device notified, every push job notified). The
children run the code this script imports (the checkout it belongs to unless PYTHONPATH says
otherwise). Writes ``bench/results/curves-<UTC date>.json`` and ``latest-curves.json`` (with
``--only fetch``: ``curves-fetch-<UTC date>.json`` and ``latest-curves-fetch.json``, so the
latest full curves stay) and prints a Markdown table for bench/README.md.

Goals (issue 14): at 100,000 devices the phones' endpoint reaches >= 0.4x nginx, all phones'
processes together hold <= 400 MB RSS, and every phones' process serves every device within
15 s of the start; the fan-out's time grows at most linearly with the users, and 20,000 users
take <= 30 s from the first API request to the last NOTIFY.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import benchlib
from benchlib import BenchError, log

FETCH_RATIO_GOAL = 0.4
FETCH_RSS_GOAL_MB = 400.0  # MB (10^6 bytes), all phones' processes together
FETCH_SERVING_GOAL_S = 15.0
FETCH_GOAL_DEVICES = 100_000
FANOUT_GOAL_S = 30.0
FANOUT_GOAL_USERS = 20_000
USERS_PER_BASE = 100
MIB = 1024 * 1024 / 1e6  # MB in a MiB


def sizes(text: str) -> list[int]:
    try:
        values = sorted({int(x.replace("_", "")) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated numbers") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("sizes are positive")
    return values


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fetch-sizes", type=sizes, default=[1_000, 10_000, 100_000])
    parser.add_argument("--fanout-sizes", type=sizes, default=[200, 2_000, 20_000])
    parser.add_argument("--only", choices=["fetch", "fanout"], help="run one benchmark only")
    parser.add_argument("--duration", type=float, default=10.0, help="fetch: seconds per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="fetch: seconds before a run")
    parser.add_argument("--rounds", type=int, default=1, help="fetch: service/nginx alternations")
    parser.add_argument("--connections", type=int, default=64, help="fetch: wrk connections")
    parser.add_argument(
        "--fanout-deadline",
        type=float,
        help="fan-out: seconds after the first request before giving up (default: 60, or "
        "15 ms per user when more, e.g. 300 s for 20,000)",
    )
    parser.add_argument("--no-results", action="store_true", help="write no result files")
    return parser.parse_args()


def run_child(argv: list[str], json_out: Path) -> dict[str, Any] | str:
    """Run a benchmark; its results, or why there are none. Its output goes to stderr."""
    log("$ " + " ".join(argv[1:]))
    proc = subprocess.Popen(
        argv,
        stdout=sys.stderr,
        env=benchlib.child_env(),
        start_new_session=True,  # Ctrl-C reaches us only; the child gets one SIGTERM below
        preexec_fn=benchlib._die_with_parent,  # no threads here: fork+exec is safe
    )
    try:
        code = proc.wait()
    finally:
        if proc.poll() is None:  # we were interrupted: the child cleans up on SIGTERM
            proc.terminate()
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
    if code != 0 or not json_out.exists():
        return f"exited with {code}"
    results: dict[str, Any] = json.loads(json_out.read_text())
    return results


# --- fetch ---------------------------------------------------------------------------------------


#: Fetches a second the warm-up counts on while devices fetch for the first time (each first
#: fetch retires the bootstrap credential and records a new fetch: a write).
FIRST_FETCHES_PER_S = 4_000


def warmup_for(devices: int, least: float) -> float:
    """Seconds of warm-up so that every device has fetched once before the measured runs: a
    run that is mostly first fetches measures the writes of a boot storm, not steady serving."""
    return max(least, round(devices / FIRST_FETCHES_PER_S, 1))


def fetch_point(devices: int, r: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(r, str):
        return {"devices": devices, "error": r}
    s = r["summary"]
    mode = s["service_modes"]["phones"]
    service = r["service"]["phones"]
    rss_mib = service["memory_after_load"]["rss_mib"]
    checks = {
        # 200 and the stored bytes for 50 sampled devices, 401 for a wrong password: fetch.py
        # stops before measuring when one fails, so a finished run passed them.
        "sampled_bodies_identical": True,
        "no_status_400_or_more_nor_socket_errors": s["all_responses_ok"],
        "every_device_fetched": service["devices_seen"] == devices,
    }
    return {
        "devices": devices,
        "requests_per_s": mode["requests_per_s"],
        "p99_ms": mode["p99_ms"],
        "nginx_requests_per_s": mode["nginx_requests_per_s"],
        "nginx_p99_ms": mode["nginx_p99_ms"],
        "ratio_to_nginx": mode["ratio_to_nginx"],
        "cpu_us_per_request": mode["cpu_us_per_request"],
        "others_cores_during_runs": mode["others_cores_during_runs"],
        "phones_processes": service["phones_processes"],
        "rss_mib": rss_mib,
        "rss_mb": round(rss_mib * MIB, 1),
        "rss_mib_per_process": service["memory_after_load"]["rss_mib_per_process"],
        "serving_after_s": service["startup_to_healthy_s"],
        "seeding_s": r["seeding"]["seconds"],
        "seeding_render_ms_per_device": r["seeding"]["render"]["ms_per_device"],
        "checks": checks,
        "correct": all(checks.values()),
    }


def fetch_goals(points: list[dict[str, Any]]) -> dict[str, Any] | None:
    done = [p for p in points if "error" not in p]
    if not done:
        return None
    # The goals are for 100,000 devices; with other sizes, judged at the largest one run.
    at = next((p for p in done if p["devices"] == FETCH_GOAL_DEVICES), done[-1])
    return {
        "devices": at["devices"],
        "at_goal_size": at["devices"] == FETCH_GOAL_DEVICES,
        "ratio_to_nginx": {
            "value": at["ratio_to_nginx"],
            "goal": f">= {FETCH_RATIO_GOAL}",
            "met": (at["ratio_to_nginx"] or 0) >= FETCH_RATIO_GOAL,
        },
        "rss_mb_all_phones_processes": {
            "value": at["rss_mb"],
            "goal": f"<= {FETCH_RSS_GOAL_MB:g}",
            "met": at["rss_mb"] <= FETCH_RSS_GOAL_MB,
        },
        "serving_after_s": {
            "value": at["serving_after_s"],
            "goal": f"<= {FETCH_SERVING_GOAL_S:g}",
            "met": at["serving_after_s"] <= FETCH_SERVING_GOAL_S,
        },
        "correct": at["correct"],
    }


# --- fan-out -------------------------------------------------------------------------------------


def fanout_point(users: int, bases: int, r: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(r, str):
        return {"users": users, "bases": bases, "error": r}
    s = r["summary"]
    burst = r["burst"]
    notify, api = burst["notify"], burst["api"]
    last = s["last_notify_after_first_request_s"]
    states = burst["database"]["job_states"]
    expected_jobs = users + (bases if s["bases_carry_pin"] else 0)
    checks = {
        "every_request_200": api["statuses"] == {"200": users} and not api["errors"],
        "every_device_notified": notify["desk_phones_not_notified"] == 0
        and (notify["bases_not_notified"] == 0 or not s["bases_carry_pin"]),
        "each_base_notified_once": s["each_base_notified_once"],
        "every_job_notified": states == {"notified": expected_jobs},
        "ended_complete": burst["ended_by"] == "complete",
    }
    return {
        "users": users,
        "bases": bases,
        "last_notify_s": last,
        "ms_per_user": round(last * 1000 / users, 3) if last is not None else None,
        "api_last_answer_s": api["last_answer_s"],
        "api_p99_ms": api["latency_ms"]["p99"],
        "notifies_per_desk_phone": notify["per_desk_phone"],
        "notifies_per_base": notify["per_base"],
        "bases_carry_pin": s["bases_carry_pin"],
        "retransmissions": notify["retransmissions"],
        "job_states": states,
        "ended_by": burst["ended_by"],
        "cpu": {k: v for k, v in burst["cpu"].items() if k != "note"},
        "seeding_s": r["seeding"]["seconds"],
        "seeding_render_ms_per_device": r["seeding"]["render"]["ms_per_device"],
        "checks": checks,
        "correct": all(checks.values()),
    }


def fanout_goals(points: list[dict[str, Any]]) -> dict[str, Any] | None:
    done = [p for p in points if "error" not in p and p["ms_per_user"] is not None]
    if not done:
        return None
    # (time / users) at a size over (time / users) at the size before: <= 1 is at most linear.
    growth = [
        {
            "from_users": a["users"],
            "to_users": b["users"],
            "ratio": round(b["ms_per_user"] / a["ms_per_user"], 2) if a["ms_per_user"] else None,
        }
        for a, b in itertools.pairwise(done)
    ]
    at = next((p for p in done if p["users"] == FANOUT_GOAL_USERS), done[-1])
    return {
        "growth_time_per_user": growth,
        "at_most_linear": {
            "goal": "each ratio <= 1",
            "met": bool(growth) and all(g["ratio"] is not None and g["ratio"] <= 1 for g in growth),
        },
        "largest": {
            "users": at["users"],
            "at_goal_size": at["users"] == FANOUT_GOAL_USERS,
            "last_notify_s": at["last_notify_s"],
            "goal": f"<= {FANOUT_GOAL_S:g}",
            "met": at["last_notify_s"] <= FANOUT_GOAL_S and at["correct"],
        },
        "all_correct": all(p["correct"] for p in points if "error" not in p),
    }


# --- the table -----------------------------------------------------------------------------------


def _met(goal: dict[str, Any]) -> str:
    return "met" if goal["met"] else "**not met**"


def markdown(results: dict[str, Any]) -> str:
    out: list[str] = []
    m = results["machine"]
    out.append(
        f"Measured {results['started_at'][:10]} at {(results['source']['commit'] or '?')[:7]}"
        f"{' (dirty)' if results['source']['dirty'] else ''}, {m['nproc']} cores "
        f"({m['cpu_model']}), load average at start {m['loadavg_at_start'][0]}."
    )
    fetch = results.get("fetch")
    if fetch:
        p = results["parameters"]
        out += [
            "",
            f"Fetch (Yealink T54W, phones' listener, wrk {p['connections']} connections, "
            f"{p['duration_s']:g} s x {p['rounds']}):",
            "",
            "| devices | req/s | nginx req/s | ratio | p99 ms | RSS MiB (per process) "
            "| serving after | seeding | checks |",
            "|---:|---:|---:|---:|---:|---|---:|---:|---|",
        ]
        for pt in fetch["points"]:
            if "error" in pt:
                out.append(f"| {pt['devices']:,} | {pt['error']} | | | | | | | |")
                continue
            per = " + ".join(f"{x:g}" for x in pt["rss_mib_per_process"])
            out.append(
                f"| {pt['devices']:,} | {pt['requests_per_s']:,.0f} "
                f"| {pt['nginx_requests_per_s']:,.0f} | {pt['ratio_to_nginx']:.2f} "
                f"| {pt['p99_ms']:.1f} | {pt['rss_mib']:g} ({per}) "
                f"| {pt['serving_after_s']:.1f} s | {pt['seeding_s']:.0f} s "
                f"| {'ok' if pt['correct'] else '**failed**'} |"
            )
        g = fetch["goals"]
        if g:
            where = f"{g['devices']:,} devices" + ("" if g["at_goal_size"] else " (not 100,000)")
            r, rss, up = g["ratio_to_nginx"], g["rss_mb_all_phones_processes"], g["serving_after_s"]
            out += [
                "",
                f"Goals at {where}: ratio {r['value']} (>= {FETCH_RATIO_GOAL}: {_met(r)}); "
                f"RSS {rss['value']} MB all phones' processes (<= {FETCH_RSS_GOAL_MB:g} MB: "
                f"{_met(rss)}); serving after {up['value']} s (<= {FETCH_SERVING_GOAL_S:g} s: "
                f"{_met(up)}).",
            ]
    fanout = results.get("fanout")
    if fanout:
        out += [
            "",
            "Fan-out (a Yealink T54W and a Gigaset N870 handset per user, 100 handsets a base, "
            "100 PIN changes in flight):",
            "",
            "| users | bases | last NOTIFY | ms per user | growth | NOTIFYs per base "
            "| API p99 ms | seeding | checks |",
            "|---:|---:|---:|---:|---:|---|---:|---:|---|",
        ]
        goals = fanout["goals"] or {}
        growth = {g["to_users"]: g["ratio"] for g in goals.get("growth_time_per_user", [])}
        for pt in fanout["points"]:
            if "error" in pt:
                out.append(f"| {pt['users']:,} | {pt['bases']} | {pt['error']} | | | | | | |")
                continue
            per_base = ", ".join(f"{k}: {v}" for k, v in pt["notifies_per_base"].items())
            ratio = growth.get(pt["users"])
            last = pt["last_notify_s"]
            out.append(
                f"| {pt['users']:,} | {pt['bases']} "
                f"| {'-' if last is None else f'{last:.1f} s'} "
                f"| {pt['ms_per_user'] if pt['ms_per_user'] is not None else '-'} "
                f"| {'' if ratio is None else f'{ratio:.2f}x'} | {{{per_base}}} "
                f"| {pt['api_p99_ms']} | {pt['seeding_s']:.0f} s "
                f"| {'ok' if pt['correct'] else '**failed**'} |"
            )
        g = fanout["goals"]
        if g:
            largest = g["largest"]
            where = f"{largest['users']:,} users" + (
                "" if largest["at_goal_size"] else " (not 20,000)"
            )
            out += [
                "",
                f"Goals: time per user grows at most linearly ({_met(g['at_most_linear'])}; "
                "growth = ms per user over the size before); "
                f"{where} in {largest['last_notify_s']} s (<= {FANOUT_GOAL_S:g} s: "
                f"{_met(largest)}).",
            ]
    return "\n".join(out)


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    # The children import the code PYTHONPATH names first (benchlib.child_env): this one's.
    python = [sys.executable]
    results: dict[str, Any] = {
        "benchmark": "curves",
        "started_at": benchlib.utc_now(),
        "machine": benchlib.machine_info(),
        "source": benchlib.git_state(),
        "parameters": {
            "fetch_sizes": [] if args.only == "fanout" else args.fetch_sizes,
            "fanout_sizes": [] if args.only == "fetch" else args.fanout_sizes,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "warmup_rule": f"at least devices / {FIRST_FETCHES_PER_S} s (one round through them)",
            "rounds": args.rounds,
            "connections": args.connections,
            "fanout_deadline_s": args.fanout_deadline,
            "service_code": str(benchlib.code_root()),
        },
    }
    with tempfile.TemporaryDirectory(prefix="provisioner-curves-") as tmp:
        if args.only != "fanout":
            raw, points = [], []
            for devices in args.fetch_sizes:
                out = Path(tmp) / f"fetch-{devices}.json"
                found = run_child(
                    [
                        *python,
                        str(benchlib.BENCH_DIR / "fetch.py"),
                        *("--devices", str(devices), "--modes", "phones"),
                        *("--duration", f"{args.duration:g}"),
                        *("--warmup", f"{warmup_for(devices, args.warmup):g}"),
                        *("--rounds", str(args.rounds), "--connections", str(args.connections)),
                        *("--no-floor", "--no-nginx-per-device", "--no-results"),
                        *("--json-out", str(out)),
                    ],
                    out,
                )
                points.append(fetch_point(devices, found))
                raw.append(found)
            results["fetch"] = {"points": points, "goals": fetch_goals(points), "runs": raw}
        if args.only != "fetch":
            raw, points = [], []
            for users in args.fanout_sizes:
                bases = max(1, users // USERS_PER_BASE)
                deadline = args.fanout_deadline or max(60.0, 0.015 * users)
                out = Path(tmp) / f"fanout-{users}.json"
                found = run_child(
                    [
                        *python,
                        str(benchlib.BENCH_DIR / "fanout.py"),
                        *("--users", str(users), "--bases", str(bases)),
                        *("--deadline", f"{deadline:g}", "--no-results", "--json-out", str(out)),
                    ],
                    out,
                )
                points.append(fanout_point(users, bases, found))
                raw.append(found)
            results["fanout"] = {"points": points, "goals": fanout_goals(points), "runs": raw}
    results["finished_at"] = benchlib.utc_now()
    table = markdown(results)
    results["markdown"] = table
    if not args.no_results:
        # One benchmark only: a file of its own, so ``latest-curves.json`` keeps both curves.
        name = f"curves-{args.only}" if args.only else "curves"
        dated, latest = benchlib.write_results(name, results)
        log(f"wrote {dated.relative_to(benchlib.REPO_DIR)} and {latest.name}")
    print(table)
    failed = [
        p
        for part in ("fetch", "fanout")
        for p in results.get(part, {}).get("points", [])
        if "error" in p
    ]
    if failed:
        raise BenchError(f"{len(failed)} size(s) did not finish: {failed}")
    return 0


if __name__ == "__main__":
    benchlib.run_main(main)
