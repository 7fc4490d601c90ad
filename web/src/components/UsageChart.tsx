// A chart of a key's requests by status class, drawn by uPlot (loaded with this module, which
// the usage dialog imports only when opened). The chart is an image to assistive technology,
// labelled with its totals; the dialog lists the same figures as a table.

import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { CLASSES, type Series } from "../usage";

// Colours with at least 3:1 contrast against white, told apart by their dash too.
const STYLES: Record<string, { stroke: string; dash?: number[] }> = {
  "2xx": { stroke: "#1b6b36" },
  "3xx": { stroke: "#1f4fbf", dash: [2, 3] },
  "4xx": { stroke: "#8a5a00", dash: [6, 3] },
  "5xx": { stroke: "#a4161a", dash: [10, 3, 2, 3] },
};
const HEIGHT_PX = 220;

export default function UsageChart({ series, label }: { series: Series; label: string }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const element = box.current;
    if (!element) return;
    const data: uPlot.AlignedData = [series.x, ...CLASSES.map(([key]) => series.byClass[key])];
    const chart = new uPlot(
      {
        width: Math.max(element.clientWidth, 200),
        height: HEIGHT_PX,
        legend: { show: false },
        cursor: { show: false },
        scales: { y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
        series: [
          {},
          ...CLASSES.map(([, name]) => ({
            label: name,
            stroke: STYLES[name]?.stroke,
            dash: STYLES[name]?.dash,
            width: 2,
            points: { show: false },
          })),
        ],
      },
      data,
      element,
    );
    // One redraw per frame at most, however often the box is resized.
    let frame = 0;
    const observer = new ResizeObserver(() => {
      cancelAnimationFrame(frame);
      frame = requestAnimationFrame(() =>
        chart.setSize({ width: Math.max(element.clientWidth, 200), height: HEIGHT_PX }),
      );
    });
    observer.observe(element);
    return () => {
      cancelAnimationFrame(frame);
      observer.disconnect();
      chart.destroy();
    };
  }, [series]);
  return (
    <figure class="chart">
      <div ref={box} role="img" aria-label={label} class="chart-box" />
      <figcaption>
        <ul class="legend">
          {CLASSES.map(([, name]) => (
            <li key={name} class={`legend-${name}`}>
              {name}
            </li>
          ))}
        </ul>
      </figcaption>
    </figure>
  );
}
