import { describe, expect, it } from "vitest";
import { localToIso, milliseconds, percent } from "./webhookStats";

describe("webhook statistics", () => {
  it("read as percentages and milliseconds, a dash when unknown", () => {
    expect(percent(0.5)).toBe("50.0 %");
    expect(percent(null)).toBe("—");
    expect(milliseconds(1234.4)).toBe("1,234 ms");
    expect(milliseconds(null)).toBe("—");
  });

  it("reads local date-times", () => {
    expect(localToIso("")).toBeNull();
    expect(localToIso("nonsense")).toBeNull();
    expect(localToIso("2026-01-02T03:04")).toBe(new Date("2026-01-02T03:04").toISOString());
  });
});
