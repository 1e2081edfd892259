"""docs/performance.md is generated from the growth measurements: a measured size shows its ratios
and peak RSS, a size not measured says so (never an empty or invented number), a later run adds
a size without losing the earlier ones, and each plot is a real PNG."""

from __future__ import annotations

import json
from pathlib import Path

from bench import growth, growth_report

SIZES = {"postgres": (0.5, 2.0, 8.0), "redis": (0.25, 1.0, 4.0), "kafka": (1.0, 4.0, 16.0)}


def result(ours_backup: float, anchor_backup: float, rss: float) -> dict:
    def op(ours: float, anchor: float) -> dict:
        return {"ours": {"wall": ours, "cpu": ours / 2, "peak_rss_mib": rss}, "anchor": {"wall": anchor, "cpu": 1.0}, "rounds": 3}

    return {
        "actual": {"keys": 1000},
        "backup": op(ours_backup, anchor_backup),
        "restore": op(3.0, 2.0),
        "load_average": {"mean": 1.5, "max": 2.0},
        "took_s": 90.0,
        "measured_at": "2026-01-02T03:04:05+00:00",
        "machine": {"arch": "x86_64", "cores": 2, "ram_gib": 8.0, "cpu": "Test CPU"},
    }


def test_measured_and_missing_sizes_and_plots(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(growth, "OUT", tmp_path / "performance")
    growth.save("redis", 0.25, result(1.2, 1.0, 105))
    growth.save("redis", 1.0, result(6.0, 4.0, 107))  # a second run merges, keeping 0.25
    doc = tmp_path / "performance.md"
    growth_report.write(tmp_path / "performance", doc, SIZES)
    text = doc.read_text()

    assert json.loads((tmp_path / "performance" / "redis.json").read_text())["sizes"].keys() == {"0.25", "1"}
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "**1.20x**" in rows["0.25 GiB"] and "105 / 105" in rows["0.25 GiB"]
    assert "**1.50x**" in rows["1 GiB"] and "107 / 107" in rows["1 GiB"] and "1.5 min (3 rounds)" in rows["1 GiB"]
    assert "not measured yet (`--large`)" in rows["4 GiB"]
    assert "Our backup peak RSS: 105 MiB at 0.25 GiB, 107 MiB at 1 GiB (+2 % for 4x the data): flat." in text
    for missing in ("0.5 GB", "2 GB", "1 M messages", "4 M messages"):
        assert "not measured yet" in rows[missing]
    assert "`x86_64`, 2 cores, 8.0 GiB RAM" in text and "2026-01-02 03:04 UTC" in text
    for op in ("backup", "restore"):
        png = tmp_path / "performance" / f"redis-{op}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](performance/redis-{op}.png)" in text
    assert not (tmp_path / "performance" / "postgres-backup.png").exists()
