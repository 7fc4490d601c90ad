import { describe, expect, it } from "vitest";
import { backoff, ERROR_BACKOFF_MS } from "./live";

describe("backoff", () => {
  it("grows with failures and stops growing", () => {
    expect(backoff(1)).toBe(ERROR_BACKOFF_MS[0]);
    expect(backoff(2)).toBe(ERROR_BACKOFF_MS[1]);
    expect(backoff(100)).toBe(ERROR_BACKOFF_MS[ERROR_BACKOFF_MS.length - 1]);
  });
});
