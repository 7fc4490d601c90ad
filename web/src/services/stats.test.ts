import { describe, expect, it } from "vitest";
import { deliverySuccessRate, streamUrl, summaryChannels } from "./stats";

describe("summary channels", () => {
  it("joins only the channels the caller's scopes allow", () => {
    expect(summaryChannels(["events:read", "alerts:write"])).toEqual(["events", "alerts"]);
    expect(summaryChannels(["admin"])).toEqual(["events", "deliveries", "executions", "alerts"]);
    expect(summaryChannels(["keys:read"])).toEqual([]);
  });

  it("names them in the stream's URL", () => {
    expect(streamUrl(["events", "deliveries"])).toBe("/api/v1/stream?channels=events%2Cdeliveries");
  });
});

describe("deliverySuccessRate", () => {
  it("counts finished deliveries only", () => {
    expect(deliverySuccessRate({ succeeded: 2, failed: 1, retrying: 5, total: 8 })).toBe(66.7);
    expect(deliverySuccessRate({ pending: 3, total: 3 })).toBeNull();
  });
});
