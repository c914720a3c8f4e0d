"""Line charts over time, drawn by plotext (textual-plotext): axes with a scale, clock
times (UTC) under the x axis, one colour and a legend entry per series."""

from __future__ import annotations

from datetime import UTC, datetime

from textual_plotext import PlotextPlot

RANGES = ((300.0, "5 min"), (900.0, "15 min"), (3600.0, "1 h"), (6 * 3600.0, "6 h"))
DEFAULT_RANGE = 1  # 15 minutes, as the Monitoring asks
COLOURS = ("cyan", "magenta", "orange", "green", "red", "blue")


def clock_label(epoch: float, span: float) -> str:
    stamp = datetime.fromtimestamp(epoch, UTC)
    return stamp.strftime("%H:%M:%S" if span < 600 else "%H:%M")


class TimeChart(PlotextPlot):
    """``draw(title, start, end, series)``: each series a list of (epoch seconds, value)."""

    DEFAULT_CSS = """
    TimeChart { height: 1fr; min-height: 8; }
    """

    def draw(
        self,
        title: str,
        start: float,
        end: float,
        series: dict[str, list[tuple[float, float]]],
        unit: str = "",
    ) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(title)
        span = max(end - start, 1.0)
        drawn = False
        legend = len(series) > 1  # one series: the title names it
        for (name, points), colour in zip(series.items(), COLOURS, strict=False):
            if not points:
                continue
            xs = [t - start for t, _ in points]
            ys = [v for _, v in points]
            plt.plot(xs, ys, label=name if legend else None, color=colour, marker="braille")
            drawn = True
        if not drawn:  # axes and times all the same: the range, with nothing in it
            plt.plot([0.0, span], [0.0, 0.0], color="gray", marker="braille")
        ticks = [span * i / 4 for i in range(5)]
        plt.xticks(ticks, [clock_label(start + t, span) for t in ticks])
        plt.xlim(0, span)
        plt.ylim(0, None)
        plt.xlabel("UTC")
        if unit:
            plt.ylabel(unit)
        self.refresh()
