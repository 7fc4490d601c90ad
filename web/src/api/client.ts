// The one HTTP client of the dashboard: every request to the API goes through `request`, and
// every error comes back as an ApiError built here from the problem document.

import type { FieldError, Problem } from "./types";

export const CSRF_COOKIE = "fc_csrf";
export const CSRF_HEADER = "X-CSRF-Token";

/** An error answered by the API (or the network failing), with its problem document. */
export class ApiError extends Error {
  readonly status: number;
  readonly problem: Problem;

  constructor(problem: Problem) {
    super(problem.detail || problem.title);
    this.name = "ApiError";
    this.status = problem.status;
    this.problem = problem;
  }

  get title(): string {
    return this.problem.title;
  }

  /** Messages by field name (the top-level field: `scopes.0` counts as `scopes`). */
  fieldErrors(): Record<string, string> {
    const out: Record<string, string> = {};
    const list: FieldError[] = [...(this.problem.errors ?? [])];
    if (typeof this.problem.field === "string") {
      list.push({ field: this.problem.field, message: this.problem.detail ?? this.title });
    }
    for (const { field, message } of list) {
      const name = field.split(".")[0] ?? field;
      if (!(name in out)) out[name] = message;
    }
    return out;
  }

  /** Seconds to wait, from a 429's Retry-After. */
  retryAfterS: number | null = null;
}

export type Method = "GET" | "POST" | "PATCH" | "PUT" | "DELETE";

export interface Transport {
  fetch(input: string, init: RequestInit): Promise<Response>;
  /** The document's cookies (the CSRF token of the session is one). */
  cookies(): string;
}

const browser: Transport = {
  fetch: (input, init) => globalThis.fetch(input, init),
  cookies: () => (typeof document === "undefined" ? "" : document.cookie),
};

type Listener = (error: ApiError) => void;

export interface RequestOptions {
  query?: Record<string, string | number | undefined | null>;
  body?: unknown;
  signal?: AbortSignal;
  /** Do not report a 401 as a session that ended (sign-in, the first "who am I"). */
  quietUnauthenticated?: boolean;
}

export function readCookie(cookies: string, name: string): string | null {
  for (const part of cookies.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return null;
}

export class ApiClient {
  private transport: Transport;
  private unauthenticated = new Set<Listener>();

  constructor(transport: Transport = browser) {
    this.transport = transport;
  }

  /** Called with every 401 (the session ended or was revoked); returns the unsubscribe. */
  onUnauthenticated(listener: Listener): () => void {
    this.unauthenticated.add(listener);
    return () => this.unauthenticated.delete(listener);
  }

  /** Whether the browser still holds a session's CSRF cookie (a session existed). */
  hasSessionCookie(): boolean {
    return readCookie(this.transport.cookies(), CSRF_COOKIE) !== null;
  }

  async request<T>(method: Method, path: string, options: RequestOptions = {}): Promise<T> {
    const headers: Record<string, string> = { Accept: "application/json" };
    let body: string | undefined;
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.body);
    }
    if (method !== "GET") {
      const csrf = readCookie(this.transport.cookies(), CSRF_COOKIE);
      if (csrf) headers[CSRF_HEADER] = csrf;
    }
    let response: Response;
    try {
      response = await this.transport.fetch(withQuery(path, options.query), {
        method,
        headers,
        body,
        credentials: "same-origin",
        signal: options.signal,
      });
    } catch (error) {
      if (error instanceof DOMException && error.name === "AbortError") throw error;
      throw new ApiError({
        title: "Network error",
        status: 0,
        detail: "Forecourt could not be reached. Check the connection and try again.",
      });
    }
    if (response.ok) {
      if (response.status === 204) return undefined as T;
      return (await response.json()) as T;
    }
    const error = new ApiError(await problemOf(response));
    const retry = Number(response.headers.get("Retry-After"));
    if (response.headers.has("Retry-After") && Number.isFinite(retry)) error.retryAfterS = retry;
    if (response.status === 401 && !options.quietUnauthenticated) {
      for (const listener of this.unauthenticated) listener(error);
    }
    throw error;
  }
}

function withQuery(path: string, query: RequestOptions["query"]): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

async function problemOf(response: Response): Promise<Problem> {
  const fallback: Problem = {
    title: response.statusText || "Request failed",
    status: response.status,
    detail: `The server answered ${response.status}.`,
  };
  try {
    const body: unknown = await response.json();
    if (body && typeof body === "object" && typeof (body as Problem).title === "string") {
      return { ...(body as Problem), status: response.status };
    }
  } catch {
    // Not JSON (a proxy's error page): the status says what there is to say.
  }
  return fallback;
}

/** The client the dashboard's services share. */
export const api = new ApiClient();
