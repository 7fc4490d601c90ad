import { describe, expect, it } from "vitest";
import { match, pathId } from "./router";

describe("match", () => {
  it("knows the app's paths, with or without a trailing slash", () => {
    expect(match("/")).toBe("overview");
    expect(match("/overview/")).toBe("overview");
    expect(match("/settings/api-keys")).toBe("api-keys");
    expect(match("/sign-in")).toBe("sign-in");
    expect(match("/settings")).toBe("not-found");
    expect(match("/settings/webhooks")).toBe("webhooks");
    expect(match("/settings/webhooks/ep_1/")).toBe("webhook");
    expect(match("/settings/webhooks/ep_1/x")).toBe("not-found");
    expect(pathId("/settings/webhooks/ep%2F1")).toBe("ep/1");
    expect(match("/events")).toBe("events");
    expect(match("/audit-log/")).toBe("audit-log");
    expect(match("/events/evt_1")).toBe("not-found");
  });
});
