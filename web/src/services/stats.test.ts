import { describe, expect, it } from "vitest";
import { streamUrl, summaryChannels } from "./stats";

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
