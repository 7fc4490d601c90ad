import { describe, expect, it } from "vitest";
import { holds } from "./grants";

describe("holds", () => {
  it("reads admin and write as the API does", () => {
    expect(holds(["admin"], "webhooks:secrets")).toBe(true);
    expect(holds(["webhooks:write"], "webhooks:read")).toBe(true);
    expect(holds(["webhooks:read"], "webhooks:write")).toBe(false);
    expect(holds(["webhooks:write"], "webhooks:secrets")).toBe(false);
  });
});
