"""The report: targets met or missed, a Markdown table, the latency-vs-load plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _get(d: Any, *path: Any) -> Any:
    for key in path:
        if not isinstance(d, dict | list):
            return None
        try:
            d = d[key]
        except (KeyError, IndexError, TypeError):
            return None
    return d


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue: the figure, the bar, met or not (None: not measured)."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: Any, bar: str, met: bool | None, note: str = "") -> None:
        out.append({"target": name, "value": value, "bar": bar, "met": met, "note": note})

    typing = results.get("fanout_typing", {})
    mem = _get(typing, "memoryd", "sustained_deliveries_per_s")
    for peer, factor in (("ws-relay", 0.7), ("socketio", 3.0)):
        other = _get(typing, peer, "sustained_deliveries_per_s")
        ratio = mem / other if mem and other else None
        bound = any(_get(typing, k, "client_bound") for k in ("memoryd", peer))
        add(
            f"ephemeral fan-out vs {peer}",
            None if ratio is None else round(ratio, 2),
            f">= {factor}x",
            None if ratio is None else ratio >= factor,
            f"{mem or 0:.0f} vs {other or 0:.0f} deliveries/s"
            + (" (load generator near 100% CPU: client-bound)" if bound else ""),
        )
    anchor_tps = _get(results, "anchor", "asyncpg", "tps")
    durable = results.get("fanout_message")
    if durable is not None:
        sends = durable["sustained_sends_per_s"]
        ratio = sends / anchor_tps if anchor_tps else None
        add(
            "durable message.send vs storage anchor",
            None if ratio is None else round(ratio, 2),
            ">= 0.8x",
            None if ratio is None else ratio >= 0.8,
            f"{sends:.0f} sends/s vs {anchor_tps or 0:.0f} tx/s",
        )
        # Every fixed step at half the anchor's rate must pass: the worst one is the figure.
        repeats = durable.get("fixed_repeats") or [durable["fixed"]]
        p99s = [r["latency_ms"]["p99"] for r in repeats]
        delivered = min(r["delivery_ratio"] for r in repeats)
        add(
            "message.send p99 send->delivered at half the anchor rate",
            round(max(p99s), 1),
            "< 50 ms in every fixed step",
            max(p99s) < 50 and delivered >= 0.99,
            f"{durable['half_anchor_rate']:.0f} sends/s, {len(p99s)} steps, p99s "
            + ", ".join(f"{p:.1f}" for p in p99s)
            + f" ms, {100 * delivered:.1f}% delivered",
        )
        cpus = sorted(
            r["server_cpu_us_per_delivery"] for r in repeats if r["server_cpu_us_per_delivery"]
        )
        cpu = cpus[len(cpus) // 2] if cpus else None
        add(
            "server CPU per durable delivery (median fixed step)",
            None if cpu is None else round(cpu, 1),
            "<= 150 us",
            None if cpu is None else cpu <= 150,
            "spread " + "-".join(f"{c:.0f}" for c in (cpus[:1] + cpus[-1:])) + " us"
            if cpus
            else "",
        )
    idle = results.get("idle")
    if idle is not None and idle["points"]:
        last = idle["points"][-1]
        add(
            f"idle RSS per device session at {last['sockets']} sockets",
            round(last["rss_per_session_kib"], 1),
            "<= 20 KiB",
            last["rss_per_session_kib"] <= 20,
        )
        add(
            "10k sessions on one node",
            last["sockets"],
            ">= 10000, none closed",
            last["sockets"] >= 10000 and idle["closed_during_run"] == 0,
        )
        if len(idle["points"]) >= 2:
            a, b = idle["points"][0], idle["points"][-1]
            ca, cb = a["cpu_us_per_delivery"], b["cpu_us_per_delivery"]
            ratio = cb / ca if ca and cb else None
            add(
                f"CPU per delivery at {b['sockets']} vs {a['sockets']} sockets",
                None if ratio is None else round(ratio, 2),
                "<= 1.5x",
                None if ratio is None else ratio <= 1.5,
                f"{cb or 0:.1f} vs {ca or 0:.1f} us",
            )
    res = results.get("resume")
    if res is not None:
        for run in res["runs"]:
            add(
                f"resume ({run['codec']})",
                round(run["events_per_s"]),
                ">= 50000 events/s",
                run["events_per_s"] >= 50_000,
                f"{run['events']} events in {run['seconds']:.2f} s",
            )
    for fl in (results.get("files"), results.get("files_s3")):
        if fl is None:
            continue
        add(
            f"files ({fl['size_mib']} MiB, {fl.get('backend', 'local')})",
            f"up {fl['upload_mib_per_s']} MiB/s, down {fl['download_mib_per_s']} MiB/s",
            "server RSS grows < 32 MiB (streamed, never held whole)",
            fl["rss_growth_mib"] < 32,
            f"RSS {fl['rss_mib']['before']} -> peak "
            f"{max(fl['rss_mib']['upload_peak'], fl['rss_mib']['download_peak'])} MiB",
        )
    seed = results.get("seed")
    if seed is not None:
        f = seed["figures"]
        add(
            f"seed profile ({seed['peak_users']} users)",
            f"p95 {f['p95_ms']:.0f} ms, p99 {f['p99_ms']:.0f} ms, "
            f"failures {100 * f['fail_ratio']:.3f}%",
            "p95 < 200 ms, p99 < 1.5 s, failures < 0.1%",
            seed["passed"],
            f"{f['requests']} requests, stage scale {seed['stage_scale']}",
        )
    search = results.get("search")
    if search is not None:
        for mode, bar in (("text", 50.0), ("hybrid", 100.0)):
            p99 = _get(search, "user_100k", mode, "latency_ms", "p99")
            add(
                f"search {mode} p99 at {_get(search, 'user_100k', 'messages')} messages",
                None if p99 is None else round(p99, 1),
                f"< {bar:g} ms",
                None if p99 is None else p99 < bar,
                f"{search['messages_total']} messages in the table",
            )
    return out


def _lat(step: dict[str, Any]) -> str:
    lat = step["latency_ms"]
    return f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f}"


def markdown(report: dict[str, Any]) -> str:
    r = report["results"]
    m = report["machine"]
    lines = [
        f"Run {report['started']}: `{report['command']}`",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu_model']}), {m['ram_gib']} GiB; load average "
        f"{' '.join(map(str, m['loadavg']))} at the start, "
        f"{' '.join(map(str, report.get('finished_loadavg', [])))} at the end. "
        f"Cores: {report['cores']}.",
        "",
    ]
    if report.get("targets"):
        lines += ["| target | figure | bar | met | notes |", "|---|---|---|---|---|"]
        for t in report["targets"]:
            met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
            lines.append(f"| {t['target']} | {t['value']} | {t['bar']} | {met} | {t['note']} |")
        lines.append("")
    typing = r.get("fanout_typing", {})
    durable = r.get("fanout_message")
    if typing or durable:
        lines += [
            "| fan-out | sockets | sustained deliveries/s | p50 / p95 / p99 ms at that rate "
            "| server CPU us/delivery | fixed-rate p50 / p95 / p99 ms | client CPU |",
            "|---|---|---|---|---|---|---|",
        ]
        noise_lines: list[str] = []
        rows = [(f"{k} typing", v) for k, v in typing.items()]
        before = r.get("fanout_message_transaction_path")
        if before:
            rows.append(("memoryd message.send, transaction path (before)", before))
        if durable:
            rows.append(("memoryd message.send", durable))
        for name, v in rows:
            best = v["sustained_step"]
            if v.get("noise", {}).get("steps", 1) > 1:
                n = v["noise"]
                noise_lines.append(
                    f"- {name}: {n['steps']} fixed steps in a row, p50 {n['p50_ms']} ms, "
                    f"p99 {n['p99_ms']} ms, deliveries/s {n['deliveries_per_s']}, server "
                    f"CPU {n['server_cpu_us_per_delivery']} us/delivery (min, max)"
                )
            lines.append(
                f"| {name} | {v['sockets']} | {v['sustained_deliveries_per_s']:.0f} | "
                + (
                    f"{_lat(best)} | {best['server_cpu_us_per_delivery'] or 0:.1f} | "
                    if best
                    else "- | - | "
                )
                + f"{_lat(v['fixed'])} ({v['fixed']['offered_sends_per_s']:.0f} sends/s) | "
                + (f"{100 * best['client_cpu_util']:.0f}% |" if best else "- |")
            )
        lines.append("")
        if noise_lines:
            lines += ["Noise of this run (the spread of repeated steps):", "", *noise_lines, ""]
    lines += _parts_table(r.get("durable_parts"))
    measured = [
        (name, v)
        for name, v in (
            ("transaction path (before)", r.get("fanout_message_transaction_path")),
            ("one statement", durable),
        )
        if v and v.get("server_histograms")
    ]
    if measured:
        lines += [
            "| server histogram (whole durable run) | count | p50 <= ms | p99 <= ms |",
            "|---|---|---|---|",
        ]
        for name, v in measured:
            for key, h in sorted(v["server_histograms"].items()):
                metric, _, value = key.partition(":")
                what = "stage" if "stage" in metric else "GC generation"
                lines.append(
                    f"| {name}: {what} {value} | {h['count']} | {h['p50_ms_le']:g} | "
                    f"{h['p99_ms_le']:g} |"
                )
        lines.append("")
    for name, v in measured:
        waits = v.get("postgres_waits")
        if waits and waits.get("samples"):
            states = ", ".join(f"{k} {c}" for k, c in waits["backend_states"].items())
            during = ", ".join(f"{k} {c}" for k, c in waits.get("during", {}).items())
            lines.append(
                f"- PostgreSQL, {name}: memoryd's backends over {waits['samples']} samples: "
                f"{states}; during the phase: {during or 'n/a'}"
            )
    if measured:
        lines.append("")
    anchor = r.get("anchor")
    if anchor:
        lines += ["| storage anchor | transactions/s | p50 / p95 / p99 ms |", "|---|---|---|"]
        for v in anchor.values():
            lines.append(
                f"| {v['kind']} ({v['concurrency']} connections) | {v['tps']:.0f} | "
                f"{v['latency_ms']['p50']:.1f} / {v['latency_ms']['p95']:.1f} / "
                f"{v['latency_ms']['p99']:.1f} |"
            )
        lines.append("")
    idle = r.get("idle")
    if idle:
        lines += [
            "| idle sockets | server RSS MiB | RSS per session KiB | CPU us/delivery "
            "(typing) | p99 ms |",
            "|---|---|---|---|---|",
        ]
        for p in idle["points"]:
            lines.append(
                f"| {p['sockets']} | {p['rss_mib']:.1f} | {p['rss_per_session_kib']:.1f} | "
                f"{p['cpu_us_per_delivery'] or 0:.1f} | "
                f"{p['typing_step']['latency_ms']['p99']:.1f} |"
            )
        lines.append("")
    res = r.get("resume")
    if res:
        lines += ["| resume | events | seconds | events/s | server CPU |", "|---|---|---|---|---|"]
        for run in res["runs"]:
            lines.append(
                f"| {run['codec']} | {run['events']} | {run['seconds']:.2f} | "
                f"{run['events_per_s']:.0f} | {100 * run['server_cpu_util']:.0f}% |"
            )
        lines.append("")
    search = r.get("search")
    if search:
        lines += [
            "| search (user's messages) | mode | p50 / p95 / p99 ms | query embedding p50 / p99 "
            "ms | queries with results |",
            "|---|---|---|---|---|",
        ]
        for label in ("10k", "100k"):
            per = search.get(f"user_{label}", {})
            for mode in ("text", "semantic", "hybrid"):
                v = per.get(mode)
                if v is None:
                    continue
                emb = v.get("query_embedding_ms")
                lines.append(
                    f"| {per['messages']} | {mode} | {_lat(v)} | "
                    + (f"{emb['p50']:.2f} / {emb['p99']:.2f}" if emb else "-")
                    + f" | {v['with_results']}/{v['queries']} |"
                )
        text = search.get("text_indexing")
        lines += [
            "",
            (
                f"Indexing: {text['messages_per_s']:.0f} messages/s stored through sends with the "
                "search triggers (full text, vocabulary) on"
                if text
                else "Indexing: not measured (a corpus loaded by an earlier run, --search-reuse)"
            )
            + "".join(
                f"; {search[k]['documents_per_s']:.0f} documents/s embedded ({search['embedder']})"
                f" and stored ({search['vector_store']}) for {search[k]['documents']} documents"
                for k in ("embedding_small", "embedding_large")
                if k in search
            )
            + f". {search['messages_total']} messages in the table, "
            f"{search.get('vectors_total', 0)} vectors in the index.",
            "",
        ]
    seed = r.get("seed")
    if seed:
        lines += [
            "| seed profile request | requests | failures | p50 / p95 / p99 ms |",
            "|---|---|---|---|",
        ]
        for name, e in sorted(seed["by_name"].items()):
            lines.append(
                f"| {name} | {e['requests']} | {e['failures']} | "
                f"{e['p50_ms']:.0f} / {e['p95_ms']:.0f} / {e['p99_ms']:.0f} |"
            )
        f = seed["figures"]
        lines.append(
            f"| **all** | {f['requests']} | {f['failures']} | "
            f"{f['p50_ms']:.0f} / {f['p95_ms']:.0f} / {f['p99_ms']:.0f} |"
        )
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """p50 and p99 send->deliver latency against offered deliveries/s, per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"memoryd": "tab:blue", "ws-relay": "tab:green", "socketio": "tab:red"}
    ax = axes[0]
    for kind, v in results.get("fanout_typing", {}).items():
        steps = [v["fixed"], *v["steps"]]
        steps.sort(key=lambda s: s["offered_sends_per_s"])
        x = [s["offered_sends_per_s"] * s["expected_deliveries"] / max(1, s["sent"]) for s in steps]
        color = colors.get(kind)
        ax.plot(x, [s["latency_ms"]["p99"] for s in steps], "o-", color=color, label=f"{kind} p99")
        ax.plot(x, [s["latency_ms"]["p50"] for s in steps], "o--", color=color, alpha=0.5,
                label=f"{kind} p50")  # fmt: skip
    ax.axhline(100, color="grey", lw=0.8, ls=":")
    ax.set(title="typing signal fan-out (3 devices per user)", xlabel="offered deliveries/s",
           ylabel="send -> deliver latency, ms", yscale="log")  # fmt: skip
    ax.legend(fontsize=8)
    ax = axes[1]
    durable = results.get("fanout_message")
    if durable:
        steps = sorted(
            [durable["fixed"], *durable["steps"]], key=lambda s: s["offered_sends_per_s"]
        )
        x = [s["offered_sends_per_s"] for s in steps]
        ax.plot(x, [s["latency_ms"]["p99"] for s in steps], "o-", color="tab:blue", label="p99")
        ax.plot(x, [s["latency_ms"]["p50"] for s in steps], "o--", color="tab:blue", alpha=0.5,
                label="p50")  # fmt: skip
        anchor_tps = _get(results, "anchor", "asyncpg", "tps")
        if anchor_tps:
            ax.axvline(anchor_tps, color="tab:orange", ls="--", label="storage anchor tx/s")
            ax.axvline(anchor_tps / 2, color="tab:orange", ls=":", label="half the anchor")
        ax.axhline(50, color="grey", lw=0.8, ls=":")
    ax.set(title="memoryd durable message.send", xlabel="offered sends/s",
           ylabel="send -> delivered on another device, ms", yscale="log")  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _parts_table(parts: list[dict[str, Any]] | None) -> list[str]:
    """The durable send's fixed steps with parts of its work switched off."""
    if not parts:
        return []
    lines = [
        "| durable send, parts switched off (fixed steps) | p50 ms | p99 ms "
        "| server CPU us/delivery | server CPU | PostgreSQL CPU |",
        "|---|---|---|---|---|---|",
    ]
    for part in parts:
        steps = part["steps"]
        n = part["noise"]

        def joined(values: list[float], fmt: str = "{:.0f}") -> str:
            return ", ".join(fmt.format(v) for v in values)

        pg = [100 * s["postgres_cpu_util"] for s in steps if "postgres_cpu_util" in s]
        lines.append(
            f"| {part['part']} | {joined([s['latency_ms']['p50'] for s in steps], '{:.1f}')} | "
            f"{joined([s['latency_ms']['p99'] for s in steps], '{:.1f}')} | "
            f"{n['server_cpu_us_per_delivery']} | "
            f"{joined([100 * s['server_cpu_util'] for s in steps])} % | "
            + (f"{joined(pg)} % |" if pg else "n/a |")
        )
    lines.append("")
    return lines
