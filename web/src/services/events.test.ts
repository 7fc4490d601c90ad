import { describe, expect, it } from "vitest";
import { ApiClient, type Transport } from "../api/client";
import { EVENTS_PAGE_SIZE, eventsChannel, eventsService, parseData } from "./events";

describe("events service", () => {
  it("lists by type pattern with a cursor, reads one and publishes", async () => {
    const calls: { url: string; method: string; body: unknown }[] = [];
    const transport: Transport = {
      cookies: () => "fc_csrf=t",
      fetch: async (url, init) => {
        calls.push({ url, method: String(init.method), body: init.body ? JSON.parse(String(init.body)) : undefined });
        return new Response(JSON.stringify({ items: [], next_cursor: null }), { status: 200 });
      },
    };
    const service = eventsService(new ApiClient(transport));
    await service.list("", null);
    await service.list("*", null);
    await service.list(" order.* ", "c/1");
    await service.get("evt/1");
    await service.publish({ type: "order.created", data: { n: 1 } });
    expect(calls).toEqual([
      { url: `/api/v1/events?limit=${EVENTS_PAGE_SIZE}`, method: "GET", body: undefined },
      { url: `/api/v1/events?limit=${EVENTS_PAGE_SIZE}`, method: "GET", body: undefined },
      { url: `/api/v1/events?limit=${EVENTS_PAGE_SIZE}&cursor=c%2F1&type=order.*`, method: "GET", body: undefined },
      { url: "/api/v1/events/evt%2F1", method: "GET", body: undefined },
      { url: "/api/v1/events", method: "POST", body: { type: "order.created", data: { n: 1 } } },
    ]);
  });

  it("names the channel of a pattern", () => {
    expect(eventsChannel("")).toBe("events:*");
    expect(eventsChannel("order.*")).toBe("events:order.*");
  });

  it("parses data, or says why it is not JSON", () => {
    expect(parseData("")).toEqual({ ok: true, value: null });
    expect(parseData('{"n": 1}')).toEqual({ ok: true, value: { n: 1 } });
    const bad = parseData("{n: 1}");
    expect(bad.ok).toBe(false);
  });
});
