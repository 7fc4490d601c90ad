import { describe, expect, it } from "vitest";
import { ApiClient, type Transport } from "../api/client";
import { alertsService, RECENT_ALERTS } from "./alerts";

describe("alerts service", () => {
  it("reads the newest and changes one through the public routes", async () => {
    const calls: string[] = [];
    const transport: Transport = {
      cookies: () => "fc_csrf=t",
      fetch: async (url, init) => {
        calls.push(`${init.method} ${url} ${(init.headers as Record<string, string>)["X-CSRF-Token"] ?? "-"}`);
        return new Response("{}", { status: 200 });
      },
    };
    const service = alertsService(new ApiClient(transport));
    await service.recent();
    await service.acknowledge("alr_1");
    await service.resolve("alr/2");
    expect(calls).toEqual([
      `GET /api/v1/alerts?limit=${RECENT_ALERTS} -`,
      "POST /api/v1/alerts/alr_1/acknowledge t",
      "POST /api/v1/alerts/alr%2F2/resolve t",
    ]);
  });
});
