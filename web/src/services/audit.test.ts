import { describe, expect, it } from "vitest";
import { ApiClient, type Transport } from "../api/client";
import { AUDIT_PAGE_SIZE, auditService } from "./audit";

describe("audit service", () => {
  it("sends only the filters given, and the cursor", async () => {
    const urls: string[] = [];
    const transport: Transport = {
      cookies: () => "",
      fetch: async (url) => {
        urls.push(url);
        return new Response(JSON.stringify({ items: [], next_cursor: null }), { status: 200 });
      },
    };
    const service = auditService(new ApiClient(transport));
    await service.list({}, null);
    await service.list({ action: "key.*", actor_id: "", since: "2026-01-01T00:00:00.000Z" }, "c/1");
    expect(urls).toEqual([
      `/api/v1/audit-log?limit=${AUDIT_PAGE_SIZE}`,
      `/api/v1/audit-log?limit=${AUDIT_PAGE_SIZE}&cursor=c%2F1&action=key.*&since=2026-01-01T00%3A00%3A00.000Z`,
    ]);
  });
});
