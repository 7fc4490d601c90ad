// An endpoint's attempts by hour, succeeded and failed, drawn by uPlot (loaded with this
// module only when an endpoint's page shows its statistics). To assistive technology the chart
// is an image labelled with its totals; the page lists the same figures as a table.

import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { HourAttempts } from "../api/types";

const HEIGHT_PX = 200;

export default function AttemptsChart({ hours }: { hours: HourAttempts[] }) {
  const box = useRef<HTMLDivElement>(null);
  const succeeded = hours.reduce((sum, h) => sum + h.succeeded, 0);
  const failed = hours.reduce((sum, h) => sum + h.failed, 0);
  useEffect(() => {
    const element = box.current;
    if (!element) return;
    const data: uPlot.AlignedData = [
      hours.map((h) => Date.parse(h.start) / 1000),
      hours.map((h) => h.succeeded),
      hours.map((h) => h.failed),
    ];
    const chart = new uPlot(
      {
        width: Math.max(element.clientWidth, 200),
        height: HEIGHT_PX,
        legend: { show: false },
        cursor: { show: false },
        scales: { y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
        series: [
          {},
          { label: "Succeeded", stroke: "#1b6b36", width: 2, points: { show: false } },
          { label: "Failed", stroke: "#a4161a", dash: [6, 3], width: 2, points: { show: false } },
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
  }, [hours]);
  return (
    <figure class="chart">
      <div
        ref={box}
        role="img"
        aria-label={`Attempts by hour over the last 24 hours: ${succeeded} succeeded, ${failed} failed`}
        class="chart-box"
      />
      <figcaption>
        <ul class="legend">
          <li class="legend-2xx">Succeeded</li>
          <li class="legend-5xx">Failed</li>
        </ul>
      </figcaption>
    </figure>
  );
}
