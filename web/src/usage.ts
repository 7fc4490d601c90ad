// A key's usage as chart series: the API lists only periods with requests; a chart needs
// every period of the span, the empty ones at zero.

import type { KeyUsage, UsagePoint } from "./api/types";

export type Span = "minute" | "hour" | "day";

/** Each span's step and length, in seconds, as the API aggregates them. */
export const SPANS: Readonly<Record<Span, { stepS: number; lengthS: number; label: string }>> = {
  minute: { stepS: 60, lengthS: 3600, label: "Last hour, per minute" },
  hour: { stepS: 3600, lengthS: 86_400, label: "Last day, per hour" },
  day: { stepS: 86_400, lengthS: 30 * 86_400, label: "Last 30 days, per day" },
};

export const CLASSES = [
  ["status_2xx", "2xx"],
  ["status_3xx", "3xx"],
  ["status_4xx", "4xx"],
  ["status_5xx", "5xx"],
] as const;

export interface Series {
  /** Period starts, in seconds since the epoch. */
  x: number[];
  byClass: Record<(typeof CLASSES)[number][0], number[]>;
}

export function fill(points: readonly UsagePoint[], span: Span, nowS: number): Series {
  const { stepS, lengthS } = SPANS[span];
  const last = Math.floor(nowS / stepS) * stepS;
  const first = last - Math.ceil(lengthS / stepS) * stepS + stepS;
  const bySlot = new Map<number, UsagePoint>();
  for (const point of points) {
    const slot = Math.floor(Date.parse(point.start) / 1000 / stepS) * stepS;
    bySlot.set(slot, point);
  }
  const series: Series = {
    x: [],
    byClass: { status_2xx: [], status_3xx: [], status_4xx: [], status_5xx: [] },
  };
  for (let slot = first; slot <= last; slot += stepS) {
    const point = bySlot.get(slot);
    series.x.push(slot);
    for (const [key] of CLASSES) series.byClass[key].push(point ? point[key] : 0);
  }
  return series;
}

export function pointsOf(usage: KeyUsage, span: Span): UsagePoint[] {
  return usage[span];
}
