"""Loss-curve plots: written as real PNGs from metric rows, skipped when there is no loss."""

from __future__ import annotations

from cairn.stage.plots import plot_losses


def test_plots_every_loss_series_as_png(tmp_path):
    rows = [{"step": i, "train/loss": 5.0 / (i + 1), "train/lr": 0.1} for i in range(20)]
    rows += [{"step": 10, "val/loss": 1.0}, {"step": 19, "val/loss": 0.5}]
    out = plot_losses(rows, tmp_path / "loss.png", "test")
    assert out == tmp_path / "loss.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_no_loss_series_means_no_plot(tmp_path):
    assert plot_losses([{"step": 1, "train/lr": 0.1}], tmp_path / "x.png", "t") is None
    assert not (tmp_path / "x.png").exists()
