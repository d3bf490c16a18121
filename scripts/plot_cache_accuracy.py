#!/usr/bin/env python3
"""Plot the CSV written by `flashstate cache-study --csv FILE` as docs/img/cache-accuracy.png.

usage: python3 scripts/plot_cache_accuracy.py FILE.csv [OUT.png]

Two panels over the hot F16 window: the max relative error (SPEC section 4's measure, worst query position) and
the mean relative L2 error of the output rows; one line per cold type, solid with K outlier channels, dashed
without. Needs matplotlib (Debian: python3-matplotlib); not run by CI.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    rows = read_rows(argv[1])
    out = argv[2] if len(argv) == 3 else "docs/img/cache-accuracy.png"

    windows = sorted({int(r["hot_window"]) for r in rows})
    x_of = {w: i for i, w in enumerate(windows)}  # evenly spaced: 0 has no place on a log axis
    colors = {"q8_0": "tab:blue", "q4_0": "tab:red"}
    panels = [("max_rel_error", "max relative error\nmax|out - ref| / max|ref|"),
              ("mean_rel_l2", "mean relative L2 error\n||out - ref|| / ||ref|| per row")]

    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, (column, title) in zip(axes, panels):
        for cold in ("q8_0", "q4_0"):
            for outliers in sorted({int(r["k_outliers"]) for r in rows}, reverse=True):
                pts = sorted((int(r["hot_window"]), float(r[column])) for r in rows
                             if r["cold_type"] == cold and int(r["k_outliers"]) == outliers)
                if not pts:
                    continue
                label = f"cold {cold.upper()}, " + (f"K with {outliers} outlier channels" if outliers
                                                    else "K without outliers")
                ax.plot([x_of[w] for w, _ in pts], [e for _, e in pts], marker="o", color=colors[cold],
                        linestyle="-" if outliers else "--", label=label)
        ax.set_yscale("log")
        ax.set_xticks(range(len(windows)), [str(w) for w in windows])
        ax.set_xlabel("hot F16 window (newest tokens kept at F16)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=9, loc="lower center", ncol=2)
    fig.suptitle(f"Attention over the mixed cache vs an all-F16 cache ({rows[0]['tokens']} tokens, "
                 f"{rows[0]['queries']} query positions, 32/8 heads, D 128)", fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 1))  # room for the legend below the panels
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv)
