import { describe, expect, it } from "vitest";
import { groupScopes } from "./scopes";

describe("groupScopes", () => {
  it("groups by resource, admin first", () => {
    expect(groupScopes(["webhooks:write", "admin", "events:read", "webhooks:read", "events:read"])).toEqual([
      { resource: "admin", scopes: ["admin"] },
      { resource: "events", scopes: ["events:read"] },
      { resource: "webhooks", scopes: ["webhooks:read", "webhooks:write"] },
    ]);
  });
});
