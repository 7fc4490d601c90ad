import { describe, expect, it } from "vitest";
import { ApiClient, type Transport } from "../api/client";
import { authService, signedInAs, type Signed } from "./auth";

const KEY = { id: "key_1", name: "owner", prefix: "fck_live_abcd", scopes: ["admin"] };
const ME = { actor_type: "key", actor_id: "key_1", tenant_id: "ten_1", scopes: ["admin"], via_cookie: true, key: KEY };

function recording(answers: Record<string, { status: number; body: unknown }>) {
  const calls: { url: string; method: string; body: unknown }[] = [];
  const transport: Transport = {
    cookies: () => "fc_csrf=t",
    fetch: async (url, init) => {
      calls.push({ url, method: String(init.method), body: init.body ? JSON.parse(String(init.body)) : undefined });
      const answer = answers[`${String(init.method)} ${url}`] ?? { status: 404, body: { title: "Not found", status: 404 } };
      return new Response(JSON.stringify(answer.body), {
        status: answer.status,
        headers: { "content-type": answer.status >= 400 ? "application/problem+json" : "application/json" },
      });
    },
  };
  return { calls, service: authService(new ApiClient(transport)) };
}

describe("auth service", () => {
  it("signs in with a key: the key is sent once, and the session names the key", async () => {
    const { calls, service } = recording({
      "POST /api/v1/auth/key": { status: 200, body: { key: KEY, csrf_token: "c", expires_at: "2026-12-03T00:00:00Z" } },
      "GET /api/v1/auth/me": { status: 200, body: ME },
    });
    const signed = await service.signInWithKey("fck_live_secret");
    expect(calls).toEqual([
      { url: "/api/v1/auth/key", method: "POST", body: { key: "fck_live_secret" } },
      { url: "/api/v1/auth/me", method: "GET", body: undefined },
    ]);
    expect(signed.user).toBeNull();
    expect(signed.key).toEqual(KEY);
    expect(signedInAs(signed)).toBe("owner (API key)");
  });

  it("refuses a bad key with the API's 401", async () => {
    const { service } = recording({
      "POST /api/v1/auth/key": {
        status: 401,
        body: { title: "Unauthenticated", status: 401, detail: "This key cannot sign in." },
      },
    });
    await expect(service.signInWithKey("fck_nope")).rejects.toMatchObject({ status: 401 });
  });

  it("restores a key's session with its name, and names users by email", async () => {
    const { service } = recording({ "GET /api/v1/auth/me": { status: 200, body: ME } });
    const signed = (await service.current()) as Signed;
    expect(signed.key?.name).toBe("owner");
    expect(signedInAs(signed)).toBe("owner (API key)");
    const user = { id: "usr_1", email: "dana@example.com", name: "", role: "owner", created_at: "", last_login_at: null, disabled_at: null };
    expect(signedInAs({ me: { ...ME, actor_type: "user", key: undefined }, user, key: null })).toBe("dana@example.com");
  });
});
