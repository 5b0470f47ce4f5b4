"""The loss plot: log-axis labels read as plain numbers."""

from __future__ import annotations

from weakwater.train.tracking import loss_figure, plot_curves


def test_log_axis_labels_are_plain_numbers(tmp_path):
    """Losses span about one decade, where matplotlib's default labels read 8×10⁰; ours read 8."""
    records = [{"step": i, "loss": 9 * 0.99**i, "lr": 1e-3} for i in range(200)]
    fig = loss_figure(records, "pretrain (run)")
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
    assert {"2", "3", "4"} <= set(labels)
    assert all(label.replace(".", "").isdigit() for label in labels), labels
    assert plot_curves(records, tmp_path / "loss.png", "t") == tmp_path / "loss.png"
    assert plot_curves([], tmp_path / "none.png", "t") is None
