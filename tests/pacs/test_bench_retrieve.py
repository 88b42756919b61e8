"""``bench retrieve`` end to end on a tiny configuration against the real Orthanc it starts (3 series of 4
slices, 1 and 2 workers, 2 repeats, both protocols): every series arrives in every run, the same bytes whatever
the worker count, the reported speed-ups are t1 / tN of the reported seconds, each run starts from an empty cache
that is removed afterwards, and Orthanc is stopped at the end, also when the retrieval fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pacs_helpers import need_orthanc

from app.cli import main

SERIES, SLICES, SIZE = 3, 4, 32


def _orthanc_processes(marker: str) -> list[str]:
    """Command lines of running Orthanc processes that mention ``marker`` (Linux /proc)."""
    out = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next((ln for ln in (d / "status").read_text().splitlines() if ln.startswith("State:")), "")
        except OSError:
            continue
        if "Orthanc" in cmd and marker in cmd and "zombie" not in state:
            out.append(cmd)
    return out


def test_bench_retrieve_tiny(tmp_path, settings_dir, capsys):
    need_orthanc()
    out = tmp_path / "out"
    code = main([
        "bench", "retrieve", "--out", str(out), "--series", str(SERIES), "--slices", str(SLICES), "--size", str(SIZE),
        "--workers", "1,2", "--repeats", "2",
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    res = json.loads((out / "retrieve.json").read_text())
    md = (out / "retrieve.md").read_text()
    assert res["command"].startswith("python main.py bench retrieve ") and "--workers 1,2" in res["command"]
    assert res["series"] == SERIES and res["instances"] == SERIES * SLICES
    assert res["protocols"] == ["dicomweb", "dimse"] and res["workers"] == [1, 2] and res["repeats"] == 2

    # every configuration ran every repeat, each from an empty cache removed afterwards, every series arrived
    runs = res["runs"]
    assert sorted((r["protocol"], r["workers"], r["repeat"]) for r in runs) == sorted(
        (p, w, k) for p in ("dicomweb", "dimse") for w in (1, 2) for k in (0, 1)
    )
    pixel_bytes = SERIES * SLICES * SIZE * SIZE * 2
    for r in runs:
        assert r["series_retrieved"] == SERIES
        assert r["files"] == r["ref_files"] == SERIES * SLICES
        assert r["cache_entries_before"] == 0 and r["cache_entries_after_cleanup"] == 0
        assert r["seconds"] > 0 and r["client_cpu_s"] >= 0
        if Path("/proc/self").exists():
            assert r["server_cpu_s"] is not None and r["server_cpu_s"] >= 0
    for proto in ("dicomweb", "dimse"):
        sizes = {r["bytes"] for r in runs if r["protocol"] == proto}
        assert len(sizes) == 1, f"{proto}: different bytes across worker counts or repeats: {sizes}"
        assert sizes.pop() > pixel_bytes

    # the rows follow from the runs, and the speed-up is t1 / tN of the seconds reported
    rows = {(r["protocol"], r["workers"]): r for r in res["rows"]}
    assert set(rows) == {(p, w) for p in ("dicomweb", "dimse") for w in (1, 2)}
    for (proto, w), row in rows.items():
        mine = [r["seconds"] for r in runs if r["protocol"] == proto and r["workers"] == w]
        assert sorted(row["runs_s"]) == sorted(mine) and row["best_s"] == min(mine)
        t1 = rows[(proto, 1)]["best_s"]
        assert row["speedup_vs_1"] == round(t1 / row["best_s"], 3)
        assert row["series_per_s"] == round(SERIES / row["best_s"], 3)
        assert row["mb_per_s"] == round(row["bytes"] / 1e6 / row["best_s"], 2)
        assert row["effective_workers"] == min(w, SERIES)
        assert f"| {w} | {row['best_s']:.2f} |" in md and f"{row['speedup_vs_1']:.2f}x |" in md
    assert rows[("dicomweb", 1)]["speedup_vs_1"] == rows[("dimse", 1)]["speedup_vs_1"] == 1.0
    assert set(res["query_s"]) == {"dicomweb", "dimse"} and all(v > 0 for v in res["query_s"].values())
    assert "| protocol | --retrieve-workers | best (s) |" in md and md in captured.out
    if Path("/proc/self").exists():
        assert not _orthanc_processes("matchgen-bench-retrieve-"), "Orthanc still running after the bench"


def test_orthanc_stopped_when_the_retrieval_fails(tmp_path):
    need_orthanc()
    from app.bench.retrieve_speed import run_retrieve_bench

    calls = []

    def broken(args, log=None):
        calls.append(args)
        raise RuntimeError("retrieval broke")

    with pytest.raises(RuntimeError, match="retrieval broke"):
        run_retrieve_bench(broken, n_series=1, slices=2, size=16, workers=(1,), log=lambda m: None, work=tmp_path)
    assert len(calls) == 1
    if Path("/proc/self").exists():
        assert not _orthanc_processes(str(tmp_path)), "Orthanc still running after a failed bench"


def test_missing_orthanc_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    import app.pacs.orthanc as orthanc

    monkeypatch.setattr(orthanc, "ORTHANC_BIN", str(tmp_path / "no-such-Orthanc"))
    code = main(["bench", "retrieve", "--out", str(tmp_path / "out"), "--series", "1", "--workers", "1"])
    _out, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and "Orthanc binary" in err and "apt-get install orthanc" in err
    assert not (tmp_path / "out").exists()


def test_bad_worker_list_is_an_option_error(capsys):
    assert main(["bench", "retrieve", "--workers", "2,4"]) == 2
    assert "with 1" in capsys.readouterr().err
    assert main(["bench", "retrieve", "--protocols", "ftp"]) == 2
    assert "--protocols 'ftp'" in capsys.readouterr().err
