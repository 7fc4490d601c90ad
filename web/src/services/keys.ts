// API keys: /api/v1/keys.

import { api, type ApiClient } from "../api/client";
import type { ApiKey, ApiKeyCreated, KeyCreate, KeyUsage, Page, Tiers } from "../api/types";

export const KEYS_PAGE_SIZE = 20;

export function keysService(client: ApiClient = api) {
  const path = (id: string, action = "") =>
    `/api/v1/keys/${encodeURIComponent(id)}${action ? `/${action}` : ""}`;
  return {
    list(cursor: string | null, signal?: AbortSignal): Promise<Page<ApiKey>> {
      return client.request<Page<ApiKey>>("GET", "/api/v1/keys", {
        query: { limit: KEYS_PAGE_SIZE, cursor },
        signal,
      });
    },
    tiers(signal?: AbortSignal): Promise<Tiers> {
      return client.request<Tiers>("GET", "/api/v1/keys/tiers", { signal });
    },
    create(body: KeyCreate): Promise<ApiKeyCreated> {
      return client.request<ApiKeyCreated>("POST", "/api/v1/keys", { body });
    },
    rotate(id: string): Promise<ApiKeyCreated> {
      return client.request<ApiKeyCreated>("POST", path(id, "rotate"), { body: {} });
    },
    revoke(id: string): Promise<ApiKey> {
      return client.request<ApiKey>("POST", path(id, "revoke"));
    },
    usage(id: string, signal?: AbortSignal): Promise<KeyUsage> {
      return client.request<KeyUsage>("GET", path(id, "usage"), { signal });
    },
  };
}

export const keys = keysService();
