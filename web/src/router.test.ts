import { describe, expect, it } from "vitest";
import { match } from "./router";

describe("match", () => {
  it("knows the app's paths, with or without a trailing slash", () => {
    expect(match("/")).toBe("overview");
    expect(match("/overview/")).toBe("overview");
    expect(match("/settings/api-keys")).toBe("api-keys");
    expect(match("/sign-in")).toBe("sign-in");
    expect(match("/settings")).toBe("not-found");
  });
});
