import { describe, expect, it } from "vitest";
import { ApiClient, type Transport } from "../api/client";
import { KEYS_PAGE_SIZE, keysService } from "./keys";

function recording() {
  const calls: { url: string; method: string; body: unknown }[] = [];
  const transport: Transport = {
    cookies: () => "fc_csrf=t",
    fetch: async (url, init) => {
      calls.push({ url, method: String(init.method), body: init.body ? JSON.parse(String(init.body)) : undefined });
      return new Response(JSON.stringify({ items: [], next_cursor: null }), { status: 200 });
    },
  };
  return { calls, service: keysService(new ApiClient(transport)) };
}

describe("keys service", () => {
  it("pages with a cursor", async () => {
    const { calls, service } = recording();
    await service.list(null);
    await service.list("abc/=");
    expect(calls.map((c) => c.url)).toEqual([
      `/api/v1/keys?limit=${KEYS_PAGE_SIZE}`,
      `/api/v1/keys?limit=${KEYS_PAGE_SIZE}&cursor=abc%2F%3D`,
    ]);
  });

  it("creates, rotates and revokes through the public routes", async () => {
    const { calls, service } = recording();
    await service.create({ name: "ci", scopes: ["events:read"], expires_at: null });
    await service.rotate("key/1");
    await service.revoke("key_2");
    await service.usage("key_2");
    await service.tiers();
    expect(calls).toEqual([
      { url: "/api/v1/keys", method: "POST", body: { name: "ci", scopes: ["events:read"], expires_at: null } },
      { url: "/api/v1/keys/key%2F1/rotate", method: "POST", body: {} },
      { url: "/api/v1/keys/key_2/revoke", method: "POST", body: undefined },
      { url: "/api/v1/keys/key_2/usage", method: "GET", body: undefined },
      { url: "/api/v1/keys/tiers", method: "GET", body: undefined },
    ]);
  });
});
