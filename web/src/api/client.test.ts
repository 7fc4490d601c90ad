import { describe, expect, it, vi } from "vitest";
import { ApiClient, ApiError, readCookie, type Transport } from "./client";

function transport(response: Response | Error | (() => Response), cookies = ""): Transport & { calls: [string, RequestInit][] } {
  const calls: [string, RequestInit][] = [];
  return {
    calls,
    cookies: () => cookies,
    fetch: async (input, init) => {
      calls.push([input, init]);
      if (response instanceof Error) throw response;
      return typeof response === "function" ? response() : response;
    },
  };
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", ...headers },
  });

describe("ApiClient", () => {
  it("sends the CSRF cookie's token on writes only", async () => {
    const t = transport(() => json(200, {}), "a=1; fc_csrf=tok%2Fen; b=2");
    const client = new ApiClient(t);
    await client.request("POST", "/api/v1/keys", { body: { name: "x" } });
    await client.request("GET", "/api/v1/keys");
    const [, write] = t.calls[0]!;
    const [, read] = t.calls[1]!;
    expect((write.headers as Record<string, string>)["X-CSRF-Token"]).toBe("tok/en");
    expect(write.body).toBe('{"name":"x"}');
    expect((read.headers as Record<string, string>)["X-CSRF-Token"]).toBeUndefined();
    expect(write.credentials).toBe("same-origin");
  });

  it("builds the query without empty values", async () => {
    const t = transport(json(200, { items: [] }));
    await new ApiClient(t).request("GET", "/api/v1/keys", {
      query: { limit: 20, cursor: null, q: "" },
    });
    expect(t.calls[0]![0]).toBe("/api/v1/keys?limit=20");
  });

  it("turns a problem into an ApiError with its fields", async () => {
    const problem = {
      type: "urn:forecourt:problem:invalid-input",
      title: "Invalid input",
      status: 422,
      detail: "name: too long",
      errors: [
        { field: "name", message: "String should have at most 200 characters" },
        { field: "scopes.0", message: "Unknown scope" },
        { field: "scopes.1", message: "second" },
      ],
    };
    const client = new ApiClient(transport(json(422, problem)));
    const error = await client.request("POST", "/api/v1/keys").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    const apiError = error as ApiError;
    expect(apiError.status).toBe(422);
    expect(apiError.title).toBe("Invalid input");
    expect(apiError.fieldErrors()).toEqual({
      name: "String should have at most 200 characters",
      scopes: "Unknown scope",
    });
  });

  it("names a problem's single field", async () => {
    const body = { title: "Invalid input", status: 422, detail: "Unknown scope 'x'.", field: "scopes" };
    const error = (await new ApiClient(transport(json(422, body)))
      .request("POST", "/x")
      .catch((e: unknown) => e)) as ApiError;
    expect(error.fieldErrors()).toEqual({ scopes: "Unknown scope 'x'." });
  });

  it("reads Retry-After on a 429", async () => {
    const body = { title: "Too many requests", status: 429 };
    const error = (await new ApiClient(transport(json(429, body, { "Retry-After": "7" })))
      .request("POST", "/x")
      .catch((e: unknown) => e)) as ApiError;
    expect(error.retryAfterS).toBe(7);
  });

  it("reports a 401 to its listeners unless told not to", async () => {
    const body = { title: "Unauthenticated", status: 401 };
    const client = new ApiClient(transport(json(401, body)));
    const heard = vi.fn();
    client.onUnauthenticated(heard);
    await client.request("GET", "/a").catch(() => undefined);
    expect(heard).toHaveBeenCalledTimes(1);
    const quiet = new ApiClient(transport(json(401, body)));
    const unheard = vi.fn();
    quiet.onUnauthenticated(unheard);
    await quiet.request("GET", "/a", { quietUnauthenticated: true }).catch(() => undefined);
    expect(unheard).not.toHaveBeenCalled();
  });

  it("survives a body that is not a problem", async () => {
    const response = new Response("<html>bad gateway</html>", { status: 502, statusText: "Bad Gateway" });
    const error = (await new ApiClient(transport(response))
      .request("GET", "/x")
      .catch((e: unknown) => e)) as ApiError;
    expect(error.status).toBe(502);
    expect(error.title).toBe("Bad Gateway");
  });

  it("reports a network failure as a problem", async () => {
    const error = (await new ApiClient(transport(new TypeError("Failed to fetch")))
      .request("GET", "/x")
      .catch((e: unknown) => e)) as ApiError;
    expect(error.status).toBe(0);
    expect(error.title).toBe("Network error");
  });
});

describe("readCookie", () => {
  it("finds a cookie by exact name", () => {
    expect(readCookie("fc_csrf_x=1; fc_csrf=2", "fc_csrf")).toBe("2");
    expect(readCookie("", "fc_csrf")).toBeNull();
  });
});
