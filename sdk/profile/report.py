"""``kdaliens-profile``'s table: a profile as readable text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MB = float(1 << 20)


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KB" if n < 1 << 20 else f"{n / _MB:.2f} MB"


def _mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1f} MB"


def format_profile(p: Mapping[str, Any], top: int = 12) -> str:
    """The profile as a readable table."""
    out = []
    th = "thread" if p["threads"] == 1 else "threads"
    rt = p["runtime"].get("version")
    out.append(f"kdaliens-profile  {p['bundle']}")
    out.append(f"  backend   {p['backend']}{f' {rt}' if rt else ''}, {p['target']} {p['quantization']}, "
               f"{p['threads']} {th}, {p['device']['machine']} ({p['device']['cpu_count']} CPUs)")
    extra = [f"{k} {_kb(v)}" for k, v in p["files"].items() if k != p["model_file"]]
    out.append(f"  size      {p['model_file']} {_kb(p['model_bytes'])}; bundle {_kb(p['bundle_bytes'])}"
               + (f" ({', '.join(extra)})" if extra else ""))
    out.append(f"  load      {p['load_ms']:.1f} ms {'cold' if p['cold'] else 'runtime already imported'} "
               f"(verify {p['verify_ms']:.1f} ms + backend {p['backend_load_ms']:.1f} ms); "
               f"warm reload {p['warm_load_ms']:.1f} ms")
    run_part = f", running {_mb(p['rss_run_mb'])}" if p.get("rss_run_mb") is not None else ""
    out.append(f"  memory    peak RSS {_mb(p['rss_added_mb'])} (loading {_mb(p['rss_load_mb'])}{run_part})")
    out.append(f"            [{p['rss_method']}]")
    out.append(f"  requests  {p['history_len']} history events -> {p['history_slots']} slots, "
               f"{'with' if p['attributes'] else 'without'} item attributes, {p['store']} stores; "
               f"{p['runs']} runs after {p['warmup']} warm-up per row")
    out.append("")
    out.append("  latency in us      ---------- SDK rerank ----------   ---------- bare model ----------   encode")
    out.append(f"  {'candidates':>10} {'chunks':>6}   {'p50':>9} {'p90':>9} {'p99':>9}   "
               f"{'p50':>9} {'p90':>9} {'p99':>9}   {'share':>6}")
    for r in p["rows"]:
        out.append(f"  {r['candidates']:>10} {r['chunks']:>6}   {r['sdk_p50_us']:>9.1f} {r['sdk_p90_us']:>9.1f} "
                   f"{r['sdk_p99_us']:>9.1f}   {r['model_p50_us']:>9.1f} {r['model_p90_us']:>9.1f} "
                   f"{r['model_p99_us']:>9.1f}   {100 * r['encode_share']:>5.1f}%")
    ops = p.get("operators")
    if ops:
        out.append("")
        out.append(f"  per operator (ETDump, {ops['candidates']} candidates, {ops['runs']} runs): Method::execute "
                   f"p50 {ops['execute_p50_us']} us, mean {ops['execute_mean_us']} us")
        out.append(f"  {'operator':<34} {'kind':<9} {'calls':>5} {'us/call':>9} {'share':>7}")
        for r in ops["top"][:top]:
            label = r["name"] if r["kind"] == "portable" else f"{r['name']}"
            out.append(f"  {label[:34]:<34} {r['kind']:<9} {r['calls']:>5} {r['total_us']:>9.2f} "
                       f"{100 * (r['share'] or 0):>6.1f}%")
            if r["kind"] == "delegate" and r["ops"]:
                out.append(f"      lowered: {', '.join(r['ops'][:8])}{' ...' if len(r['ops']) > 8 else ''}")
        if len(ops["top"]) > top:
            rest = sum(r["total_us"] for r in ops["top"][top:])
            more = f"({len(ops['top']) - top} more)"
            out.append(f"  {more:<34} {'':<9} {'':>5} {rest:>9.2f}")
        out.append(f"  {'(between operators)':<34} {'runtime':<9} {'':>5} {ops['other_us']:>9.2f}")
        if ops["inside_delegates"]:
            out.append("  inside the delegates:")
            for r in ops["inside_delegates"][:8]:
                out.append(f"    {r['name'][:40]:<40} {r['backend'][:14]:<14} {r['calls']:>5} {r['total_us']:>9.2f} "
                           f"{100 * (r['share'] or 0):>6.1f}%")
    if p.get("operators_note"):
        out.append("")
        out.append(f"  note: {p['operators_note']}")
    for n in p.get("notes", []):
        out.append(f"  note: {n}")
    return "\n".join(out)
