import { describe, expect, it } from "vitest";
import { ApiClient, type Transport } from "../api/client";
import { eventTypesService } from "./eventTypes";
import { DELIVERIES_PAGE_SIZE, WEBHOOKS_PAGE_SIZE, webhooksService } from "./webhooks";

function recording() {
  const calls: { url: string; method: string; body: unknown }[] = [];
  const transport: Transport = {
    cookies: () => "fc_csrf=t",
    fetch: async (url, init) => {
      calls.push({ url, method: String(init.method), body: init.body ? JSON.parse(String(init.body)) : undefined });
      return new Response(JSON.stringify({ items: [], next_cursor: null }), { status: 200 });
    },
  };
  const client = new ApiClient(transport);
  return { calls, service: webhooksService(client), types: eventTypesService(client) };
}

describe("webhooks service", () => {
  it("pages endpoints and deliveries with a cursor and the filters", async () => {
    const { calls, service } = recording();
    await service.list("a/b");
    await service.deliveries("ep_1", { status: "failed", event_type: "", since: null }, "c");
    expect(calls.map((c) => c.url)).toEqual([
      `/api/v1/webhooks?limit=${WEBHOOKS_PAGE_SIZE}&cursor=a%2Fb`,
      `/api/v1/webhooks/ep_1/deliveries?limit=${DELIVERIES_PAGE_SIZE}&cursor=c&status=failed`,
    ]);
  });

  it("writes through the public routes", async () => {
    const { calls, service, types } = recording();
    await service.setEnabled("ep/1", false);
    await service.setEnabled("ep_1", true);
    await service.test("ep_1");
    await service.rotateSecret("ep_1");
    await service.revealSecret("ep_1");
    await service.retry("dlv_1");
    await service.recover("ep_1", "2026-01-01T00:00:00.000Z");
    await service.update("ep_1", { description: "x" });
    await service.remove("ep_1");
    await types.catalog();
    expect(calls.map((c) => `${c.method} ${c.url}`)).toEqual([
      "POST /api/v1/webhooks/ep%2F1/disable",
      "POST /api/v1/webhooks/ep_1/enable",
      "POST /api/v1/webhooks/ep_1/test",
      "POST /api/v1/webhooks/ep_1/secret/rotate",
      "GET /api/v1/webhooks/ep_1/secret",
      "POST /api/v1/deliveries/dlv_1/retry",
      "POST /api/v1/webhooks/ep_1/recover?since=2026-01-01T00%3A00%3A00.000Z",
      "PATCH /api/v1/webhooks/ep_1",
      "DELETE /api/v1/webhooks/ep_1",
      "GET /api/v1/event-types",
    ]);
  });
});
