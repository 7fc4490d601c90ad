import { describe, expect, it } from "vitest";
import type { UsagePoint } from "./api/types";
import { fill } from "./usage";

const point = (start: string, ok: number, client = 0): UsagePoint => ({
  start,
  requests: ok + client,
  status_2xx: ok,
  status_3xx: 0,
  status_4xx: client,
  status_5xx: 0,
  rate_limited: 0,
});

describe("fill", () => {
  it("gives every minute of the last hour, empty ones at zero", () => {
    const now = Date.parse("2026-01-01T12:30:30Z") / 1000;
    const series = fill([point("2026-01-01T12:30:00Z", 3, 1), point("2026-01-01T11:40:00Z", 2)], "minute", now);
    expect(series.x).toHaveLength(60);
    expect(series.x.at(-1)).toBe(Date.parse("2026-01-01T12:30:00Z") / 1000);
    expect(series.x[0]).toBe(Date.parse("2026-01-01T11:31:00Z") / 1000);
    expect(series.byClass.status_2xx.at(-1)).toBe(3);
    expect(series.byClass.status_4xx.at(-1)).toBe(1);
    expect(series.byClass.status_2xx[9]).toBe(2);
    expect(series.byClass.status_2xx.reduce((a, b) => a + b, 0)).toBe(5);
  });

  it("drops what is outside the span", () => {
    const now = Date.parse("2026-01-01T12:00:00Z") / 1000;
    const series = fill([point("2025-12-01T00:00:00Z", 9)], "day", now);
    expect(series.x).toHaveLength(30);
    expect(series.byClass.status_2xx.every((v) => v === 0)).toBe(true);
  });
});
